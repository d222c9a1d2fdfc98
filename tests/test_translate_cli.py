"""`virtlab translate`: the teaching view of the translation cache.

nano.cli at scale N runs `cli; sti; out 0x503` N times in the guest kernel.
Under bt the loop is two translation units: the first iteration runs in the
unit that begins at the alignment padding before the loop head (entered by
falling into it), whose back edge is chained to a unit that begins at the
loop head, where the other N - 1 iterations run.  So the cli and sti of the
loop run exactly N times in all, N - 1 of them in the loop-head unit, whose
back edge is chained to itself.
"""
import io
import json

import pytest

from virtlab.cli import main, select_units

SCALE = 50


def translate(*argv):
    out = io.StringIO()
    rc = main(["translate", "nano.cli", "--scale", str(SCALE), *argv], out=out)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def listing():
    rc, text = translate("--format", "json", "--limit", "1000000")
    assert rc == 0, text
    return json.loads(text)


def loop_units(data):
    """The units holding the kernel's `cli; sti` pair (consecutive sites)."""
    return [u for u in data["units"]
            if any(a["text"] == "cli" and b["text"] == "sti" and b["guest"] == a["guest"] + 1
                   for a, b in zip(u["sites"], u["sites"][1:]))]


def site(unit, text):
    return next(s for s in unit["sites"] if s["text"] == text)


def test_the_loop_runs_its_cli_and_sti_in_the_tc_once_per_iteration(listing):
    assert listing["ok"] and listing["iterations"] == SCALE
    units = loop_units(listing)
    assert len(units) == 2
    cli = {site(u, "cli")["guest"] for u in units}
    assert len(cli) == 1                               # the same guest cli in both
    for u in units:
        assert site(u, "cli")["mark"] == site(u, "sti")["mark"] == "in-TC"
        assert site(u, "out dx, al")["mark"] == "IDENT"
        assert not u["dead"] and not u["transient"]
    assert sum(u["executions"] for u in units) == SCALE
    head = next(u for u in units if u["guest"] == cli.pop())
    assert head["executions"] == SCALE - 1
    back = next(e for e in head["exits"] if e["target"] == head["guest"])
    assert back["state"] == "chained" and back["chained_to"] == head["tc"]
    assert site(head, "jne 0x%x" % head["guest"])["mark"] == "chained"


def test_the_in_tc_sequences_are_the_tc_code_of_their_sites(listing):
    head = max(loop_units(listing), key=lambda u: u["executions"])
    cli, sti = site(head, "cli"), site(head, "sti")
    # cli: a store of 0 to the virtual IF, no callout; sti: a store of IF, and
    # a callout only for a waiting interrupt
    assert cli["code"][0]["text"].endswith(", 0") and cli["code"][0]["text"].startswith("mov dword ptr")
    assert not any(c["text"].startswith("int") for c in cli["code"])
    assert sti["code"][0]["text"].endswith(", 0x200")
    assert [c["note"] for c in sti["code"] if c["text"].startswith("int")] == ["callout: irq"]
    for s in head["sites"]:
        assert s["tc"] == s["code"][0]["address"] and s["tc"] < s["tc_end"]
        assert all(s["tc"] <= c["address"] < s["tc_end"] for c in s["code"])
    assert head["prologue"] and head["prologue"][0]["address"] == head["tc"]
    assert head["sites"][0]["tc"] == head["prologue"][-1]["address"] + \
        len(bytes.fromhex(head["prologue"][-1]["bytes"]))


def test_json_has_every_field(listing):
    assert {"workload", "backend", "scale", "ok", "reason", "iterations", "addr",
            "units_in_cache", "units"} <= set(listing)
    assert listing["backend"] == "bt" and listing["addr"] is None
    assert len(listing["units"]) == listing["units_in_cache"] > 2
    for u in listing["units"]:
        assert {"guest", "guest_end", "tc", "tc_end", "executions", "dead", "transient",
                "prologue", "sites", "epilogue", "exits"} <= set(u)
        for s in u["sites"]:
            assert {"guest", "size", "text", "kind", "mark", "reason", "tc", "tc_end",
                    "code"} <= set(s)
            assert s["mark"] in ("IDENT", "in-TC", "callout", "indirect", "chained", "exit",
                                 "chained/exit", "exit/chained", "branch")
        for e in u["exits"]:
            assert (e["state"] == "chained") == (e["chained_to"] is not None)
    ran = [u["executions"] for u in listing["units"]]
    assert ran == sorted(ran, reverse=True)            # most executed first


