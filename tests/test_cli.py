"""The command-line contract of `virtlab`.

Checked two ways: as a separate process (`python -m virtlab ...`, what a user or a
script sees: exit status, stdout, stderr) and in-process through
`virtlab.cli.main(argv, out=...)`.

The contract: every user error is exactly one line on stderr and exit status 2,
never a traceback; a guest that fails makes `run` exit 1 with ok false and a reason
naming the guest EIP and the instruction there; a good run exits 0.
"""
import hashlib
import io
import json
import os
import subprocess
import sys

import pytest

from virtlab import asmguest as A
from virtlab.cli import main

RUN_KEYS = {"workload", "backend", "scale", "ok", "exit_status", "console",
            "output_digest", "matches_native", "counters", "roi_counters",
            "host_seconds", "roi_host_seconds", "iterations", "modeled_cycles",
            "profile", "reason"}

MANY_OUTS = "mov ecx, 100\nagain: mov dx, 0x3f8\nmov al, 0x41\nout dx, al\nloop again\n"


def body_start():
    """Linear address where an AsmGuest's body begins (after its fixed prologue)."""
    empty = A.build(A.AsmGuest(body=""))
    marked = A.build(A.AsmGuest(body="nop"))
    off = next(i for i, (a, b) in enumerate(zip(empty, marked)) if a != b)
    return A.BASE + off


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    start = body_start()

    def put(name, data):
        p = d / name
        p.write_bytes(data)
        return str(p)

    out_at = start + len(A.assemble("mov ecx, 100\nmov dx, 0x3f8\nmov al, 0x41", start))
    many = A.build(A.AsmGuest(body=MANY_OUTS + A.exit_with(0)))
    assert many[out_at - A.BASE] == 0xEE                 # `out dx, al` is there
    return {
        "dir": d,
        "start": start,
        "hi": put("hi.img", A.build(A.AsmGuest(body=A.putc("h") + A.putc("i") + A.exit_with(7)))),
        "ud2": put("ud2.img", A.build(A.AsmGuest(body="ud2\n"))),
        # A bare image: no GDT/IDT of its own, the boot state of the protocol.
        "raw_ud2": put("raw_ud2.img", b"\x0f\x0b"),
        "hlt": put("hlt.img", A.build(A.AsmGuest(body="cli\nhlt\n"))),
        "spin": put("spin.img", A.build(A.AsmGuest(body="spin: jmp spin\n"))),
        "many": put("many.img", many),
        "out_at": out_at,
    }


def vl(*args, cwd=None, timeout=300):
    """Run `python -m virtlab ARGS` as a separate process."""
    return subprocess.run([sys.executable, "-m", "virtlab", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "COLUMNS": "80"})


def call(argv, capsys):
    """virtlab.cli.main in-process: (status, stdout text written to `out`, stderr)."""
    out = io.StringIO()
    status = main([str(a) for a in argv], out=out)
    captured = capsys.readouterr()
    assert captured.out == "", "output must go to `out`, not sys.stdout"
    return status, out.getvalue(), captured.err


def addr(eip):
    return f"{eip:#010x}"


# ---------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------

