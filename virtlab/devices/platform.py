"""Platform ports 0x500-0x50F: the guest's side channel to the harness.

Like gem5's magic instructions they are instrumentation, not hardware: a write ends
the run, opens or closes the region of interest, or marks one iteration.  They are
never counted as events and never charged.
"""
from dataclasses import dataclass

EXIT, ROI_BEGIN, ROI_END, ITERATION = 0x500, 0x501, 0x502, 0x503
PORTS = range(0x500, 0x510)


@dataclass
class Platform:
    on_exit: object = None        # callable(status)
    on_roi: object = None         # callable(begin: bool)
    iterations: int = 0

    def is_platform(self, port):
        return port in PORTS

    def io_read(self, port, size):
        return 0

    def io_write(self, port, size, value):
        if port == EXIT:
            self.on_exit(value)
        elif port == ROI_BEGIN:
            self.on_roi(True)
        elif port == ROI_END:
            self.on_roi(False)
        elif port == ITERATION:
            self.iterations += 1
