"""examples/compare.ipynb runs headless, on a small bench, so that it never rots.

The notebook is executed by nbclient in a fresh kernel, with a cell added
after its parameter cell that makes the bench small (three cheap workloads);
no cell may fail and each figure cell (tagged "figure") must show an image.  Skipped only when
the optional test dependencies (nbclient, nbformat, ipykernel) are missing.
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "compare.ipynb"

# Four back ends, three cheap workloads at their default scales, whose
# instruction counts ship with the images: nothing is counted, as in a user's
# first run, and it takes seconds.  nano.crwr makes hw record exit.priv, so
# the default sweep is not flat.
SMALL = """WORKLOADS = "nano.cli,nano.crwr,micro.null_call"
BACKENDS = "native,trap,hw,bt"
SCALE = None
SWEEP_RANGE = "0:6000:5"
"""
FIGURES = ("nano_figure", "overhead_figure", "breakdown_figure", "sensitivity_figure")


def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def tagged(cell, tag):
    return tag in cell.metadata.get("tags", [])


def test_committed_with_outputs_cleared():
    nb = notebook()
    nbformat.validate(nb)
    for cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_parameters_come_first_and_set_what_the_test_overrides():
    cells = code_cells(notebook())
    assert tagged(cells[0], "parameters")
    for line in SMALL.splitlines():
        name = line.split("=")[0].strip()
        assert f"\n{name} = " in "\n" + cells[0].source, name


def test_figures_are_drawn_by_the_analysis_not_by_the_notebook():
    """Each figure cell calls analysis/plots.py; none draws with matplotlib
    itself, so the notebook shows the figures `virtlab report` makes."""
    figure_cells = [c for c in code_cells(notebook()) if tagged(c, "figure")]
    assert [next(f for f in FIGURES if f"plots.{f}(" in c.source) for c in figure_cells] \
        == list(FIGURES)
    for cell in code_cells(notebook()):
        assert "plt." not in cell.source and "matplotlib.pyplot" not in cell.source


@pytest.fixture
def executed(tmp_path, monkeypatch):
    """The notebook run in a kernel on this checkout, at the small scale."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("VIRTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    nb = notebook()
    at = next(i for i, c in enumerate(nb.cells) if tagged(c, "parameters"))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(SMALL))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"a cell of {NOTEBOOK.name} failed:\n{exc}")
    return nb


def test_runs_headless_and_every_figure_cell_shows_an_image(executed):
    cells = code_cells(executed)
    for cell in cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:60]
    figures = [c for c in cells if tagged(c, "figure")]
    assert len(figures) == len(FIGURES)
    for cell in figures:
        images = [o for o in cell.outputs
                  if o.output_type in ("display_data", "execute_result")
                  and "image/png" in o.get("data", {})]
        assert len(images) == 1, (cell.source, [o.output_type for o in cell.outputs])
        assert len(images[0]["data"]["image/png"]) > 5000         # base64 of a real drawing
    ran = next(c for c in cells if "bench_runs(" in c.source)
    printed = "".join(o.get("text", "") for o in ran.outputs if o.output_type == "stream")
    assert "12 runs, 0 failed" in printed, printed
