/*
 * timer.c -- the scheduler's 100 Hz tick from Xen's one-shot timer.
 *
 * There is no PIT to program.  The hypervisor offers a virtual interrupt,
 * VIRQ_TIMER, which we bind to an event channel, and a one-shot deadline in
 * system time (ns), set_timer_op.  Each tick sets the next deadline on a
 * fixed 10 ms grid, so the ticks do not drift.  If we come back late, after
 * more than one period (events masked for long), the missed ticks collapse
 * into the one we are handling -- as with the PIT, whose missed interrupts
 * the PIC keeps as a single pending one.
 */
#include "defs.h"
#include "priv.h"

#define TICK_NS 10000000ULL         /* 10 ms: 100 Hz, like the native PIT */

uint timer_port;
static uint64 deadline;

/* System time as of the hypervisor's last return to us.  The version
 * counter is odd while the hypervisor writes the record: read until a
 * stable, even one.  (Xen guests also extrapolate with the TSC; we take the
 * hypervisor's value as it is.) */
static uint64 system_time(void)
{
    volatile struct vcpu_time_info *t = &vcpu->time;
    uint v;
    uint64 now;
    do {
        v = t->version;
        barrier();
        now = t->system_time;
        barrier();
    } while ((v & 1) || v != t->version);
    return now;
}

static void set_deadline(uint64 when)
{
    int r = HYPERVISOR_set_timer_op(when);
    if (r < 0)
        panic("set_timer_op: error %d", r);
}

void timer_init(void)
{
    struct evtchn_bind_virq bind = { VIRQ_TIMER, 0, 0 };
    int r = HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &bind);
    if (r < 0)
        panic("bind VIRQ_TIMER: error %d", r);
    timer_port = bind.port;
    deadline = system_time() + TICK_NS;
    set_deadline(deadline);
    evtchn_unmask(timer_port);
}

/* From the upcall: one tick. */
void timer_tick(void)
{
    ticks++;
    uint64 now = system_time();
    deadline += TICK_NS;
    while (deadline <= now)
        deadline += TICK_NS;
    set_deadline(deadline);
}
