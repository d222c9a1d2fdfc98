"""`virtlab trace`: the teaching view of the events of a run, exits among them."""
import io
import json

import pytest

from virtlab.cli import main


def trace(*argv):
    out = io.StringIO()
    rc = main(["trace", *argv], out=out)
    return rc, out.getvalue()


def test_trap_cli_loop_shows_each_emulated_cli_and_sti():
    rc, text = trace("nano.cli", "--backend", "trap", "--scale", "20", "--format", "json",
                     "--limit", "12")
    assert rc == 0
    events = json.loads(text)["events"]
    assert len(events) == 12
    emulated = [e for e in events if e["cause"] == "#GP"]
    # inside the loop every cli and sti traps and is emulated, alternately
    assert [e["instruction"] for e in emulated][:4] == ["cli", "sti", "cli", "sti"]
    assert all(list(e["effects"]) == ["exit.priv", "exit.priv." + e["instruction"]]
               for e in emulated)


def test_hw_never_exits_on_cli():
    rc, text = trace("nano.cli", "--backend", "hw", "--format", "json", "--limit", "500")
    assert rc == 0
    assert not [e for e in json.loads(text)["events"] if e["instruction"] in ("cli", "sti")]


def test_a_system_call_is_shown_at_its_int_instruction():
    rc, text = trace("nano.syscall", "--backend", "trap", "--format", "json", "--limit", "1")
    first = json.loads(text)["events"][0]
    assert first["cause"] == "int 0x80" and first["instruction"] == "int 0x80"
    assert first["effects"] == {"reflect.syscall": 1}


def test_text_output_and_errors():
    rc, text = trace("nano.ptemod", "--backend", "hw", "--limit", "5")
    assert rc == 0 and "in the region of interest" in text and "shadow.fill" in text
    assert trace("nano.ptemod", "--backend", "nope")[0] == 2
    assert trace("--backend", "trap")[0] == 2


def audit(*argv):
    out = io.StringIO()
    rc = main(["audit", *argv], out=out)
    return rc, out.getvalue()


def test_audit_counts_the_fidelity_probe_exactly():
    """fidelity.pushf at scale N probes N times in the kernel (cli; pushf; ...),
    so kernel pushf executions grow by exactly one per extra probe."""
    def kernel_pushf(scale):
        rc, text = audit("fidelity.pushf", "--scale", str(scale), "--format", "json")
        assert rc == 0
        rows = json.loads(text)["instructions"]
        return {(r["class"], r["instruction"], r["ring"]): r["executions"] for r in rows}
    a, b = kernel_pushf(10), kernel_pushf(20)
    key = ("sensitive, unprivileged", "pushf", "kernel")
    assert b[key] - a[key] == 10
    assert ("privileged", "cli", "kernel") in a


def test_audit_text_and_errors():
    rc, text = audit("nano.cli", "--scale", "5")
    assert rc == 0 and "privileged" in text and "cli" in text and "Popek-Goldberg" in text
    assert audit()[0] == 2
    assert audit("no.such")[0] == 2


# -- what the trace calls its events ------------------------------------------------------

def test_native_has_events_and_no_exits():
    rc, text = trace("nano.syscall", "--backend", "native", "--limit", "3")
    assert rc == 0
    lines = text.splitlines()
    assert lines[0] == "nano.syscall under native (scale 3): events 1..3 in the region of interest"
    assert "(native has no VMM: none of these events is an exit)" in lines
    assert "(trace stopped after 3 events)" in lines
    assert "exits" not in text


def test_pv_direct_system_calls_are_events_not_exits():
    rc, text = trace("nano.syscall", "--backend", "pv", "--format", "json", "--limit", "3")
    data = json.loads(text)
    assert data["scale"] == 3
    assert [(e["cause"], e["exit"]) for e in data["events"]] == [("int 0x80: direct trap",
                                                                   False)] * 3
    rc, text = trace("nano.syscall", "--backend", "pv", "--limit", "3")
    assert "(none of these 3 events is an exit (exit.total)" in text
    # The cause is longer than a vector's: its column widens, and what was
    # done still starts under its heading.
    head, *rows = [ln for ln in text.splitlines() if ln.lstrip()[:1] in ("#", "1", "2", "3")]
    at = head.index("what was done")
    assert [row[at:] for row in rows] == ["pv.fast_syscall"] * 3
    assert [row[:at].rstrip().endswith("int 0x80: direct trap") for row in rows] == [True] * 3


