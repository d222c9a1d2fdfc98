"""The bench's tables as a reader meets them: the compact view a terminal gets by
default, the numbers in the full tables, and LaTeX that compiles.

The bench runs no guest here: `virtlab.matrix.run_matrix` is replaced by
hand-made results of every workload under six back ends (a bench as wide as
the real one), so that only the rendering is under test.
"""
import io
import re
import shutil
import subprocess

import pytest

import virtlab.matrix
from analysis import latex, numbers
from analysis.table import COLUMNS
from virtlab.cli import main
from virtlab.result import RunResult
from workloads.catalog import CATALOG

BACKENDS = ["native", "bt", "hw", "hw-npt", "pv", "trap"]
NASTY = r"guest said: a_b & c% $d #e ^f ~g {h} \i <j> |k µ"


def result(workload, backend, n):
    """A run of `n` guest instructions and no event: modeled cycles are n x CPI."""
    ok = (workload, backend) != ("macro.disk", "pv")
    roi = n * 3 // 4
    return RunResult(
        workload=workload, backend=backend, scale=1, ok=ok, exit_status=0 if ok else None,
        reason="" if ok else NASTY, console="x" if backend != "trap" else "y",
        instructions=n if ok else None, roi_instructions=roi if ok else None,
        host_seconds=n / 1e7, roi_host_seconds=roi / 1e7 if ok else None,
        host_samples=[n / 1e7] * 3,
        roi_host_samples=[roi / 1e7, roi / 2e7, roi / 1e7] if ok else [], iterations=10)


def bench_results():
    rs = [result(w, b, 1000 * (i + 1) * (j + 1) + 7)
          for i, w in enumerate(CATALOG) for j, b in enumerate(BACKENDS)]
    natives = {r.workload: r for r in rs if r.backend == "native"}
    for r in rs:
        r.matches_native = r.ok and r.console == natives[r.workload].console
    return rs


@pytest.fixture
def fake_matrix(monkeypatch):
    monkeypatch.setattr(virtlab.matrix, "run_matrix", lambda *a, **kw: bench_results())


class Terminal(io.StringIO):
    def isatty(self):
        return True


def bench(*args, out=None):
    out = out if out is not None else io.StringIO()
    status = main(["bench", *args], out=out)
    return status, out.getvalue()


# -- the compact view --------------------------------------------------------------------

def test_a_terminal_gets_the_compact_view_by_default(fake_matrix):
    status, text = bench(out=Terminal())
    assert status == 0
    lines = text.splitlines()
    assert lines[0].startswith("Modeled overhead, x native (profile p4-2006")
    header = next(ln for ln in lines if ln.split()[:1] == ["workload"])
    assert header.split() == ["workload", "native", "cycles/iter", "bt", "hw", "hw-npt", "pv",
                              "trap"]
    body = [ln for ln in lines if ln.split()[:1] and ln.split()[0] in CATALOG]
    assert [ln.split()[0] for ln in body] == list(CATALOG)          # one row per workload
    assert max(map(len, [header, *body])) <= 80, "the table must fit an 80-column terminal"
    assert "host" not in text.lower()                                # only on request


