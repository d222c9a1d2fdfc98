"""The deterministic virtual clock.

Real time would make every run different, so the machine keeps its own clock in
nanoseconds.  It advances by EVENT_NS for every guest-visible event (a port access,
an exception or interrupt delivered to the guest) and jumps to the next timer
deadline when the CPU halts with interrupts enabled.  Because these events are the
same whatever back end runs the guest, the guest sees the same time under every
back end, and so takes the same path through its own code.
"""
from dataclasses import dataclass, field

EVENT_NS = 1000

# The latest time the clock may be sent to: what the guest reads of it is a
# 64-bit count of nanoseconds (a PV domain's system time, the TSC).  2^62 ns is
# some 146 years of guest time, far beyond any run, and leaves room for the
# events after it.  A guest that sleeps past it ends its run.
LAST_NS = 1 << 62


@dataclass
class VirtualClock:
    now_ns: int = 0
    deadlines: list = field(default_factory=list)    # devices with next_deadline()

    def tick(self, n=1):
        self.now_ns += n * EVENT_NS

    def next_deadline(self):
        """Earliest time at which some device will raise an interrupt, or None."""
        times = [t for t in (d.next_deadline() for d in self.deadlines) if t is not None]
        return min(times) if times else None

    def last_deadline(self):
        """Latest time at which some device now armed will raise an interrupt,
        or None: by then each of them has raised its line at least once more."""
        times = [t for t in (d.next_deadline() for d in self.deadlines) if t is not None]
        return max(times) if times else None

    def idle_until_next(self):
        """Halted: skip idle time to the next deadline.  False if nothing is armed."""
        t = self.next_deadline()
        if t is None:
            return False
        self.now_ns = max(self.now_ns, t)
        return True
