"""The hypercall fuzzer (pv/fuzz.py): what it finds, and that it finds it.

1. A run of 10^4 hypercalls finds no hypervisor error, never crashes its own
   domain, gets both answers (done and refused) in healthy shares, reaches
   every hypercall the hypervisor implements and numbers it does not, and
   really changes the hypervisor's state (pins, installs, block transfers).
2. The report is a pure function of --count and --seed.
3. Bad options are one line and exit status 2.
4. The fuzzer is not blind: with a bug planted in the hypervisor (a page
   table mapped writable, an unpin of a frame never pinned, an exception, a
   clobbered register) it reports hypervisor errors.  The invariant checks it
   skips when nothing they read has changed hide nothing.
5. The bug the fuzzer found in the block back end, as a minimal guest
   (expected to fail until the hypervisor is fixed).

Every run is in-process and deterministic; nothing here measures time.
"""
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pv import abi, fuzz, invariants, layout
from pv import asmguest as G
from pv.backend import Pv
from pv.builder import Header, bootstrap
from pv.events import EventChannels
from pv.frames import L1, L2, FrameTable
from pv.hypercalls import HypercallTable
from virtlab import x86
from virtlab.machine import BootSpec, Machine

ROOT = Path(__file__).resolve().parent.parent
SEED = 0


def without_time(report):
    return {k: v for k, v in report.items() if k != "seconds"}


def implemented():
    return {entry.name for entry in HypercallTable(None).table.values()}


# -- 1. ten thousand hypercalls ------------------------------------------------------------
def test_ten_thousand_hypercalls_break_nothing_and_reach_everything():
    r = fuzz.fuzz(10_000, SEED)
    assert r["hypervisor_errors"] == 0 and r["ok"], r["errors"]
    assert r["domains_crashed"] == 0, r["crashes"]
    assert r["hypercalls"] == 10_000 and r["count"] == 10_000
    # Both answers, in healthy shares: neither a wall of refusals nor a
    # guest too polite to be refused.
    assert 0.25 * r["hypercalls"] <= r["errors_returned"] <= 0.75 * r["hypercalls"]
    assert r["succeeded"] + r["errors_returned"] == r["hypercalls"]
    for errno in ("-EFAULT", "-EINVAL", "-ENOSYS", "-EPERM", "-ESRCH", "-EEXIST"):
        assert r["results"].get(errno, 0) > 0, errno
    # Every hypercall the table implements (iret only inside a multicall,
    # where it is refused), and numbers it does not.
    reached = set(r["calls"]) | set(r["multicall_entries"])
    assert implemented() <= reached, implemented() - reached
    assert implemented() - {"iret"} <= set(r["calls"])
    assert r["calls"]["unknown"] > 100 and r["multicall_entries"]["unknown"] > 0
    # The state really changed: pages became page tables and stopped being
    # ones, were mapped through, the block device moved sectors.
    done = {k: v["succeeded"] for k, v in r["kinds"].items()}
    for kind in ("pt.readonly", "pt.pin", "pt.pin_l2", "pt.install", "pt.map", "pt.map_va",
                 "pt.unpin", "pt.uninstall", "pt.writable", "pt.clean", "multicall"):
        assert done.get(kind, 0) > 0, kind
    # ... and what can never be done was refused every time.  (The kinds are
    # what the generator's model of the domain expected; the model can be
    # wrong about a page, so an attack on one it took for a page table may
    # land on a page that no longer is: the invariants judge those.)
    for kind in ("uvm.hyperspace", "uvm.no_table", "mmu.count", "mmu.domain", "mmuext.count",
                 "multicall.count", "misc.shutdown_fault", "unknown"):
        assert r["kinds"][kind]["issued"] > 0 and done[kind] == 0, kind
    for kind in ("pt.table_writable", "pt.pin_writable"):
        assert r["kinds"][kind]["issued"] > 50 and done[kind] * 10 < r["kinds"][kind]["issued"]
    work = r["hypervisor_counters"]
    assert work["pv.blk.sectors"] > 0 and work["evtchn.send"] > 0
    assert work["hypercall.mmu_update.items"] > 1000
    assert r["invariant_checks"]["run"] > 1000