def test_compact_cells_are_overheads_with_marks_explained(fake_matrix):
    _, text = bench("--format", "compact")
    row = next(ln.split() for ln in text.splitlines() if ln.startswith(" nano.syscall"))
    # nano.syscall is workload 1: native runs 1007 instructions, back end j 1000*(j+1)+7;
    # the ROI is three quarters of that, the CPI the same, so the ratio is theirs.
    natives_roi = 1007 * 3 // 4
    expect = [numbers.ratio((1000 * (j + 1) + 7) * 3 // 4 / natives_roi) for j in range(1, 6)]
    assert row[2:] == expect[:4] + [expect[4] + "*"]    # trap's console differs: marked
    assert f"{round(natives_roi * 1.5 / 10):,}" == row[1]   # native cycles per iteration
    assert "* output differs from native's" in text
    disk = next(ln.split() for ln in text.splitlines() if ln.startswith(" macro.disk"))
    assert disk[5] == "failed"
    assert f"failed: macro.disk under pv: {NASTY}" in text


def test_rows_below_native_are_marked_and_said_why(monkeypatch):
    # nano.in with the same 1000 ROI instructions everywhere and 100 port
    # accesses: native pays 3209 cycles for each (a bus access), trap's
    # emulated device 2480 and bt's callout 1704, hw's exit more than native.
    def runs(*_, **__):
        out = []
        for backend, events in (("native", ["native.io"]), ("bt", ["bt.callout", "bt.callout.io"]),
                                ("hw", ["exit.io"]), ("trap", ["exit.io"])):
            r = result("nano.in", backend, 1000)
            r.roi_instructions = 1000
            r.counters = r.roi_counters = dict.fromkeys(events, 100)
            r.matches_native = True
            out.append(r)
        return out
    monkeypatch.setattr(virtlab.matrix, "run_matrix", runs)
    _, text = bench("--format", "compact")
    native = 1000 * 1.5 + 100 * 3209
    row = next(ln.split() for ln in text.splitlines() if ln.startswith(" nano.in"))
    assert row[2:] == [numbers.ratio((1500 + 100 * 1704) / native) + "<",
                       row[3], numbers.ratio((1500 + 100 * 2480) / native) + "<"]
    assert not row[3].endswith("<") and float(row[3]) > 1
    note = text[text.index("< faster than native"):]
    assert "native pays for native.io, 3,209 cycles each" in " ".join(note.split())
    assert "    bt: nano.in\n    trap: nano.in\n" in note and "hw:" not in note
    assert "virtlab report itemises each row's bill" in note
    assert max(map(len, text.splitlines())) <= 80
    # The full table, for a file, says the same under the table.
    _, md = bench("--format", "markdown")
    table, _, after = md.partition("\n\n")
    assert table.startswith("| workload ") and "<" not in table
    assert after.startswith("Rows whose modeled_overhead is below 1.00 are faster than native "
                            "by the model, not by measurement: native pays for native.io, "
                            "3,209 cycles each")
    assert "bt on nano.in; trap on nano.in." in after and "hw on" not in after
    _, csv = bench("--format", "csv")
    assert "faster than native" not in csv


def test_no_row_below_native_no_note(fake_matrix):
    _, text = bench("--format", "compact")
    cells = [c for ln in text.splitlines() if ln.split()[:1] and ln.split()[0] in CATALOG
             for c in ln.split()[1:]]
    assert cells and not [c for c in cells if c.endswith("<")]
    assert "faster than native" not in text
    _, md = bench("--format", "markdown")
    assert "faster than native" not in md and md.count("\n\n") == 0


def test_host_adds_the_emulator_table(fake_matrix):
    _, text = bench("--format", "compact", "--host")
    assert "Host overhead (emulator), x native, median of 3 runs" in text
    assert "the time this tool took on the emulated CPU" in text
    table = [ln for ln in text.splitlines() if ln.startswith(" ") and not ln.startswith("  ")]
    assert len(table) == 2 * (2 + len(CATALOG)) and max(map(len, table)) <= 80


def test_a_file_or_a_pipe_gets_the_full_markdown_table(fake_matrix, tmp_path):
    _, piped = bench()                                  # not a terminal
    assert piped.startswith("| workload ")
    dest = tmp_path / "t.md"
    status, shown = bench("--out", str(dest), out=Terminal())   # a file, even from a tty
    assert status == 0 and shown == "" and dest.read_text() == piped


# -- numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, x, shown", [
    (numbers.cycles, 1234567.6, "1,234,568"), (numbers.cycles, 382.0, "382"),
    (numbers.significant, 0.0807234, "0.0807"), (numbers.significant, 0.000123456, "0.000123"),
    (numbers.significant, 12.345, "12.3"), (numbers.significant, 4567.8, "4568"),
    (numbers.significant, 0.0, "0"), (numbers.ratio, 1.004, "1.00"),
    (numbers.significant, 2.4703e-318, "2.47e-318"), (numbers.significant, 5e-10, "5.00e-10"),
    (numbers.significant, 1e-9, "0.00000000100"), (numbers.significant, 3.2e17, "3.20e+17"),
    (numbers.significant, float("inf"), "inf"), (numbers.ratio, float("-inf"), "-inf"),
    (numbers.cycles, float("inf"), "inf"),
    (numbers.ratio, None, "-"), (numbers.cycles, float("nan"), "-"),
])
def test_numbers(fn, x, shown):
    assert fn(x) == shown