def test_list_json_subprocess(tmp_path):
    p = vl("list", "--format", "json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    data = json.loads(p.stdout)
    names = [b["name"] for b in data["backends"]]
    assert "native" in names
    native = next(b for b in data["backends"] if b["name"] == "native")
    assert isinstance(native["summary"], str) and native["summary"]
    assert isinstance(data["workloads"], list)


def test_list_json_in_process(capsys):
    status, out, err = call(["list", "--format", "json"], capsys)
    assert status == 0 and err == ""
    data = json.loads(out)
    assert "native" in [b["name"] for b in data["backends"]]


def test_list_text(capsys):
    status, out, err = call(["list"], capsys)
    assert status == 0 and err == ""
    assert "native" in out


# ---------------------------------------------------------------------------
# user errors: one line on stderr, exit status 2, no traceback
# ---------------------------------------------------------------------------

def _error_cases(images):
    img = images["hi"]
    missing = images["dir"] / "no-such.img"
    return {
        "unknown-backend": (["run", "--image", img, "--backend", "nope"], "nope"),
        "unknown-backend-workload": (["run", "nano.syscall", "--backend", "nope"], "nope"),
        "unknown-workload": (["run", "no.such.workload"], "no.such.workload"),
        "scale-negative": (["run", "--image", img, "--scale", "-3"], "-3"),
        "scale-zero": (["run", "--image", img, "--scale", "0"], "0"),
        "scale-not-int": (["run", "--image", img, "--scale", "x"], "x"),
        "format-bad": (["run", "--image", img, "--format", "foo"], "foo"),
        "list-format-bad": (["list", "--format", "foo"], "foo"),
        "timeout-bad": (["run", "--image", img, "--timeout", "0"], "0"),
        "timeout-nan": (["run", "--image", img, "--timeout", "soon"], "soon"),
        "max-exits-bad": (["run", "--image", img, "--max-exits", "-1"], "-1"),
        "unknown-subcommand": (["frobnicate"], "frobnicate"),
        "unknown-option": (["run", "--image", img, "--frob"], "--frob"),
        "no-subcommand": ([], None),
        "run-nothing": (["run"], None),
        "missing-image": (["run", "--image", missing], "no-such.img"),
        "image-is-a-directory": (["run", "--image", images["dir"]], None),
        "image-under-a-file": (["run", "--image", img + "/x.img"], "x.img"),
        "bench-unknown-backend": (["bench", "--backends", "nope"], "nope"),
        "bench-unknown-workload": (["bench", "--workloads", "zzz.nothing"], "zzz.nothing"),
        "bench-scale-bad": (["bench", "--scale", "-3"], "-3"),
        "bench-format-bad": (["bench", "--format", "foo"], "foo"),
    }


ERROR_IDS = ["unknown-backend", "unknown-backend-workload", "unknown-workload",
             "scale-negative", "scale-zero", "scale-not-int", "format-bad",
             "list-format-bad", "timeout-bad", "timeout-nan", "max-exits-bad",
             "unknown-subcommand", "unknown-option", "no-subcommand", "run-nothing",
             "missing-image", "image-is-a-directory", "image-under-a-file",
             "bench-unknown-backend",
             "bench-unknown-workload", "bench-scale-bad", "bench-format-bad"]


def check_one_line_error(status, out, err, mention):
    assert "Traceback" not in err and "Traceback" not in out
    assert status == 2, (status, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {err!r}"
    assert err.endswith("\n")
    assert lines[0].startswith("virtlab: ")
    assert out == ""
    if mention is not None:
        assert mention in lines[0]


# The real process, for one case of each way an error reaches the user:
# argparse's own (a bad value, an unknown subcommand, none at all), a usage
# error the command raises, and a file it cannot use.  The in-process test
# below takes every case through the same main().
SUBPROCESS_IDS = ["scale-not-int", "unknown-subcommand", "no-subcommand", "unknown-backend",
                  "unknown-workload", "bench-unknown-backend", "missing-image",
                  "image-is-a-directory"]


@pytest.mark.parametrize("case", SUBPROCESS_IDS)
def test_user_error_subprocess(case, images, tmp_path):
    argv, mention = _error_cases(images)[case]
    p = vl(*argv, cwd=tmp_path)
    check_one_line_error(p.returncode, p.stdout, p.stderr, mention)


@pytest.mark.parametrize("case", ERROR_IDS)
def test_user_error_in_process(case, images, capsys):
    argv, mention = _error_cases(images)[case]
    try:
        status, out, err = call(argv, capsys)
    except SystemExit as exc:                   # argparse must not exit by itself
        pytest.fail(f"main raised SystemExit({exc.code}) instead of returning 2")
    check_one_line_error(status, out, err, mention)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can read a mode-000 file")
def test_unreadable_image(tmp_path, capsys):
    img = tmp_path / "secret.img"
    img.write_bytes(b"\xf4")
    img.chmod(0)
    try:
        p = vl("run", "--image", img, cwd=tmp_path)
        check_one_line_error(p.returncode, p.stdout, p.stderr, "secret.img")
        status, out, err = call(["run", "--image", img], capsys)
        check_one_line_error(status, out, err, "secret.img")
    finally:
        img.chmod(0o644)


def test_image_too_large_for_ram(tmp_path, capsys):
    img = tmp_path / "huge.img"
    with open(img, "wb") as f:
        f.truncate(40 << 20)                    # sparse, > 32 MiB of RAM
    p = vl("run", "--image", img, cwd=tmp_path)
    check_one_line_error(p.returncode, p.stdout, p.stderr, "huge.img")
    status, out, err = call(["run", "--image", img], capsys)
    check_one_line_error(status, out, err, "huge.img")


# ---------------------------------------------------------------------------
# a good raw image
# ---------------------------------------------------------------------------

def check_hi(data):
    assert RUN_KEYS <= set(data), RUN_KEYS - set(data)
    assert data["console"] == "hi"
    assert data["exit_status"] == 7
    assert data["ok"] is True
    assert data["backend"] == "native"
    assert data["reason"] == ""
    assert data["matches_native"] is True
    assert data["output_digest"] == hashlib.sha256(b"hi").hexdigest()
    assert data["scale"] == 0
    assert data["iterations"] == 0
    assert data["roi_counters"] == {} and data["roi_host_seconds"] is None
    assert isinstance(data["counters"], dict)
    assert isinstance(data["host_seconds"], float) and data["host_seconds"] >= 0


def test_run_image_json_subprocess(images, tmp_path):
    p = vl("run", "--image", images["hi"], "--backend", "native", "--format", "json",
           cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    check_hi(json.loads(p.stdout))


def test_run_image_json_in_process(images, capsys):
    status, out, err = call(["run", "--image", images["hi"], "--backend", "native",
                             "--format", "json"], capsys)
    assert status == 0 and err == ""
    check_hi(json.loads(out))


def test_run_image_with_scale_reaches_boot_block(images, capsys):
    status, out, err = call(["run", "--image", images["hi"], "--scale", "5",
                             "--format", "json"], capsys)
    assert status == 0
    assert json.loads(out)["scale"] == 5


def test_run_image_text(images, capsys):
    status, out, err = call(["run", "--image", images["hi"]], capsys)
    assert status == 0 and err == ""
    assert "exit status 7" in out
    assert "  hi" in out.splitlines()


def test_run_text_lays_out_counters_and_back_end_fields_as_tables(capsys):
    # pv counts its kernel's reads of a segment register under a name longer
    # than the usual column, and reports them again as a table of its own.
    status, out, _ = call(["run", "nano.syscall", "--backend", "pv", "--scale", "3",
                           "--repeat", "1"], capsys)
    assert status == 0 and "{" not in out
    lines = out.splitlines()
    rows = lines[lines.index("counters:") + 1:]
    rows = [ln for ln in rows if ln.startswith("  ")]
    assert any(ln.startswith("  sensitive.mov_from_segment_register ") for ln in rows)
    assert "sensitive:" in lines
    assert any(ln.startswith("  mov from segment register ") for ln in rows)
    assert len({len(ln) for ln in rows}) == 1        # every value ends in one column
    assert all(ln.split()[-1].isdigit() for ln in rows)


def test_run_default_backend_is_native(images, capsys):
    status, out, _ = call(["run", "--image", images["hi"], "--format", "json"], capsys)
    assert status == 0 and json.loads(out)["backend"] == "native"


# ---------------------------------------------------------------------------
# failing guests: ok false, reason names EIP and instruction, exit 1
# ---------------------------------------------------------------------------

def check_failed(status, out, err, eip, insn, also=()):
    assert "Traceback" not in out + err
    assert status == 1, (status, err)
    data = json.loads(out)
    assert RUN_KEYS <= set(data), RUN_KEYS - set(data)
    assert data["ok"] is False
    assert data["exit_status"] is None
    assert data["matches_native"] is False
    reason = data["reason"]
    assert f"{addr(eip)}: {insn}" in reason, reason
    for word in also:
        assert word in reason, reason
    return data


def test_ud2_without_handler_subprocess(images, tmp_path):
    p = vl("run", "--image", images["ud2"], "--format", "json", cwd=tmp_path)
    check_failed(p.returncode, p.stdout, p.stderr, images["start"], "ud2")


def test_ud2_without_handler_in_process(images, capsys):
    status, out, err = call(["run", "--image", images["ud2"], "--format", "json"], capsys)
    check_failed(status, out, err, images["start"], "ud2")


def test_ud2_with_no_idt_at_all(images, capsys):
    status, out, err = call(["run", "--image", images["raw_ud2"], "--format", "json"], capsys)
    check_failed(status, out, err, 0x100000, "ud2")


def test_halt_with_interrupts_disabled_subprocess(images, tmp_path):
    p = vl("run", "--image", images["hlt"], "--format", "json", cwd=tmp_path)
    check_failed(p.returncode, p.stdout, p.stderr, images["start"] + 1, "hlt")


def test_halt_with_interrupts_disabled_in_process(images, capsys):
    status, out, err = call(["run", "--image", images["hlt"], "--format", "json"], capsys)
    check_failed(status, out, err, images["start"] + 1, "hlt")


def test_failure_text_format_exits_1(images, capsys):
    status, out, err = call(["run", "--image", images["hlt"]], capsys)
    assert status == 1 and "Traceback" not in out + err
    assert "FAILED" in out
    assert f"{addr(images['start'] + 1)}: hlt" in out


def test_spin_hits_host_time_budget(images, tmp_path):
    p = vl("run", "--image", images["spin"], "--format", "json", "--timeout", "1",
           cwd=tmp_path, timeout=300)
    data = check_failed(p.returncode, p.stdout, p.stderr, images["start"], "jmp",
                        also=("budget",))
    assert "host-time budget of 1" in data["reason"], data["reason"]


def test_max_exits_budget(images, capsys):
    status, out, err = call(["run", "--image", images["many"], "--max-exits", "5",
                             "--format", "json"], capsys)
    assert status == 1 and "Traceback" not in out + err
    data = json.loads(out)
    assert data["ok"] is False and data["exit_status"] is None
    assert "exit budget" in data["reason"]
    assert "5" in data["reason"]
    assert data["console"] == "AAAAA"           # five exits allowed, the sixth stops it


def test_max_exits_subprocess(images, tmp_path):
    p = vl("run", "--image", images["many"], "--max-exits", "5", "--format", "json",
           cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    data = json.loads(p.stdout)
    assert data["ok"] is False and "exit budget" in data["reason"]


def test_max_exits_reason_names_the_exiting_instruction(images, capsys):
    """Like every failure reason, the exit-budget one names the guest EIP of the
    instruction that exited (the `out`), not a stale saved EIP."""
    status, out, err = call(["run", "--image", images["many"], "--max-exits", "5",
                             "--format", "json"], capsys)
    reason = json.loads(out)["reason"]
    assert f"{addr(images['out_at'])}: out dx, al" in reason, reason


def test_generous_max_exits_lets_the_guest_finish(images, capsys):
    status, out, err = call(["run", "--image", images["many"], "--max-exits", "1000",
                             "--format", "json"], capsys)
    assert status == 0, out
    data = json.loads(out)
    assert data["ok"] is True and data["exit_status"] == 0
    assert data["console"] == "A" * 100


def test_every_option_says_what_it_is_and_its_default():
    """--help of every command explains each argument; an option with a
    default that is not obvious (a format, a profile, a scale) names it."""
    import argparse
    from analysis.profile import DEFAULT
    from virtlab.cli import _parser
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if "-h" in action.option_strings:
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            assert action.help, f"virtlab {command} {name} has no help"
            if action.dest == "format" and action.default is not None:   # (bench's: by terminal)
                assert f"(default {action.default})" in action.help, (command, action.help)
            if action.dest == "profile":
                assert f"(default {DEFAULT})" in action.help, command
            if action.dest == "scale" and action.default is None:
                assert "default: the workload's own" in action.help, command
