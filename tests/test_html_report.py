"""`virtlab report SAVED --out report.html`: one self-contained page.

Always: the page is parsed and checked for what self-contained means (every
image carries its data, nothing names another file or host, the sorting
script is in the page) and for the same content as the markdown report made
from the same file.  When Chromium is installed, the page is also opened in
it (tests/chromium.py): it loads without a console error, its tables and
figures are there, a click on a heading sorts, and a screenshot is taken.

No guest runs: the saved bench is made by hand.  Nothing looks at times.
"""
import base64
import html
import io
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

import chromium
from virtlab.cli import main
from virtlab.result import RunResult, save_results

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("overhead", "nano", "breakdown", "sensitivity")
# A failure whose reason holds markup and a pipe: escaped, kept in one cell.
REASON = "triple fault at 0xc0100d90 <script>alert(1)</script> | see the trace"


def run(workload, backend, roi, ok=True):
    return RunResult(workload=workload, backend=backend, scale=1, ok=ok, exit_status=0,
                     matches_native=ok, counters=dict(roi), roi_counters=dict(roi),
                     host_seconds=0.2, roi_host_seconds=0.1 if ok else None,
                     iterations=10 if ok else 0, instructions=1500, roi_instructions=1000,
                     reason="" if ok else REASON)


def runs():
    """trap's port exit is cheaper than native's bus access under p4-2006, so
    nano.in under trap is explained as faster than native."""
    return [run("nano.in", "native", {"native.io": 10}), run("nano.in", "trap", {"exit.io": 10}),
            run("nano.in", "hw", {"exit.io": 10}),
            run("nano.cli", "native", {}), run("nano.cli", "trap", {"exit.priv": 20}),
            run("nano.cli", "hw", {}),
            run("micro.null_call", "native", {"native.syscall": 10}),
            run("micro.null_call", "trap", {"reflect.syscall": 10}),
            run("micro.null_call", "hw", {"exit.priv": 10, "native.syscall": 10}),
            run("macro.disk", "native", {"native.io": 40}),
            run("macro.disk", "trap", {}, ok=False)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The same saved bench reported as markdown and as HTML, each in a
    directory of its own: {"md": text, "html": text, "dir": html's directory}."""
    d = tmp_path_factory.mktemp("html-report")
    saved = d / "saved.json"
    save_results(saved, runs(), {"profile": "p4-2006", "provenance": {
        "virtlab": "0.1.0", "command": "virtlab bench --workloads 'nano.*,micro.*'"}})
    out = {}
    for fmt in ("md", "html"):
        (d / fmt).mkdir()
        path = d / fmt / f"report.{fmt}"
        status, text = call(["report", saved, "--out", path])
        assert status == 0
        assert text.startswith(f"wrote {path}\n")
        out[fmt] = path.read_text()
    out["dir"] = d / "html"
    return out


def call(argv):
    """virtlab.cli.main in-process: (status, stdout)."""
    out = io.StringIO()
    return main([str(a) for a in argv], out=out), out.getvalue()


# -- the page, parsed --------------------------------------------------------------

class Page(HTMLParser):
    """What the checks need from a page: its elements with their attributes,
    the text of each heading, the cells of each table, the scripts."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements, self.headings, self.tables, self.scripts = [], [], [], []
        self._open = []             # the elements whose text is being collected
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th") or re.fullmatch(r"h[1-6]", tag) or tag == "script":
            self._open.append([tag, ""])

    def handle_endtag(self, tag):
        if not self._open or self._open[-1][0] != tag:
            return
        tag, text = self._open.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(text.strip())
        elif tag == "script":
            self.scripts.append(text)
        else:
            self.headings.append((tag, text.strip()))

    def handle_data(self, data):
        for item in self._open:
            item[1] += data


@pytest.fixture(scope="module")
def page(made):
    return Page(made["html"])


def markdown_tables(text):
    """Every pipe table of the markdown report: rows of cells, as the page
    shows them (code and bold marks dropped)."""
    tables, cur = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [plain(c) for c in line.strip()[1:-1].split("|")]
            if cur is None:
                cur = [cells]
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur is not None:
            tables.append(cur)
            cur = None
    return tables


def plain(text):
    return re.sub(r"`|\*\*", "", text).strip()


# -- structure (always) --------------------------------------------------------------

def test_one_file_and_nothing_beside_it(made):
    assert sorted(p.name for p in made["dir"].iterdir()) == ["report.html"]


def test_every_figure_is_inline_data(page):
    images = [a for tag, a in page.elements if tag == "img"]
    assert len(images) == len(FIGURES)
    for attrs in images:
        src = attrs.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG) and len(data) > 5000
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200
        assert attrs.get("alt")
    assert [a["alt"].split()[0] for tag, a in page.elements if tag == "img"] == \
        ["overhead", "nano", "breakdown", "sensitivity"]


def test_nothing_outside_the_page_is_named(made, page):
    for tag, attrs in page.elements:
        assert tag not in ("link", "iframe", "object", "embed", "base") or \
            attrs.get("href") == "data:,", (tag, attrs)            # the empty favicon
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:60])
    scripts_and_style = "".join(page.scripts) + re.search(
        r"<style>(.*?)</style>", made["html"], re.S).group(1)
    assert not re.search(r"https?:|//[a-z]|url\(|@import|fetch\(|XMLHttpRequest",
                         scripts_and_style), "the page reaches out"


def test_the_sorting_script_is_in_the_page(page):
    scripts = [a for tag, a in page.elements if tag == "script"]
    assert len(scripts) == 1 and "src" not in scripts[0]
    assert "addEventListener" in page.scripts[0] and "sortable" in page.scripts[0]
    tables = [a for tag, a in page.elements if tag == "table"]
    assert tables and all("sortable" in a.get("class", "") for a in tables)
    buttons = [a for tag, a in page.elements if tag == "button"]
    assert len(buttons) == sum(len(t[0]) for t in page.tables)        # one per heading


def test_markup_in_the_data_is_text(made, page):
    assert made["html"].count("<script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in made["html"]
    failed = next(t for t in page.tables if t[0] == ["workload", "backend", "reason"])
    assert failed[1] == ["macro.disk", "trap", REASON.replace("|", "/")]


# -- the same content as the markdown report -----------------------------------------

def test_same_headings_as_the_markdown(made, page):
    md = [plain(ln.lstrip("#")) for ln in made["md"].splitlines()
          if re.match(r"#{1,3} ", ln)]
    assert [text for tag, text in page.headings] == md
    for section in ("Summary", "Overhead relative to native", "Why some rows are faster",
                    "Where the overhead comes from", "Sensitivity to", "Failed runs",
                    "Profile p4-2006", "Counters", "Provenance of the results"):
        assert any(text.startswith(section) for _, text in page.headings), section


def test_same_tables_as_the_markdown(made, page):
    md = markdown_tables(made["md"])
    assert len(page.tables) == len(md) >= 8
    for html_table, md_table in zip(page.tables, md):
        assert html_table == md_table


def test_same_prose_as_the_markdown(made):
    """Every list item and the paragraphs that explain are on the page, as text."""
    body = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", made["html"])))
    checked = 0
    for line in made["md"].splitlines():
        if line.startswith(("- ", "A row below", "Modeled overhead:", "Clock ")):
            assert plain(line.removeprefix("- ")) in body, line[:80]
            checked += 1
    assert checked >= 8
    assert "command: virtlab bench --workloads 'nano.*,micro.*'" in body


# -- the command line --------------------------------------------------------------

def test_svg_figures_stay_vectors(tmp_path):
    saved = tmp_path / "saved.json"
    save_results(saved, runs(), {})
    status, _ = call(["report", saved, "--out", tmp_path / "r.html", "--figures", "svg"])
    assert status == 0
    srcs = [a["src"] for tag, a in Page((tmp_path / "r.html").read_text()).elements
            if tag == "img"]
    assert len(srcs) == len(FIGURES)
    for src in srcs:
        assert src.startswith("data:image/svg+xml;base64,")
        assert b"<svg" in base64.b64decode(src.split(",", 1)[1])


def test_pdf_figures_are_refused_for_a_page(tmp_path, capsys):
    saved = tmp_path / "saved.json"
    save_results(saved, runs(), {})
    out = io.StringIO()
    status = main(["report", str(saved), "--out", str(tmp_path / "r.html"),
                   "--figures", "pdf"], out=out)
    err = capsys.readouterr().err
    assert status == 2 and out.getvalue() == ""
    assert err.startswith("virtlab: error: --figures:") and "pdf" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.json"]


def test_markdown_report_is_what_it_was(made):
    """The markdown report keeps its figure links and ends with the provenance."""
    for name in FIGURES:
        assert f"![{name}](report-{name}.png)" in made["md"]
    assert made["md"].endswith("- command: virtlab bench --workloads 'nano.*,micro.*'\n")
    assert "\n## Provenance of the results\n\n`" in made["md"]


# -- in a real browser (when one is installed) ---------------------------------------

needs_chromium = pytest.mark.skipif(chromium.executable() is None,
                                    reason="no chromium installed (apt-get install chromium)")

OVERHEAD = "h2#overhead-relative-to-native ~ div.scroll table"


def column(browser, table, col):
    return browser.evaluate(
        f"Array.from(document.querySelector({table!r}).tBodies[0].rows)"
        f".map(function (r) {{ return r.cells[{col}].textContent; }})")


def numbers(cells):
    return [float(c) for c in cells if c != "-"]


@needs_chromium
def test_in_chromium(made, tmp_path):
    page_file = made["dir"] / "report.html"
    with chromium.Browser() as browser:
        browser.load(page_file)
        assert browser.evaluate("document.title") == \
            "virtlab comparison report (profile p4-2006)"
        assert browser.evaluate("document.querySelectorAll('table').length") == \
            len(Page(made["html"]).tables)
        # every figure decoded and laid out
        shown = browser.evaluate(
            "Array.from(document.images).map(function (i) {"
            " return [i.complete, i.naturalWidth, i.getBoundingClientRect().width]; })")
        assert len(shown) == len(FIGURES)
        for complete, natural, width in shown:
            assert complete and natural > 300 and width > 300

        # modeled_overhead is the fourth column of the overhead table
        heading = browser.evaluate(
            f"document.querySelector({OVERHEAD!r}).tHead.rows[0].cells[3].textContent")
        assert heading.startswith("modeled_overhead")
        before = column(browser, OVERHEAD, 3)
        browser.click(f"{OVERHEAD} thead th:nth-child(4) button")
        up = column(browser, OVERHEAD, 3)
        assert sorted(up) == sorted(before) and up != before
        assert numbers(up) == sorted(numbers(up))              # as numbers, not text
        assert up[-1] == "-"                                   # the failed row last
        assert browser.evaluate(
            f"document.querySelector('{OVERHEAD} thead th:nth-child(4)')"
            ".getAttribute('aria-sort')") == "ascending"
        browser.click(f"{OVERHEAD} thead th:nth-child(4) button")
        down = column(browser, OVERHEAD, 3)
        assert numbers(down) == sorted(numbers(down), reverse=True) and down[-1] == "-"
        browser.click(f"{OVERHEAD} thead th:nth-child(1) button")
        names = column(browser, OVERHEAD, 0)
        assert names == sorted(names)

        # a click on a figure shows it at its own size, a second fits it again
        browser.click("figure img")
        assert browser.evaluate("document.querySelector('figure').className") == "full"
        browser.click("figure img")
        assert browser.evaluate("document.querySelector('figure').className") == ""

        shot = browser.screenshot(tmp_path / "report.png", full_page=False)
        assert browser.errors() == []
    data = Path(shot).read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