def test_markdown_shows_whole_cycles_and_small_microseconds(fake_matrix):
    _, text = bench("--format", "markdown", "--workloads", "nano.syscall")
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    row = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    cell = dict(zip(header, row))
    # native: 1007 instructions at p4's CPI of 1.5, 755 of them in the ROI, 10 iterations
    assert cell["modeled_cycles"] == f"{round(1007 * 1.5):,}"
    assert cell["modeled_cycles_per_iteration"] == f"{round(755 * 1.5 / 10):,}"
    assert cell["modeled_us_per_iteration"] == "0.0298"         # 113.25 cycles at 3.8 GHz
    assert "host_overhead (emulator)" in header and "roi_host_seconds (emulator)" in header


# -- LaTeX --------------------------------------------------------------------------------

TOKEN = re.compile(r"\\(?:[A-Za-z]+(?:\{\})?|[_%&$#{}\\])|.", re.S)
SPECIALS = set("_%&$#^~{}\\")


def check_latex(text, columns):
    """A parser-level check of a booktabs tabular: its structure, the column
    count of every row, and no LaTeX special character left unescaped (the
    check that runs wherever pdflatex does not)."""
    lines = text.rstrip("\n").split("\n")
    spec = re.fullmatch(r"\\begin\{tabular\}\{([lrc]+)\}", lines[0])
    assert spec and len(spec.group(1)) == columns, lines[0]
    assert [lines[1], lines[3], lines[-2], lines[-1]] == \
        [r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"]
    for line in [lines[2], *lines[4:-2]]:
        assert line.endswith(r" \\"), line
        cells, current = [], []
        for tok in TOKEN.findall(line[:-3]):
            assert tok.isascii(), f"non-ASCII {tok!r} in {line!r}"
            if tok == "&":
                cells.append("".join(current))
                current = []
                continue
            assert tok not in SPECIALS, f"unescaped {tok!r} in {line!r}"
            current.append(tok)
        cells.append("".join(current))
        assert len(cells) == columns, line
    return lines


def test_escape_makes_every_special_character_text():
    assert latex.escape("a_b") == r"a\_b"
    assert latex.escape(r"\{}") == r"\textbackslash{}\{\}"
    assert latex.escape("µ") == "?"
    check_latex(latex.tabular(["x_y", NASTY], [["1", NASTY]], [True, False]), 2)


def test_latex_table_is_well_formed(fake_matrix):
    _, text = bench("--format", "latex")
    lines = check_latex(text, len(COLUMNS))
    assert r"host\_overhead (emulator)" in lines[2]
    assert any(latex.escape(NASTY) in ln for ln in lines)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex here "
                    "(apt-get install texlive-latex-base texlive-latex-recommended)")
def test_latex_table_compiles_with_booktabs(fake_matrix, tmp_path):
    _, table = bench("--format", "latex")
    (tmp_path / "table.tex").write_text(table)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[landscape,"
        "margin=5mm]{geometry}\n\\begin{document}\n\\tiny\n\\input{table}\n\\end{document}\n")
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