# -- 2. determinism ----------------------------------------------------------------------------
def run_cli(*argv):
    out = io.StringIO()
    status = fuzz.main(list(argv), out=out)
    return status, out.getvalue()


def test_the_same_count_and_seed_give_the_same_report():
    first = run_cli("--count", "700", "--seed", "7", "--json")
    second = run_cli("--count", "700", "--seed", "7", "--json")
    assert first[0] == second[0] == 0
    a, b = (json.loads(text) for _, text in (first, second))
    assert without_time(a) == without_time(b)
    assert a["chunks"] == 2 and a["hypercalls"] == 700 and a["seed"] == 7
    assert without_time(fuzz.fuzz(300, 8)) != without_time(fuzz.fuzz(300, 9))


def test_without_json_it_prints_a_short_summary():
    status, text = run_cli("--count", "40", "--seed", "3")
    assert status == 0
    assert text.startswith("pv.fuzz: 40 hypercalls, seed 3")
    assert "hypervisor errors: 0; domains crashed: 0" in text and text.endswith("ok\n")


# -- 3. bad options ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, says", [
    ([], "--count"),
    (["--count", "0"], "positive"),
    (["--count", "ten"], "positive"),
    (["--count", "5", "--seed", "-1"], "seed"),
    (["--count", "5", "--seed", "x"], "seed"),
    (["--count", "5", "--frobnicate"], "unrecognized"),
])
def test_bad_options_are_one_line_and_status_2(argv, says, capsys):
    assert fuzz.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pv.fuzz: error: ") and err.count("\n") == 1 and says in err


