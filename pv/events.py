"""Event channels: a PV guest's interrupts.

A paravirtualized kernel has no interrupt controller and never executes
cli/sti.  The hypervisor tells it that something happened by setting a bit in
the shared-info page, a page both can read and write:

  - each event channel (a port) has a *pending* and a *mask* bit;
  - signalling a port sets its pending bit; if the port is not masked and the
    bit was clear, the hypervisor also sets the port's word in the vCPU's
    `evtchn_pending_sel` and `evtchn_upcall_pending`;
  - `evtchn_upcall_mask` is the virtual IF.  The guest's cli is a store of 1
    into it, its sti a store of 0 and a test of `evtchn_upcall_pending`;
  - whenever the hypervisor returns to the guest with an upcall pending and
    not masked, it makes an *upcall*: it enters the guest's event callback as
    if an interrupt had arrived, and masks events (traps.py does the entry).

So masking interrupts costs a store, not a trap: the point Barham et al. make,
and the reason nano.cli under pv makes no hypercall at all.
"""
import struct
from dataclasses import dataclass

from . import abi

_TIME = struct.Struct("<Q")            # vcpu_time_info.system_time


@dataclass
class Channel:
    kind: str                  # "virq" (bound to a virtual interrupt), "unbound", "backend"
    virq: int = None
    backend: object = None     # for "backend": what EVTCHNOP_send notifies (blkback)


class SharedInfo:
    """The fields of the shared-info page (machine address `pa`) for vCPU 0.

    The hypervisor reads and writes some of them on every exit (the event
    flags and the time: backend.Pv.exit_to_guest, EventChannels.signal,
    traps.PvCpuView), so they are reached as the bytes and the aligned 32-bit
    words of machine memory (mem.view, mem.words) at addresses made once
    here (the page is page-aligned, so every u32 field is a whole word)."""

    def __init__(self, mem, pa):
        self.mem, self.pa = mem, pa
        mem.view[pa:pa + 4096] = bytes(4096)
        self.view, self.words = mem.view, mem.words
        self.pending_at = pa + abi.UPCALL_PENDING          # byte: evtchn_upcall_pending
        self.mask_at = pa + abi.UPCALL_MASK                # byte: evtchn_upcall_mask
        self.sel_word = (pa + abi.PENDING_SEL) >> 2        # evtchn_pending_sel
        self.pending_words = (pa + abi.EVTCHN_PENDING) >> 2   # the ports' bitmaps,
        self.mask_words = (pa + abi.EVTCHN_MASK) >> 2         # a word per 32 ports
        self.version_word = (pa + abi.TIME_VERSION) >> 2
        self.time_at = pa + abi.TIME_SYSTEM              # a u64

    def set_mask(self, masked):
        self.view[self.mask_at] = 1 if masked else 0

    def upcall_pending(self):
        return self.view[self.pending_at] != 0

    def set_time(self, ns):
        """vcpu_time_info: the version is odd while the time is updated and
        even after (a reader retries while it sees odd or a change).  The
        guest never runs while the hypervisor updates it (this is called on
        the way out of every hypercall and exit), so all it can see is the
        end: the new time and the version past the odd one, written directly."""
        _TIME.pack_into(self.view, self.time_at, ns)
        w, version = self.words, self.version_word
        w[version] = (((w[version] + 1) | 1) + 1) & 0xFFFFFFFF

    def set_cr2(self, linear):
        self.mem.set_u32(self.pa + abi.ARCH_CR2, linear)

    def _word(self, base, port):
        return ((self.pa + base) >> 2) + (port >> 5), 1 << (port & 31)

    def test(self, base, port):
        at, bit = self._word(base, port)
        return bool(self.words[at] & bit)

    def set(self, base, port, value):
        at, bit = self._word(base, port)
        w = self.words
        w[at] = w[at] | bit if value else w[at] & ~bit

    # [tour pv 210] Pending: a bit per port, a word per selector, a flag per vCPU.
    def raise_upcall(self, port):
        """The port's word in the selector, and the vCPU's pending flag."""
        self.words[self.sel_word] |= 1 << (port >> 5)
        self.view[self.pending_at] = 1


