"""Figure file names, kept apart from analysis/plots.py so that the command
line can check a name before a guest runs without importing matplotlib.

Every command that draws (bench --plot, report --figures, sensitivity --plot)
accepts the same formats, chosen by the file name's extension."""
from pathlib import Path

FORMATS = ("png", "svg", "pdf")
# The files `bench --plot out.png` stands for (out-overhead.png, ...); a
# report writes these and a sensitivity figure.
BENCH_FIGURES = ("overhead", "nano", "breakdown")


def figure_format(path):
    """The format a figure file name asks for; ValueError for any other."""
    fmt = Path(str(path)).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"a figure file name must end in "
                         f"{', '.join('.' + f for f in FORMATS)}, not '{path}'")
    return fmt


def figure_paths(path, names):
    """out.png -> {name: out-NAME.png}: one file per figure, beside `path`."""
    p = Path(path)
    figure_format(p)
    return {n: p.with_name(f"{p.stem}-{n}{p.suffix}") for n in names}
