"""`paranoid`: the native back end with a (modeled) check on every port access.

A back end from outside virtlab: it declares its own counter and the counter's
default cost, and the analysis prices, documents and plots it with no edit to
the core."""
from virtlab.counters import Cost, CounterSpec
from virtlab.native import Native

PORT_CHECK = CounterSpec(
    "paranoid.port", "a port access checked against an allow list before it reaches "
    "the device", kind="paranoia",
    cost=(Cost(150, assumption="100 instructions of checking at CPI 1.5 (the p4 "
                               "profile's CPI)", profile="p4-2006"),
          Cost(100, assumption="about 100 instructions of checking at CPI 1")))


class Paranoid(Native):
    name = "paranoid"
    summary = "native, plus a modeled check on every port access (a test plug-in)"
    counters = Native.counters + (PORT_CHECK,)

    def port_in(self, port, size):
        self.machine.counters["paranoid.port"] += 1
        return super().port_in(port, size)

    def port_out(self, port, size, value):
        self.machine.counters["paranoid.port"] += 1
        super().port_out(port, size, value)
