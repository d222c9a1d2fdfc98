/*
 * evtchn.c -- event channels: the paravirtual kernel's interrupts.
 *
 * A port is one end of a channel.  When the hypervisor signals a port it
 * sets the port's bit in shared_info.evtchn_pending; if the port is not
 * masked (evtchn_mask), it also sets the bit of that 32-port word in
 * vcpu_info.evtchn_pending_sel and the flag evtchn_upcall_pending, and --
 * once events are unmasked -- calls us back (callback.S, then trap() with
 * the pseudo vector T_EVTCHN, then evtchn_do_upcall).  Two levels of bits,
 * so that finding the pending ports among 1024 takes two scans of 32.
 *
 * The hypervisor may set bits at any moment (on real Xen, from another
 * CPU), so we clear ours with atomic operations and take the selector
 * word with xchg.
 */
#include "defs.h"
#include "proc.h"
#include "priv.h"

static void set_bit(volatile uint *words, uint n)
{
    __atomic_or_fetch(&words[n / 32], 1u << (n % 32), __ATOMIC_SEQ_CST);
}

static void clear_bit(volatile uint *words, uint n)
{
    __atomic_and_fetch(&words[n / 32], ~(1u << (n % 32)), __ATOMIC_SEQ_CST);
}

void evtchn_mask(uint port)
{
    set_bit(shinfo->evtchn_mask, port);
}

void evtchn_clear(uint port)
{
    clear_bit(shinfo->evtchn_pending, port);
}

/* The hypervisor clears the mask bit and, if the port is pending, raises
 * the upcall that a plain store could not. */
void evtchn_unmask(uint port)
{
    struct evtchn_port arg = { port };
    int r = HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &arg);
    if (r < 0)
        panic("evtchn unmask %d: error %d", port, r);
}

void evtchn_send(uint port)
{
    struct evtchn_port arg = { port };
    int r = HYPERVISOR_event_channel_op(EVTCHNOP_send, &arg);
    if (r < 0)
        panic("evtchn send %d: error %d", port, r);
}

/* [tour pv 230] The guest's side of the upcall.
 * It scans the pending bits the hypervisor set and runs each port's handler: the
 * timer's VIRQ, the disk's completion.
 */
/* Called with events masked (the hypervisor masked them for the upcall). */
void evtchn_do_upcall(struct trapframe *tf)
{
    int tick = 0;

    vcpu->evtchn_upcall_pending = 0;
    barrier();
    uint sel = __atomic_exchange_n(&vcpu->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
    while (sel) {
        uint w = __builtin_ctz(sel);
        sel &= sel - 1;
        uint ports = shinfo->evtchn_pending[w] & ~shinfo->evtchn_mask[w];
        while (ports) {
            uint port = w * 32 + __builtin_ctz(ports);
            ports &= ports - 1;
            clear_bit(shinfo->evtchn_pending, port);
            if (port == timer_port) {
                timer_tick();
                tick = 1;
            }
            /* The block device's port is masked: the front end polls. */
        }
    }

    /* Preempt, as the native timer interrupt does: only when the tick
     * interrupted user code; the kernel itself is never preempted. */
    if (tick && (tf->cs & 3) == 3 && myproc())
        yield();
}