def test_trap_exits_are_counted_as_exits():
    rc, text = trace("nano.cli", "--backend", "trap", "--format", "json", "--limit", "6")
    events = json.loads(text)["events"]
    assert all(e["exit"] == ("exit.priv" in e["effects"] or "reflect.syscall" in e["effects"]
                             or "exit.pf.hidden" in e["effects"]) for e in events)
    assert any(e["exit"] for e in events)
    rc, text = trace("nano.cli", "--backend", "hw", "--limit", "2")
    # VT-x lets the guest take its own system call: an event, not an exit
    assert "int 0x80       native.syscall\n" in text
    assert "exit.pf.hidden shadow.fill  (exit)\n" in text
    assert "(1 of these 2 events is an exit, marked (exit) and counted in exit.total;" in text


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["trace", "--help"], out=io.StringIO())
    help_text = " ".join(capsys.readouterr().out.split())
    for default in ("(default trap)", "(default 3:", "(default 60)", "(default 0)"):
        assert default in help_text, default
    assert "Not every event is an exit" in help_text


# -- string port instructions: one execution per port access -----------------------------

def _audit_rows(tmp_path, body, **guest):
    from virtlab import asmguest as A
    image = tmp_path / "g.img"
    image.write_bytes(A.build(A.AsmGuest(body=body, **guest)))
    rc, text = audit("--image", str(image), "--format", "json")
    assert rc == 0, text
    return {(r["instruction"], r["ring"]): r["executions"]
            for r in json.loads(text)["instructions"] if r["instruction"] in STRING_IO}


STRING_IO = ("insb", "insw", "insd", "outsb", "outsw", "outsd")


def test_a_rep_string_port_instruction_executes_once_per_access(tmp_path):
    """The CPU model enters `rep outsb` ECX + 1 times (the last finds ECX zero);
    the audit counts the ECX port accesses, as a VMM handles them."""
    from virtlab import asmguest as A
    body = ("mov esi, 0x5000\nmov edi, 0x5100\nmov dx, 0x80\n"
            "mov ecx, 4\nrep outsb\n"
            "mov ecx, 3\nrep insb\n"
            "mov ecx, 0\nrep outsd\n"                       # no access at all
            "mov ecx, 0x10002\n.byte 0x67, 0xf3, 0x66, 0x6f\n"   # addr16: CX = 2
            "mov ecx, 3\nlp:\noutsb\nloop lp\n"             # no rep: three executions
            + A.exit_with(0))
    assert _audit_rows(tmp_path, body) == {("outsb", "kernel"): 4 + 3, ("insb", "kernel"): 3,
                                           ("outsw", "kernel"): 2}


@pytest.mark.parametrize("count", [2, 0])
def test_a_rep_outs_refused_by_iopl_is_not_an_execution(count):
    """User code at IOPL 0: the CPU checks the permission before the count, so
    the #GP comes before any access, and the retried hook takes nothing back
    that it did not count."""
    from virtlab import asmguest as A
    from virtlab.audit import Audit
    from virtlab.backend import create
    from virtlab.machine import BootSpec, Machine
    ring3 = f"mov esi, 0x5000\nmov dx, 0x80\nmov ecx, {count}\nrep outsb\nint 0x81\n"
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3, user_vectors=(0x81,),
                   handlers={13: A.exit_with(13), 0x81: A.exit_with(0)})
    with Machine(create("native")) as m:
        audit = Audit(m)
        m.boot(BootSpec(A.build(g)))
        out = m.run()
    assert out.ok and out.exit_status == 13, out
    assert {k: n for k, n in audit.counts.items() if k[1] == "outsb"} in (
        {}, {("privileged", "outsb", "user"): 0})
