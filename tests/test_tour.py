"""The guided tour (virtlab/tour.py, `virtlab tour`): every technique's tour
is there, whole, in order, and each stop is a comment in front of code.

TOURS is the reading order itself: each technique's stops, by number and
file.  A stop added, moved to another file or renumbered changes the tour a
class follows, so it changes this list too; that is deliberate.  TOPICS are
the subjects every tour must reach where the technique has them.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from virtlab import backend as backends
from virtlab import tour
from virtlab.cli import main

ROOT = Path(__file__).resolve().parent.parent

TOURS = {
    "native": [
        (10, "virtlab/machine.py"),
        (20, "virtlab/machine.py"),
        (30, "virtlab/machine.py"),
        (40, "virtlab/machine.py"),
        (50, "virtlab/native.py"),
        (60, "virtlab/delivery.py"),
        (70, "virtlab/delivery.py"),
        (80, "virtlab/native.py"),
        (90, "virtlab/guest_events.py"),
        (100, "virtlab/guest_events.py"),
        (110, "virtlab/harness.py"),
    ],
    "trap": [
        (10, "trap_emulate/trap.py"),
        (20, "virtlab/vmm/compressed.py"),
        (25, "virtlab/vmm/rings.py"),
        (27, "virtlab/vmm/rings.py"),
        (30, "virtlab/machine.py"),
        (40, "virtlab/vmm/compressed.py"),
        (50, "virtlab/decode.py"),
        (60, "trap_emulate/trap.py"),
        (65, "virtlab/vmm/monitor.py"),
        (70, "virtlab/vmm/emulate.py"),
        (80, "virtlab/vmm/vcpu.py"),
        (90, "virtlab/vmm/compressed.py"),
        (100, "virtlab/vmm/reflect.py"),
        (110, "virtlab/delivery.py"),
        (120, "virtlab/vmm/paging.py"),
        (130, "virtlab/vmm/shadow.py"),
        (140, "virtlab/vmm/shadow.py"),
        (150, "virtlab/vmm/shadow.py"),
        (155, "virtlab/vmm/pae.py"),
        (160, "virtlab/guest_events.py"),
        (170, "virtlab/vmm/sensitive.py"),
    ],
    "hw": [
        (10, "trap_emulate/hw.py"),
        (15, "trap_emulate/hw.py"),
        (20, "trap_emulate/hw.py"),
        (25, "trap_emulate/hw.py"),
        (30, "virtlab/intercept.py"),
        (40, "virtlab/intercept.py"),
        (45, "virtlab/decode.py"),
        (50, "trap_emulate/hw.py"),
        (60, "virtlab/vmm/emulate.py"),
        (70, "trap_emulate/hw.py"),
        (80, "virtlab/vmm/paging.py"),
        (90, "virtlab/vmm/shadow.py"),
        (100, "virtlab/vmm/shadow.py"),
        (110, "virtlab/vmm/shadow.py"),
        (115, "virtlab/vmm/pae.py"),
        (120, "virtlab/delivery.py"),
        (130, "virtlab/guest_events.py"),
        (140, "trap_emulate/hw.py"),
    ],
    "hw-npt": [
        (10, "trap_emulate/hw.py"),
        (15, "trap_emulate/hw.py"),
        (20, "virtlab/vmm/paging.py"),
        (25, "trap_emulate/hw.py"),
        (30, "virtlab/intercept.py"),
        (40, "virtlab/intercept.py"),
        (45, "trap_emulate/hw.py"),
        (50, "virtlab/vmm/emulate.py"),
        (60, "virtlab/vmm/paging.py"),
        (70, "trap_emulate/hw.py"),
        (80, "virtlab/delivery.py"),
    ],
    "bt": [
        (10, "bt/backend.py"),
        (20, "bt/layout.py"),
        (30, "virtlab/vmm/compressed.py"),
        (40, "bt/backend.py"),
        (45, "bt/backend.py"),
        (50, "bt/translate.py"),
        (60, "bt/translate.py"),
        (70, "bt/templates.py"),
        (80, "bt/cache.py"),
        (85, "virtlab/machine.py"),
        (90, "bt/callouts.py"),
        (95, "virtlab/vmm/emulate.py"),
        (100, "bt/callouts.py"),
        (110, "bt/translate.py"),
        (120, "bt/callouts.py"),
        (140, "bt/backend.py"),
        (145, "bt/backend.py"),
        (150, "virtlab/vmm/compressed.py"),
        (155, "virtlab/vmm/reflect.py"),
        (160, "virtlab/delivery.py"),
        (170, "virtlab/guest_events.py"),
        (175, "virtlab/vmm/paging.py"),
        (177, "virtlab/vmm/pae.py"),
        (180, "bt/backend.py"),
        (190, "bt/cache.py"),
        (200, "bt/backend.py"),
        (210, "bt/backend.py"),
    ],
    "pv": [
        (10, "workloads/kernel/priv_pv.h"),
        (20, "pv/builder.py"),
        (30, "pv/layout.py"),
        (40, "pv/backend.py"),
        (50, "workloads/kernel/pv/start.c"),
        (60, "workloads/kernel/priv_pv.h"),
        (70, "workloads/kernel/pv/xen.h"),
        (80, "pv/backend.py"),
        (90, "pv/hypercalls.py"),
        (100, "workloads/kernel/pv/mmu.c"),
        (110, "pv/mmu.py"),
        (120, "pv/frames.py"),
        (130, "pv/frames.py"),
        (140, "pv/hypercalls.py"),
        (150, "pv/traps.py"),
        (160, "pv/traps.py"),
        (165, "virtlab/delivery.py"),
        (170, "pv/backend.py"),
        (180, "pv/events.py"),
        (185, "workloads/kernel/pv/blkfront.c"),
        (190, "pv/blkback.py"),
        (200, "pv/backend.py"),
        (210, "pv/events.py"),
        (220, "pv/traps.py"),
        (230, "workloads/kernel/pv/evtchn.c"),
        (240, "pv/invariants.py"),
    ],
}

# Where each tour reaches the subjects of a lesson on VMMs: boot, the first
# exit, an emulated instruction, a reflected fault, shadow (or nested) paging,
# a translation, a hypercall, an event upcall (or an injected interrupt).
TOPICS = {
    "boot": {"native": 20, "trap": 20, "hw": 15, "hw-npt": 15, "bt": 30, "pv": 20},
    "first exit": {"native": 40, "trap": 30, "hw": 40, "hw-npt": 40, "bt": 85, "pv": 80},
    "emulated instruction": {"trap": 70, "hw": 60, "hw-npt": 50, "bt": 95},
    "reflected fault": {"trap": 90, "bt": 140, "pv": 160},
    "paging": {"trap": 120, "hw": 80, "hw-npt": 20, "bt": 175, "pv": 120},
    "translation": {"bt": 60},
    "hypercall": {"pv": 90},
    "event or interrupt": {"native": 90, "trap": 160, "hw": 130, "bt": 170, "pv": 220},
}


@pytest.fixture(scope="module")
def stops():
    return tour.all_stops()


def test_every_installed_technique_of_virtlab_has_its_tour(stops):
    have = set(tour.techniques(stops))
    for name in backends.bundled():
        assert name in have, name
    assert tour.techniques(stops) == [t for t in tour.READING_ORDER if t in have]


@pytest.mark.parametrize("technique", sorted(TOURS))
def test_the_tour_is_whole_and_in_order(stops, technique):
    mine = [(s.number, s.path) for s in stops if s.technique == technique]
    assert mine == TOURS[technique]
    assert [n for n, _ in mine] == sorted(n for n, _ in mine)


def test_no_two_stops_share_a_number(stops):
    seen = [(s.technique, s.number) for s in stops]
    assert len(seen) == len(set(seen))


def test_a_shared_number_is_refused(tmp_path):
    f = tmp_path / "a.py"
    f.write_text("# [tour trap 10] one\nx = 1\n# [tour trap 10] two\ny = 2\n")
    twice = tour.stops_in(f, "a.py")
    assert [s.number for s in twice] == [10, 10]


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_each_tour_reaches_its_topics(stops, topic):
    numbers = {(s.technique, s.number) for s in stops}
    for technique, number in TOPICS[topic].items():
        assert (technique, number) in numbers, (topic, technique, number)


def _source(stop):
    for root in tour.packages():
        path = root.parent / stop.path
        if path.is_file():
            return path.read_text().splitlines()
    raise AssertionError(f"{stop.where()}: no such file")


def test_each_stop_is_a_titled_comment_in_front_of_code(stops):
    for s in stops:
        lines = _source(s)
        marker = lines[s.line - 1]
        assert re.search(rf"\[tour [^]]*\b{re.escape(s.technique)} {s.number}\b", marker), s
        assert len(s.title) >= 8 and s.title.endswith((".", "?", ":")), s
        # the comment ends in code: a definition, a statement or a declaration
        after = s.line
        comment = r"\s*#" if s.path.endswith(".py") else r"\s*(\*|/\*)"
        while after < len(lines) and re.match(comment, lines[after]):
            after += 1
        assert after < len(lines) and lines[after].strip(), f"{s.where()}: no code after it"


def test_a_comment_gives_its_text():
    stop = next(s for s in tour.tour("pv") if s.number == 100)
    assert stop.path.endswith("pv/mmu.c")             # the guest kernel's C is on the tour
    assert stop.text and "mmu_update" in " ".join(stop.text)


def _cli(*args):
    from io import StringIO
    out = StringIO()
    rc = main(["tour", *args], out=out)
    return rc, out.getvalue()


def test_the_command_prints_the_stops_in_order_with_file_and_line():
    rc, text = _cli("trap")
    assert rc == 0
    rows = [ln.split() for ln in text.splitlines()[1:] if ln.strip()]
    assert [int(r[0]) for r in rows] == [n for n, _ in TOURS["trap"]]
    assert [r[1].rsplit(":", 1)[0] for r in rows] == [p for _, p in TOURS["trap"]]
    first = tour.tour("trap")[0]
    assert f"{first.where()}" in text and first.title in text


def test_without_a_technique_every_tour_in_reading_order():
    rc, text = _cli()
    heads = [ln.split(":")[0] for ln in text.splitlines() if ln and not ln.startswith(" ")]
    assert rc == 0 and heads == list(TOURS)


def test_full_and_json():
    rc, text = _cli("bt", "--full")
    assert rc == 0 and "keystone" in text
    rc, text = _cli("pv", "--format", "json")
    data = json.loads(text)
    assert [d["stop"] for d in data] == [n for n, _ in TOURS["pv"]]
    assert {"technique", "stop", "file", "line", "title", "text"} <= set(data[0])


def test_an_unknown_technique_is_one_line_and_exit_2():
    p = subprocess.run([sys.executable, "-m", "virtlab", "tour", "nosuch"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "no tour for 'nosuch'" in p.stderr
