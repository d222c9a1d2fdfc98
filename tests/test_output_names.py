"""Two things a name on the command line can mean beyond a plain file.

"-" is standard output, as to most Unix tools: `bench --out -` prints the
table, `bench --save - --out t.md` prints the saved bench; where standard
output cannot hold what is asked (the table and the saved bench at once, a
report with its figures), the command says so in one line before any run.

A saved bench holds one row per workload, back end and scale: a second one
(hand-edited, or two files pasted together) would be a second answer to the
same question, and is refused in one line, not silently dropped.
"""
import json

import pytest

from isolated_cli import cache_dir, in_process  # noqa: F401

from virtlab import outfile


def _one_line(p, *mentions):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtlab: error: "), p.stderr
    for m in mentions:
        assert m in lines[0], (m, lines[0])


@pytest.fixture(scope="module")
def saved(cache_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "bench.json"
    p = in_process(cache_dir, "bench", "--workloads", "nano.cli", "--backends", "trap",
                   "--scale", 3, "--repeat", 1, "--format", "csv", "--save", path)
    assert p.returncode == 0, p.stderr
    return path


def test_dash_is_standard_output_for_the_writer(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outfile.write("-", "text\n")
    outfile.write("-", b"bytes\n")
    assert capsys.readouterr().out == "text\nbytes\n"
    assert outfile.problem("-") is None
    assert list(tmp_path.iterdir()) == []               # no file named "-"


def test_bench_out_dash_prints_the_table(cache_dir, tmp_path):
    p = in_process(cache_dir, "bench", "--workloads", "nano.cli", "--backends", "native",
                   "--scale", 3, "--repeat", 1, "--out", "-", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("| workload") and "nano.cli" in p.stdout
    assert not (tmp_path / "-").exists()


def test_bench_save_dash_prints_the_saved_bench(cache_dir, tmp_path):
    p = in_process(cache_dir, "bench", "--workloads", "nano.cli", "--backends", "native",
                   "--scale", 3, "--repeat", 1, "--save", "-", "--out", tmp_path / "t.md",
                   cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [(r["workload"], r["backend"]) for r in doc["results"]] == [("nano.cli", "native")]
    assert "nano.cli" in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("argv, mentions", [
    (["bench", "--workloads", "nano.cli", "--backends", "native", "--save", "-"], ["--save -"]),
    (["bench", "--workloads", "nano.cli", "--backends", "native", "--save", "-", "--out", "-"],
     ["--save -"]),
])
def test_two_outputs_on_standard_output_are_refused_before_any_run(cache_dir, tmp_path,
                                                                   argv, mentions):
    p = in_process(cache_dir, *argv, cwd=tmp_path)
    _one_line(p, *mentions)
    assert p.stdout == ""


def test_a_report_cannot_go_to_standard_output(cache_dir, saved, tmp_path):
    p = in_process(cache_dir, "report", saved, "--out", "-", cwd=tmp_path)
    _one_line(p, "--out", "standard output")
    assert list(tmp_path.iterdir()) == []


def test_a_second_row_of_the_same_run_is_refused(cache_dir, saved, tmp_path):
    doc = json.loads(saved.read_text())
    rows = doc["results"]
    trap = next(i for i, r in enumerate(rows) if r["backend"] == "trap")
    second = len(rows)
    rows.append(dict(rows[trap], counters={**rows[trap]["counters"], "exit.total": 1}))
    pasted = tmp_path / "pasted.json"
    pasted.write_text(json.dumps(doc))
    for argv in (["report", pasted, "--out", tmp_path / "r.md"],
                 ["sensitivity", pasted, "--event", "exit.priv", "--range", "0:10:3"]):
        p = in_process(cache_dir, *argv)
        _one_line(p, "pasted.json", f"result {second}", "nano.cli", "trap",
                  f"result {trap} is the first")
    assert not (tmp_path / "r.md").exists()


def test_the_same_workload_at_two_scales_is_two_rows(cache_dir, saved, tmp_path):
    doc = json.loads(saved.read_text())
    doc["results"] += [dict(r, scale=r["scale"] + 1) for r in doc["results"]]
    both = tmp_path / "both.json"
    both.write_text(json.dumps(doc))
    p = in_process(cache_dir, "report", both, "--out", tmp_path / "r.md")
    assert p.returncode == 0, p.stderr
