"""Every catalog workload runs correctly and deterministically under the native back end.

Each workload runs at a small scale. Checks: the run is ok with exit status 0, it marks
exactly `scale` iterations, it opens and closes its region of interest, its console
matches the independent Python reference (workloads/reference.py) where the output is
predictable, and a second run gives the identical console and counters.
"""
import re
import shutil
import subprocess

import pytest

import runs
import virtlab
from workloads import reference
from workloads.catalog import CATALOG, image_path

# Small scales so the whole file runs in well under a minute.
TEST_SCALE = {
    "nano.syscall": 200, "nano.in": 200, "nano.crwr": 200, "nano.callret": 500,
    "nano.pgfault": 150, "nano.divzero": 100, "nano.ptemod": 200, "nano.cli": 500,
    "nano.popf": 500, "nano.rdtsc": 200, "nano.cpuid": 200,
    "micro.null_call": 200, "micro.null_io": 100, "micro.ctxsw": 50, "micro.fork": 10,
    "micro.exec": 10, "micro.pagefault": 70, "micro.protfault": 50, "micro.mmap": 20,
    "macro.compute": 2, "macro.forkwait": 10, "macro.build": 3, "macro.disk": 4,
    "fidelity.popf": 10, "fidelity.pushf": 10, "fidelity.sidt": 10,
    "fidelity.pushcs": 10, "fidelity.smsw": 10,
}


def test_every_workload_has_a_test_scale():
    assert set(TEST_SCALE) == set(CATALOG)


@pytest.fixture(scope="session", autouse=True)
def native_image():
    """The prebuilt image must exist; build it if a toolchain is here, else fail loudly."""
    path = image_path("native")
    if not path.is_file() and shutil.which("make") and shutil.which("gcc"):
        subprocess.run(["make", "-C", str(path.parent.parent)], check=True,
                       capture_output=True)
    if not path.is_file():
        pytest.fail(f"guest image {path} is missing and cannot be built here")
    return path


def run_native(name, scale):
    """Attempt 0 is the native run shared by all tests (runs.py); any other
    attempt is a run of its own, made afresh."""
    def go(attempt):
        if attempt == 0:
            return runs.run(name, "native", scale)
        return virtlab.run(name, "native", scale=scale, model=False)
    return go


def lines(console):
    return [ln.rstrip("\r") for ln in console.splitlines()]


def assert_lines_in_order(console, expected):
    got = lines(console)
    pos = 0
    for want in expected:
        assert want in got[pos:], f"missing line {want!r} in console:\n{console}"
        pos = got.index(want, pos) + 1


@pytest.mark.parametrize("name", list(CATALOG))
def test_runs_ok_and_matches_reference(name):
    scale = TEST_SCALE[name]
    r = run_native(name, scale)(0)
    assert r.ok, f"{name}: {r.reason}\n{r.console}"
    assert r.exit_status == 0, r.console
    assert r.iterations == scale
    assert r.roi_host_seconds is not None, "the ROI was not begun and ended"
    assert "FAIL" not in r.console
    expected = reference.expected_lines(name, scale)
    if expected is not None:
        assert_lines_in_order(r.console, expected)
    elif name in reference.NATIVE_FIDELITY:
        assert_lines_in_order(r.console, reference.NATIVE_FIDELITY[name])
    check_shape(name, scale, r.console)


def check_shape(name, scale, console):
    """Workloads whose output is not fully predictable from outside."""
    if name == "nano.cpuid":
        m = re.search(r'^cpuid: (\d+) calls, max leaf (\d+), vendor "(.{12})", 0 changed$',
                      console, re.M)
        assert m and int(m.group(1)) == scale, console
        assert int(m.group(2)) >= 1
    elif name == "micro.null_call":
        m = re.search(r"^null_call: (\d+) calls, pid (\d+), 0 mismatches$", console, re.M)
        assert m and int(m.group(1)) == scale and int(m.group(2)) > 0, console
    elif name == "micro.null_io":
        m = re.search(r"^null_io: (\d+) read\+write pairs, read errors 0, write result (-?\d+), "
                      r"write changes 0$", console, re.M)
        assert m and int(m.group(1)) == scale, console
    elif name == "fidelity.sidt":
        # natively the tables live in the guest kernel's memory and user mode sees the same
        for kind in ("kernel IDT", "kernel GDT"):
            m = re.search(rf"^s[ig]dt: {kind} base 0x([0-9a-f]{{8}}) \(guest kernel\), "
                          rf"kernel loaded 0x\1: match yes$", console, re.M)
            assert m, f"{kind} is not where the kernel loaded it:\n{console}"
        for kind in ("user IDT", "user GDT"):
            m = re.search(rf"^s[ig]dt: {kind} base 0x[0-9a-f]{{8}} limit 0x[0-9a-f]+ "
                          rf"\(guest kernel\)$", console, re.M)
            assert m, f"{kind} not in the guest kernel:\n{console}"
    elif name == "fidelity.smsw":
        ms = re.findall(r"^smsw: (kernel|user) MSW = 0x([0-9a-f]{4}) \(PE=1 ", console, re.M)
        assert [w for w, _ in ms] == ["kernel", "user"], console
        assert ms[0][1] == ms[1][1], "kernel and user smsw differ natively"
        assert re.search(r"^smsw: kernel mov from cr0 low bits = 0x([0-9a-f]{4}): smsw matches yes$",
                         console, re.M), console
    if name.startswith("fidelity."):
        assert f"{scale} probes, 0 inconsistent" in console


