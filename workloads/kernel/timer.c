/*
 * timer.c -- the 8254 programmable interval timer, channel 0.
 *
 * The PIT counts down an input clock of 1 193 182 Hz.  In mode 2 (rate
 * generator) it raises IRQ 0 each time the counter wraps, so a divisor of
 * 1193182 / 100 gives 100 interrupts per second: the scheduler's tick.
 */
#include "defs.h"
#include "priv.h"

#define PIT_CH0   0x40
#define PIT_CMD   0x43
#define PIT_HZ    1193182
#define TICK_HZ   100

void timer_init(void)
{
    uint divisor = (PIT_HZ + TICK_HZ / 2) / TICK_HZ;   /* 11932 */
    /* channel 0, access lobyte then hibyte, mode 2, binary */
    outb(PIT_CMD, 0x34);
    outb(PIT_CH0, divisor & 0xFF);
    outb(PIT_CH0, (divisor >> 8) & 0xFF);
    pic_enable(IRQ_TIMER);
}