def test_addr_and_limit_select_units(listing):
    cli = site(loop_units(listing)[0], "cli")["guest"]
    rc, text = translate("--format", "json", "--addr", hex(cli))
    assert rc == 0
    got = json.loads(text)["units"]
    want = [u for u in listing["units"] if u["guest"] <= cli < u["guest_end"]]
    assert [u["tc"] for u in got] == [u["tc"] for u in want] and len(got) >= 2
    assert [u["tc"] for u in select_units(listing["units"], cli, 1)] == [want[0]["tc"]]
    assert len(select_units(listing["units"], None, 3)) == 3


def test_text_shows_the_loop_head_alone_with_limit_one(listing):
    cli = site(loop_units(listing)[0], "cli")["guest"]
    rc, text = translate("--addr", str(cli), "--limit", "1")      # decimal this time
    assert rc == 0
    assert text.count("\nunit ") == 1
    assert f"ran {SCALE - 1} times  live" in text
    rows = {r[0]: r[1:4] for r in (ln.split() for ln in text.splitlines()) if r}
    assert rows[f"{cli:#010x}"] == ["in-TC", "cli", "|"]
    assert rows[f"{cli + 1:#010x}"] == ["in-TC", "sti", "|"]
    assert "callout: irq" in text and "chained to guest" in text


@pytest.mark.parametrize("argv", [
    ["translate"],
    ["translate", "no.such"],
    ["translate", "nano.cli", "--addr", "zz"],
    ["translate", "nano.cli", "--addr", "-1"],
    ["translate", "nano.cli", "--addr", "0x100000000"],
    ["translate", "nano.cli", "--limit", "0"],
    ["translate", "nano.cli", "--limit", "-3"],
    ["translate", "nano.cli", "--format", "xml"],
    ["translate", "nano.cli", "--scale", "0"],
    ["translate", "nano.cli", "--scale", "many"],
    ["translate", "nano.cli", "--scale", "99999999"],
    ["translate", "nano.cli", "--backend", "native"],
    ["translate", "nano.cli", "--backend", "trap"],
    ["translate", "nano.cli", "--backend", "nope"],
])
def test_bad_options_are_one_line_and_exit_2(argv, capsys):
    out = io.StringIO()
    assert main(argv, out=out) == 2
    err = capsys.readouterr().err
    assert err.startswith("virtlab: error: ") and err.count("\n") == 1
    assert "Traceback" not in err and out.getvalue() == ""


def test_the_profile_counter_stores_to_the_slot_it_loads():
    """The PROFILE sequence loads the unit's counter, adds one and stores it
    back: both accesses must name the unit's slot.  (A template records one
    offset per placeholder, so a placeholder used twice is patched once.)"""
    from capstone import Cs, CS_ARCH_X86, CS_MODE_32
    from bt import layout as L, templates as T
    code = T.get("profile").emit(imm=L.PROFILE + 8)
    texts = [i.op_str for i in Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, 0)]
    slot = f"dword ptr [{L.PROFILE + 8:#x}]"
    assert texts[1] == f"eax, {slot}" and texts[3] == f"{slot}, eax"


def test_an_image_of_ones_own_is_listed_as_a_workload_is(tmp_path):
    # A raw image (docs/boot-protocol.md), as run, trace and audit take one.
    from virtlab import asmguest as A
    image = tmp_path / "loop.img"
    image.write_bytes(A.build(A.AsmGuest(body="mov ecx, 5\nlp:\ncli\nsti\ndec ecx\njnz lp\n"
                                              + A.exit_with(0))))
    out = io.StringIO()
    assert main(["translate", "--image", str(image), "--format", "json"], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["ok"] and data["workload"] == "loop.img"
    sti = next(s["guest"] for u in data["units"] for s in u["sites"] if s["text"] == "sti")
    ran = {t: sum(u["executions"] for u in data["units"] for s in u["sites"]
                  if s["guest"] == sti + (t == "sti") - 1 and s["text"] == t) for t in ("cli", "sti")}
    assert ran == {"cli": 5, "sti": 5}            # the loop's, in whichever unit they ran