@pytest.mark.parametrize("name", list(CATALOG))
def test_deterministic(name):
    scale = TEST_SCALE[name]
    go = run_native(name, scale)
    a, b = go(0), go(1)
    assert a.ok and b.ok
    assert a.console == b.console
    assert a.output_digest == b.output_digest
    assert a.exit_status == b.exit_status
    assert a.counters == b.counters
    assert a.roi_counters == b.roi_counters
    assert a.iterations == b.iterations


def test_scale_changes_the_work():
    """The scale really is the iteration count (checked on a cheap workload)."""
    small = virtlab.run("nano.syscall", "native", scale=20, model=False)
    large = virtlab.run("nano.syscall", "native", scale=40, model=False)
    assert small.ok and large.ok
    assert (small.iterations, large.iterations) == (20, 40)
    assert "syscall: 40 getpid calls, 0 mismatches" in large.console


def test_disk_area_wraps_around():
    """Past 256 blocks macro.disk overwrites its area; the reference models that too."""
    scale = 260
    r = virtlab.run("macro.disk", "native", scale=scale, model=False)
    assert r.ok and r.exit_status == 0 and r.iterations == scale, r.console
    assert_lines_in_order(r.console, reference.expected_lines("macro.disk", scale))


def test_reference_building_blocks():
    """The reference's own primitives agree with well-known values."""
    assert reference.crc32(b"123456789") == 0xCBF43926
    assert reference._sieve(20000)[0] == 2262          # pi(20000)
    assert reference._sieve(100) == (25, 1060)
    assert reference.Lcg(0)() == 1013904223
    assert reference.pgfault_sum(3) == 6 and reference.pgfault_sum(130) == 128 * 129 // 2 + 3
    src = b"ab ab  c" + b" " * 504
    obj = reference.build_object(7, src)
    words = [int.from_bytes(obj[4 * k:4 * k + 4], "little") for k in range(128)]
    assert len(obj) == 512
    assert words[:4] == [reference.OBJ_MAGIC, 7, 3, 2]
    assert words[126] == 2                               # "ab" appears twice
    assert words[5] < words[6] and words[7] == 0         # sorted symbol hashes


@pytest.mark.parametrize("name", list(CATALOG))
def test_default_scales_are_correct(name):
    """The whole suite at its default scales, one workload per test (so that
    the runs spread over the workers): correct output.  (How long it takes
    is not asserted: host time depends on the machine's load.)"""
    w = CATALOG[name]
    r = virtlab.run(name, "native", model=False)
    assert r.ok and r.exit_status == 0, f"{name}: {r.reason}\n{r.console}"
    assert r.scale == w.default_scale and r.iterations == w.default_scale, name
    expected = reference.expected_lines(name, w.default_scale)
    if expected is None:
        expected = reference.NATIVE_FIDELITY.get(name, [])
    assert_lines_in_order(r.console, expected)


FIDELITY_UNDER_TRAP = {
    "fidelity.popf": "popf: kernel IF after popf(IF=0) = 1 (popf IF change silently ignored)",
    "fidelity.pushf": "pushf: kernel IF seen by pushf after cli = 1 (real IF leaks through)",
    "fidelity.pushcs": "pushcs: kernel CS RPL = 1 (deprivileged)",
}


@pytest.mark.parametrize("name", list(FIDELITY_UNDER_TRAP))
def test_fidelity_programs_expose_classic_trap_and_emulate(name):
    """What the fidelity programs exist for: ring compression is visible in their output."""
    from virtlab import backend
    assert "trap" in backend.names(), "the classic trap-and-emulate back end is not registered"
    r = virtlab.run(name, "trap", scale=5, model=False)
    assert r.ok and r.exit_status == 0, r.reason
    assert r.matches_native is False
    assert FIDELITY_UNDER_TRAP[name] in lines(r.console), r.console
