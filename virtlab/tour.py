"""The guided tour: a reading order through the source of each technique.

lguest's source carries numbered comments ("[H:010]", "[G:020]") that a
reader follows from file to file, so that the code reads as one story.  Ours
are the same idea: a comment whose first line begins with a marker,
"[tour " then a technique and a number then "]", written as a comment of the
file's language ("#" in Python, "/*" in the guest's C), is one stop of that
technique's tour, and the rest of the line is its title.  One comment may be
a stop of several tours when the techniques share the code: the marker then
lists several pairs, separated by commas ("trap 90, hw 70").  Within a tour
the numbers give the order and leave room for stops added later; the rest of
the comment, up to the code it introduces, is what the stop says.

The stops are found in the core (virtlab/), the guest kernel's sources
(workloads/) and the package of each installed back end, so a third party's
back end can bring a tour of its own.  `virtlab tour [TECHNIQUE]` prints
them; tests/test_tour.py checks that each technique's tour is there, whole
and in order.
"""
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import backend as backends

# The order in which a class meets the techniques: the baseline, the classic
# VMM, the hardware's answer to it, the software answer, and changing the guest.
READING_ORDER = ("native", "trap", "hw", "hw-npt", "bt", "pv")
SUFFIXES = (".py", ".c", ".h", ".S")

MARKER = re.compile(r"^\s*(?:#|/\*+|\*|//)\s*\[tour ((?:[a-z][\w-]* \d+)"
                    r"(?:, [a-z][\w-]* \d+)*)\]\s*(.*?)\s*(?:\*/)?$")
_COMMENT = re.compile(r"^\s*(?:#|/\*+|\*(?!/)|//)\s?(.*?)\s*(?:\*/)?$")
_END = re.compile(r"\*/\s*$")


class TourError(ValueError):
    """A marker that contradicts another, or a technique with no tour."""


@dataclass(frozen=True)
class Stop:
    technique: str
    number: int
    path: str                 # relative to the directory that holds the packages
    line: int
    title: str                # the rest of the marker's line
    text: tuple = field(default=(), compare=False)   # the comment's further lines

    def where(self):
        return f"{self.path}:{self.line}"


def packages():
    """The package directories the tour reads: the core, the guest, and each
    installed back end's top-level package."""
    import virtlab
    import workloads
    roots = {Path(virtlab.__file__).parent, Path(workloads.__file__).parent}
    # Found, not imported: a back end that fails to import has no tour, but
    # does not stop the others'.
    for top in set(backends.packages().values()):
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.submodule_search_locations:
            roots.update(Path(p) for p in spec.submodule_search_locations)
    return sorted(roots)


def _sources(root):
    return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def stops_in(path, shown_as):
    """The stops whose markers are in the file at `path`."""
    lines = path.read_text(errors="replace").splitlines()
    found = []
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        text = _rest_of_comment(lines, i)
        for pair in m.group(1).split(", "):
            technique, number = pair.split(" ")
            found.append(Stop(technique, int(number), shown_as, i + 1, m.group(2), text))
    return found


def _rest_of_comment(lines, i):
    """The lines of the marker's comment after the marker line."""
    if _END.search(lines[i]):
        return ()
    c_block = "/*" in lines[i]
    text = []
    for line in lines[i + 1:]:
        m = _COMMENT.match(line)
        if not m or (not c_block and not line.lstrip().startswith("#")):
            break
        if m.group(1):
            text.append(m.group(1))
        if c_block and _END.search(line):
            break
    return tuple(text)


def all_stops():
    """Every stop of every tour, checked: a technique's numbers are unique."""
    stops = []
    for root in packages():
        for path in _sources(root):
            stops += stops_in(path, path.relative_to(root.parent).as_posix())
    seen = {}
    for s in stops:
        other = seen.setdefault((s.technique, s.number), s)
        if other is not s:
            raise TourError(f"two stops numbered {s.number} in the tour of {s.technique}: "
                            f"{other.where()} and {s.where()}")
    return sorted(stops, key=lambda s: (_rank(s.technique), s.technique, s.number))


def _rank(technique):
    return READING_ORDER.index(technique) if technique in READING_ORDER else len(READING_ORDER)


def techniques(stops=None):
    """The techniques that have a tour, in reading order."""
    return list(dict.fromkeys(s.technique for s in (stops or all_stops())))


def tour(technique=None):
    """The stops of one technique's tour, or of every tour, in order."""
    stops = all_stops()
    if technique is None:
        return stops
    chosen = [s for s in stops if s.technique == technique]
    if not chosen:
        raise TourError(f"no tour for '{technique}' (tours: {', '.join(techniques(stops))})")
    return chosen
