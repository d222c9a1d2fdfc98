"""The run's time limit (virtlab/watchdog.py): one thread per run, and the
CPU stopped even by a stop request that came between two emu_starts.

A test here that went wrong would hang, so each emu_start is also given
Unicorn's own timeout, far longer than anything the watchdog needs, and the
test asserts that it was the watchdog and not that timeout that stopped the
CPU (UC_QUERY_TIMEOUT)."""
import time

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_QUERY_TIMEOUT

from virtlab import asmguest as A
from virtlab.machine import BootSpec, Budget, Machine
from virtlab.native import Native
from virtlab.watchdog import Watchdog

SPIN = b"\xeb\xfe"                       # jmp $: a guest that never leaves the CPU
SAFETY_US = 120 * 10**6                  # Unicorn's own limit, only so that no test hangs


def spinning_cpu():
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, SPIN)
    return uc


def test_the_watchdog_stops_a_spinning_cpu():
    uc = spinning_cpu()
    with Watchdog(uc, 0.05) as dog:
        uc.emu_start(0, 0x1000, timeout=SAFETY_US)
    assert dog.fired and not uc.query(UC_QUERY_TIMEOUT)


def test_a_stop_between_two_entries_is_asked_again():
    """emu_start clears a stop request: the watchdog that fired while the
    CPU was not running must stop the next entry too."""
    uc = spinning_cpu()
    with Watchdog(uc, 0.01) as dog:
        while not dog.fired:
            time.sleep(0.01)
        uc.emu_start(0, 0x1000, timeout=SAFETY_US)
    assert not uc.query(UC_QUERY_TIMEOUT)


def test_a_run_that_ends_in_time_does_not_fire_and_leaves_no_thread():
    import threading
    uc = spinning_cpu()
    with Watchdog(uc, 3600) as dog:
        pass
    assert not dog.fired
    assert not [t for t in threading.enumerate() if t.name == "virtlab watchdog"]


def test_an_endless_budget_is_accepted():
    """The longest budget the interface allows is beyond what a thread can
    wait for: the watchdog waits as long as it can."""
    from virtlab.machine import MAX_HOST_SECONDS
    with Watchdog(spinning_cpu(), MAX_HOST_SECONDS) as dog:
        pass
    assert not dog.fired


def test_the_machine_gives_unicorn_no_timeout():
    """Unicorn's timeout is a thread polling the clock for the whole run
    (docs/unicorn.md, item 40): the machine must not start it."""
    seen = []
    with Machine(Native(), budget=Budget(host_seconds=30)) as m:
        guest = A.AsmGuest(body="int 0x80\n" + A.exit_with(0), handlers={0x80: "iretd\n"})
        m.boot(BootSpec(A.build(guest)))
        real = m.uc.emu_start

        def recording(*args, **kwargs):
            seen.append((args, kwargs))
            return real(*args, **kwargs)
        m.uc.emu_start = recording
        assert m.run().ok
    assert seen and all(len(a) == 2 and not k.get("timeout") for a, k in seen)