class EventChannels:
    def __init__(self, shared, counters):
        self.shared = shared
        self.counters = counters
        self.ports = {}                # port -> Channel
        self.virqs = {}                # virq -> port

    def _free_port(self):
        for port in range(1, abi.NR_EVENT_CHANNELS):
            if port not in self.ports:
                return port
        raise LookupError

    def _bound(self, port):
        if not isinstance(port, int) or port not in self.ports:
            return None
        return self.ports[port]

    # -- what the hypervisor does ------------------------------------------------------
    def bind_backend(self, backend):
        """A port whose other end is a back end in the hypervisor (the
        domain builder's block device)."""
        port = self._free_port()
        self.ports[port] = Channel("backend", backend=backend)
        return port

    def signal(self, port):
        """Mark the port pending; an edge on an unmasked port raises the upcall.
        (SharedInfo.test, set and raise_upcall, inline on the page's words:
        the timer signals its port on the way to every timer upcall.)"""
        sh = self.shared
        w, word, bit = sh.words, port >> 5, 1 << (port & 31)
        pending = sh.pending_words + word
        if w[pending] & bit:
            return
        w[pending] |= bit
        if not w[sh.mask_words + word] & bit:
            w[sh.sel_word] |= 1 << word
            sh.view[sh.pending_at] = 1

    def virq(self, virq):
        port = self.virqs.get(virq)
        if port is not None:
            self.signal(port)

    # -- what the guest asks (event_channel_op) ----------------------------------------
    def bind_virq(self, virq, vcpu):
        if virq != abi.VIRQ_TIMER or vcpu != 0:
            return -abi.EINVAL
        if virq in self.virqs:
            return -abi.EEXIST
        try:
            port = self._free_port()
        except LookupError:
            return -abi.ENOSPC
        self.ports[port] = Channel("virq", virq=virq)
        self.virqs[virq] = port
        return port

    def alloc_unbound(self, dom, remote):
        if dom != abi.DOMID_SELF:
            return -abi.ESRCH
        try:
            port = self._free_port()
        except LookupError:
            return -abi.ENOSPC
        self.ports[port] = Channel("unbound")
        return port

    def close(self, port):
        ch = self._bound(port)
        if ch is None or ch.kind == "backend":
            return -abi.EINVAL
        if ch.kind == "virq":
            del self.virqs[ch.virq]
        del self.ports[port]
        self.shared.set(abi.EVTCHN_PENDING, port, False)
        return 0

    # [tour pv 180] Event channels: the guest notifies.
    # EVTCHNOP_send on a port bound to a back end calls it: the PV replacement for an
    # I/O port write.
    def send(self, port):
        ch = self._bound(port)
        if ch is None:
            return -abi.EINVAL
        self.counters["evtchn.send"] += 1
        if ch.kind == "backend":
            ch.backend.notify(port)
        return 0

    def unmask(self, port):
        """Clear the mask; a port that became pending while masked raises the
        upcall now (its edge was not lost, only held)."""
        if self._bound(port) is None:
            return -abi.EINVAL
        sh = self.shared
        sh.set(abi.EVTCHN_MASK, port, False)
        if sh.test(abi.EVTCHN_PENDING, port):
            sh.raise_upcall(port)
        return 0


class VirtualTimer:
    """set_timer_op's one-shot deadline, in ns of system time (the machine's
    virtual clock), raising VIRQ_TIMER.  It is one of the clock's deadlines, so
    a blocked domain sleeps exactly until it."""

    def __init__(self, clock, channels, counters):
        self.clock = clock
        self.channels = channels
        self.counters = counters
        self.deadline = None           # set by set_timer_op (hypercalls.py)
        clock.deadlines.append(self)

    def next_deadline(self):
        return self.deadline

    def check(self):
        """Fire if the deadline has passed: called whenever the hypervisor
        has control (backend.Pv makes this test inline on its hot paths)."""
        if self.deadline is not None and self.clock.now_ns >= self.deadline:
            self.fire()

    def fire(self):
        """The deadline has passed: raise VIRQ_TIMER, once (channels.virq(),
        inline: every timer interrupt comes this way)."""
        self.deadline = None
        self.counters["pv.virq.timer"] += 1
        port = self.channels.virqs.get(abi.VIRQ_TIMER)
        if port is not None:
            self.channels.signal(port)
