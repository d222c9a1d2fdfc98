/*
 * pic.c -- the two 8259A programmable interrupt controllers.
 *
 * At power-on the master PIC delivers IRQ 0-7 on vectors 8-15, which
 * collide with CPU exceptions (8 = double fault, 13 = #GP, 14 = #PF).  So
 * every protected-mode kernel re-programs ("remaps") the PICs with the four
 * initialization command words: master IRQs to vectors 0x20-0x27, slave
 * IRQs to 0x28-0x2F.  The slave is wired to the master's IRQ 2.
 *
 * After handling an interrupt the kernel must send an End Of Interrupt
 * command, or the PIC will not deliver that IRQ (or lower-priority ones)
 * again.
 */
#include "defs.h"
#include "priv.h"

#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xA0
#define PIC2_DATA 0xA1
#define PIC_EOI   0x20

static ushort irqmask = 0xFFFF & ~(1 << 2);   /* all masked but the cascade */

static void pic_setmask(void)
{
    outb(PIC1_DATA, irqmask & 0xFF);
    outb(PIC2_DATA, (irqmask >> 8) & 0xFF);
}

void pic_init(void)
{
    outb(PIC1_DATA, 0xFF);          /* mask everything while we program */
    outb(PIC2_DATA, 0xFF);

    outb(PIC1_CMD, 0x11);           /* ICW1: edge triggered, cascade, ICW4 follows */
    outb(PIC1_DATA, T_IRQ0);        /* ICW2: vector base 0x20 */
    outb(PIC1_DATA, 1 << 2);        /* ICW3: a slave on IRQ 2 */
    outb(PIC1_DATA, 0x01);          /* ICW4: 8086 mode, normal EOI */

    outb(PIC2_CMD, 0x11);
    outb(PIC2_DATA, T_IRQ0 + 8);    /* vector base 0x28 */
    outb(PIC2_DATA, 2);             /* ICW3: my cascade identity is 2 */
    outb(PIC2_DATA, 0x01);

    pic_setmask();
}

void pic_enable(int irq)
{
    irqmask &= ~(1 << irq);
    pic_setmask();
}

void pic_eoi(int irq)
{
    if (irq >= 8)
        outb(PIC2_CMD, PIC_EOI);
    outb(PIC1_CMD, PIC_EOI);
}