def test_bad_options_from_the_command_line():
    p = subprocess.run([sys.executable, "-m", "pv.fuzz", "--count", "-3"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("pv.fuzz: error: ") and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr


# -- 4. planted bugs: the fuzzer must see them -------------------------------------------------
def errors_of(r):
    assert not r["ok"] and r["hypervisor_errors"] > 0 and r["domains_crashed"] == 0
    return " | ".join(e["error"] for e in r["errors"])


def test_it_finds_a_page_table_mapped_writable(monkeypatch):
    """The page-type check forgets that a page table may not be mapped with W."""
    strict = FrameTable._get_l1e

    def lax(self, e):
        if e & x86.PTE_W and self.type_of(e >> 12) in (L1, L2):
            return                                   # accepted, and no reference taken
        return strict(self, e)
    monkeypatch.setattr(FrameTable, "_get_l1e", lax)
    assert "writable" in errors_of(fuzz.fuzz(1000, SEED))


def test_it_finds_an_unpin_of_a_frame_never_pinned(monkeypatch):
    """Unpin drops a reference that the pin never took."""
    def unpin(self, mfn):
        self.frame(mfn).pinned = False
        self.put_type(mfn)
    monkeypatch.setattr(FrameTable, "unpin", unpin)
    assert "references" in errors_of(fuzz.fuzz(1000, SEED))


def test_it_finds_a_writable_mapping_of_a_frame_it_never_counted(monkeypatch):
    """A writable mapping of a frame the hypervisor never used before takes
    no reference: the frame has no record at all, and the check still
    counts what the tables hold against it (it reports, it does not fail)."""
    strict = FrameTable._get_l1e

    def forgetful(self, e):
        if e & x86.PTE_W and self.owns(e >> 12) and (e >> 12) - self.first not in self.frames:
            return                                   # accepted, and no record made
        return strict(self, e)
    monkeypatch.setattr(FrameTable, "_get_l1e", forgetful)
    found = errors_of(fuzz.fuzz(1000, SEED))
    assert "counts 0 references, the tables hold" in found and "Error" not in found, found


def test_it_finds_an_exception_escaping_the_hypervisor(monkeypatch):
    """An unbound port indexes the channel table blindly: KeyError."""
    monkeypatch.setattr(EventChannels, "_bound", lambda self, port: self.ports[port])
    assert "KeyError" in errors_of(fuzz.fuzz(600, SEED))


def test_it_finds_a_clobbered_register(monkeypatch):
    """xen_version loses the guest's EDI on the way back."""
    plain = HypercallTable.xen_version

    def xen_version(self, *args):
        self.hv.machine.state.set_reg("edi", 0x0BADC0DE)
        return plain(self, *args)
    monkeypatch.setattr(HypercallTable, "xen_version", xen_version)
    assert "registers not preserved" in errors_of(fuzz.fuzz(600, SEED))


def test_the_skipped_invariant_checks_hide_nothing(monkeypatch):
    """A check is skipped only when nothing it reads has changed: with every
    check run, the report is the same."""
    memo = without_time(fuzz.fuzz(800, 5))
    monkeypatch.setattr(fuzz.Monitor, "_inputs", lambda self: object())
    full = without_time(fuzz.fuzz(800, 5))
    assert full["invariant_checks"]["unchanged"] == 0
    assert full["invariant_checks"]["run"] > memo["invariant_checks"]["run"]
    assert memo["invariant_checks"]["unchanged"] > 0
    del full["invariant_checks"], memo["invariant_checks"]
    assert memo == full


# -- 5. the bug the fuzzer found -------------------------------------------------------------
def test_the_block_ring_cannot_become_a_writable_page_table():
    """The fuzzer found this: the guest made its ring page read-only and
    pinned it as an L1 table (its zeroes are valid entries), set rsp_prod to
    a read-only entry naming its page directory and req_prod to 2, and
    notified the back end, which answered two requests and added 2 to
    rsp_prod: the entry gained W, and the page directory became writable.
    The back end now holds its ring writable (as a Xen back end maps a
    granted ring), so the pin is refused and the rest is plain data."""
    nr = fuzz.NR
    end = G.VIRT_BASE + abi.IMAGE_LOAD + 0x10000
    boot = bootstrap(Header(G.VIRT_BASE, G.CODE, end, abi.XEN_VERSION_NUMBER), nr)
    p2m = layout.scramble(nr)
    ring, pd = p2m[boot.ring], p2m[boot.pt_base]
    data = (abi.MMUEXT_REQ.pack(abi.MMUEXT_PIN_L1_TABLE, ring, 0).ljust(16, b"\0")
            + abi.MMU_UPDATE_REQ.pack((ring << 12) + 8, pd << 12 | x86.PTE_P)
            + abi.MMU_UPDATE_REQ.pack(ring << 12, 2)
            + abi.U32.pack(1))                                   # the block device's port
    body = (G.hypercall(abi.UPDATE_VA_MAPPING, G.VIRT_BASE + 4096 * boot.ring,
                        ring << 12 | x86.PTE_P, abi.UVMF_INVLPG)
            + G.hypercall(abi.MMUEXT_OP, G.DATA, 1, 0, abi.DOMID_SELF)
            + G.hypercall(abi.MMU_UPDATE, G.DATA + 16, 2, 0, abi.DOMID_SELF)
            + G.hypercall(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_SEND, G.DATA + 48)
            + G.exit_run(0))
    image = G.build(body, data, bss=end - G.DATA - len(data))
    with Machine(Pv(), ram_size=fuzz.RAM) as m:
        m.boot(BootSpec(image, "ring", 0, bytearray(4096)))
        outcome = m.run()
        assert outcome.ok, outcome.reason
        assert m.backend.frames.type_of(ring) not in (L1, L2)
        assert m.counters["pv.blk.requests"] == 2            # the notification was served
        assert invariants.check(m.backend) == []
