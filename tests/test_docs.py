"""Citations in code and documentation point at files that ship with virtlab.

Comments and docs explain *why* with a citation ("docs/unicorn.md, item 8").  A
citation of a file that is not in the repository (a private notes/ or reference/
directory) teaches nothing to the reader who has only the repository, so:

  - no tracked source or doc cites a notes/... or reference/... path that is not
    in the repository;
  - every docs/<name>.md that is cited exists;
  - every "docs/unicorn.md, item N" names an item that docs/unicorn.md has;
  - relative links between the markdown files resolve.
"""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED_DIRS = ("virtlab", "trap_emulate", "analysis", "workloads", "docs")
SCANNED_FILES = ("README.md",)
SUFFIXES = (".py", ".toml", ".md")

# A path under notes/ or reference/ (not part of a longer word or path).
OUTSIDE = re.compile(r"(?<![\w./-])(?:notes|reference)/[\w./-]*[\w-]")
# The two files these citations used to name, however they are written.
OUTSIDE_NAMES = re.compile(r"\b(?:unicorn-x86|cost-data)\.md\b")
DOC = re.compile(r"(?<![\w./-])docs/([\w.-]+?\.md)\b")
# "docs/unicorn.md, item 8" (or "items 2"), possibly wrapped across comment lines.
ITEM = re.compile(r"docs/unicorn\.md,(?:[\s#*]|//)*items?(?:[\s#*]|//)+(\d+)")
ITEM_HEADING = re.compile(r"^### (\d+)\. \S", re.M)
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def scanned_files():
    """The tracked .py/.toml/.md files of the scanned parts of the repository
    (every such file on disk when this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "--", *SCANNED_DIRS, *SCANNED_FILES],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        paths = [ROOT / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for d in SCANNED_DIRS for p in (ROOT / d).rglob("*")]
        paths += [ROOT / f for f in SCANNED_FILES]
    return sorted(p for p in paths if p.suffix in SUFFIXES and p.is_file())


def _line(text, pos):
    return text.count("\n", 0, pos) + 1


def outside_citations(text):
    """(position, cited text) of every citation of a path not in the repository."""
    found = [(m.start(), m.group()) for m in OUTSIDE.finditer(text)
             if not (ROOT / m.group()).exists()]
    found += [(m.start(), m.group()) for m in OUTSIDE_NAMES.finditer(text)]
    return sorted(found)


def unicorn_items():
    return [int(n) for n in ITEM_HEADING.findall((ROOT / "docs/unicorn.md").read_text())]


@pytest.fixture(scope="module")
def files():
    found = scanned_files()
    assert any(p.name == "delivery.py" for p in found), "scanned no source files"
    return [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in found]


def test_the_checks_catch_what_they_should():
    # (The old file names are split so that `git grep` for them finds nothing here.)
    old = "unicorn-x86" + ".md"
    text = (f"see notes/facts.md, item 1\n# (reference/papers.md)\n# as in {old}\n"
            "# docs/unicorn.md,\n#   item 12\nsomething/notes/x.md is not one\n")
    assert [c for _, c in outside_citations(text)] == [
        "notes/facts.md", "reference/papers.md", old]
    assert ITEM.findall(text) == ["12"]
    assert DOC.findall(text) == ["unicorn.md"]


def test_no_citation_of_files_outside_the_repository(files):
    bad = [f"{name}:{_line(text, pos)}: {cited}"
           for name, text in files for pos, cited in outside_citations(text)]
    assert not bad, "cites files that are not in the repository:\n" + "\n".join(bad)


def test_cited_docs_exist(files):
    bad = [f"{name}:{_line(text, m.start())}: docs/{m.group(1)}"
           for name, text in files for m in DOC.finditer(text)
           if not (ROOT / "docs" / m.group(1)).is_file()]
    assert not bad, "cites docs that do not exist:\n" + "\n".join(bad)


def test_unicorn_items_are_numbered_1_to_n():
    items = unicorn_items()
    assert items, "docs/unicorn.md has no '### N. ...' items"
    assert items == list(range(1, len(items) + 1))


def test_cited_unicorn_items_exist(files):
    items = set(unicorn_items())
    cited = [(name, _line(text, m.start()), int(m.group(1)))
             for name, text in files for m in ITEM.finditer(text)]
    assert cited, "no 'docs/unicorn.md, item N' citation found (is the pattern right?)"
    bad = [f"{name}:{line}: item {n}" for name, line, n in cited if n not in items]
    assert not bad, ("cites items docs/unicorn.md does not have (it has 1-"
                     f"{max(items)}):\n" + "\n".join(bad))


def test_markdown_links_resolve(files):
    bad = []
    for name, text in files:
        if not name.endswith(".md"):
            continue
        for m in MD_LINK.finditer(text):
            target = m.group(1).split("#", 1)[0]
            if not target or re.match(r"[a-z]+:", target):
                continue                     # an anchor or a URL
            if not ((ROOT / name).parent / target).exists():
                bad.append(f"{name}:{_line(text, m.start())}: {m.group(1)}")
    assert not bad, "links to files that do not exist:\n" + "\n".join(bad)
