"""The run's time limit: a thread that stops the CPU once, at the deadline.

A guest that loops without ever leaving the CPU model (no exit, no hook)
never gives the machine's run loop a chance to look at the clock, so
something outside the CPU has to stop it.  Unicorn offers this itself
(emu_start's timeout), but its timer is a thread that wakes every few
microseconds, for as long as the guest runs, to read the clock: a quarter
again as much CPU time as the run it guards, taken from the other runs of a
parallel bench (docs/unicorn.md, item 40).  The watchdog sleeps once, until
the deadline, and only then stops the CPU.

A stop request does not outlive the emu_start it lands in: the next
emu_start clears it.  One that lands between two of the run loop's entries
into the CPU would be lost, so once the deadline has passed the watchdog asks
again, every few milliseconds, until the run loop has seen that it fired.
"""
import threading

_AGAIN = 0.005                   # seconds between two stop requests past the deadline


class Watchdog:
    """Stops `uc` at `seconds` from now, unless the `with` block ends first;
    `fired` then says that the time ran out."""

    def __init__(self, uc, seconds):
        self.fired = False
        self._uc = uc
        self._seconds = min(seconds, threading.TIMEOUT_MAX)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="virtlab watchdog",
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _watch(self):
        if self._done.wait(self._seconds):
            return
        self.fired = True
        while True:
            self._uc.emu_stop()
            if self._done.wait(_AGAIN):
                return
