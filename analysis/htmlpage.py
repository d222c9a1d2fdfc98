"""The report as one self-contained HTML page.

The page is made from the markdown report itself (report.py), so the two
always say the same thing: the same summary, tables, explanations, profile
and provenance.  Only the few constructs report.py writes are understood:
headings, pipe tables, "- " lists, paragraphs, a figure alone on its line,
and `code`, **bold** and *emphasis* inside text.  Everything else is text,
escaped.

Self-contained means the page works from a mail attachment or an offline
laptop: each figure is inlined as a data: URI (PNG, or SVG kept as vectors),
the style and the script that sorts the tables are in the page, and nothing
names another file or host.
"""
import base64
import html
import re
from pathlib import Path

# What a figure file becomes inside an <img>: browsers show these inline.
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}

LONG = 30          # rows past which a table scrolls in its own box

_FIGURE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)$")
_HEADING = re.compile(r"(#{1,6}) (.*)$")
_RULE = re.compile(r":?-+:?$")


def page(markdown, figure_dir):
    """The HTML page for this markdown report, its figures read from
    `figure_dir` (where report.py wrote them beside the markdown)."""
    blocks = _with_ids(_blocks(markdown.split("\n"), Path(figure_dir)))
    title = next((_text(b[1]) for b in blocks if b[0] == "h1"), "virtlab report")
    parts = [_render(b) for b in blocks]
    # The contents go under the title, before the first section.
    at = next((i + 1 for i, b in enumerate(blocks) if b[0] == "h1"), 0)
    parts.insert(at, _nav(blocks))
    return _TEMPLATE.format(title=html.escape(title), style=_STYLE, body="\n".join(parts),
                            script=_SCRIPT)


def data_uri(path):
    """A figure file as a data: URI; ValueError for a format no <img> shows."""
    kind = IMAGE_TYPES.get(Path(path).suffix.lower())
    if kind is None:
        raise ValueError(f"an HTML report cannot show '{Path(path).name}' inline "
                         f"(figures must be {' or '.join(t[1:] for t in IMAGE_TYPES)})")
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


# -- markdown to blocks ------------------------------------------------------------
# A block is a tuple: (tag, ...) with what its renderer needs.

def _blocks(lines, figure_dir):
    out, i = [], 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif _HEADING.match(line):
            level, text = _HEADING.match(line).groups()
            out.append((f"h{len(level)}", text))
            i += 1
        elif _FIGURE.match(line):
            alt, src = _FIGURE.match(line).groups()
            out.append(("figure", alt, data_uri(figure_dir / src)))
            i += 1
        else:
            # A run of lines of one kind: a table, a list or a paragraph.
            kind = _kind(line)
            j = i
            while j < len(lines) and lines[j].strip() and _kind(lines[j].rstrip()) == kind:
                j += 1
            out.append(_GROUPS[kind](lines[i:j]))
            i = j
    return out


def _kind(line):
    if line.startswith("|"):
        return "table"
    if line.startswith("- "):
        return "list"
    if _HEADING.match(line) or _FIGURE.match(line):
        return "other"
    return "p"


def _table(lines):
    rows = [_cells(ln) for ln in lines]
    if len(rows) > 1 and all(_RULE.match(c) for c in rows[1]):
        align = [_align(c) for c in rows[1]]
        del rows[1]
    else:
        align = ["left"] * len(rows[0])
    return ("table", rows[0], rows[1:], align)


def _cells(line):
    # report.py keeps "|" out of cells (its _cell, _why and _md), so a pipe
    # always separates two of them.
    inner = line.strip()[1:]
    if inner.endswith("|"):
        inner = inner[:-1]
    return [c.strip() for c in inner.split("|")]


def _align(rule):
    if rule.endswith(":") and not rule.startswith(":"):
        return "right"
    return "center" if rule.startswith(":") and rule.endswith(":") else "left"


_GROUPS = {"table": _table,
           "list": lambda lines: ("list", [ln[2:] for ln in lines]),
           "p": lambda lines: ("p", " ".join(ln.strip() for ln in lines))}


# -- blocks to HTML ----------------------------------------------------------------

def _with_ids(blocks):
    """Headings with an id each (for the contents), unique in the page."""
    seen, out = set(), []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            ident = _slug(b[1], seen)
            b = (b[0], b[1], ident)
        out.append(b)
    return out


def _slug(text, seen):
    base = re.sub(r"[^a-z0-9]+", "-", _text(text).lower()).strip("-") or "section"
    ident, n = base, 2
    while ident in seen:
        ident, n = f"{base}-{n}", n + 1
    seen.add(ident)
    return ident


def _nav(blocks):
    """The contents: one link per second-level heading."""
    items = [f'<li><a href="#{b[2]}">{_inline(b[1])}</a></li>' for b in blocks if b[0] == "h2"]
    return f'<nav aria-label="contents"><ul>{"".join(items)}</ul></nav>' if items else ""


def _render(b):
    tag = b[0]
    if tag.startswith("h"):
        if len(b) > 2:
            return f'<{tag} id="{b[2]}">{_inline(b[1])}</{tag}>'
        return f"<{tag}>{_inline(b[1])}</{tag}>"
    if tag == "figure":
        _, alt, uri = b
        return (f'<figure><img alt="{html.escape(alt)} figure" src="{uri}" '
                f'title="click for the full size">'
                f"<figcaption>Figure: {html.escape(alt)}</figcaption></figure>")
    if tag == "list":
        return "<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b[1]) + "</ul>"
    if tag == "table":
        return _render_table(*b[1:])
    return f"<p>{_inline(b[1])}</p>"


def _render_table(header, rows, align):
    def cells(row, td):
        return "".join(f'<{td} class="{a}">{_inline(c)}</{td}>' for c, a in zip(row, align))
    head = "".join(f'<th class="{a}" aria-sort="none"><button type="button" '
                   f'title="sort by this column">{_inline(h)}</button></th>'
                   for h, a in zip(header, align))
    body = "\n".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    # A long table (a full bench has 168 rows) scrolls in a box of its own,
    # its heading kept in sight, so the figure after it is not pages away.
    box = "scroll long" if len(rows) > LONG else "scroll"
    return (f'<div class="{box}"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table></div>")


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
# Emphasis only around words: a glob such as 'nano.*,micro.*' in a command
# line stays as it is.
_EM = re.compile(r"(?<![\w*])\*(\w(?:[^*]*\w)?)\*(?![\w*])")


def _inline(text):
    """Escaped text with `code`, **bold** and *emphasis*.  Code spans are
    set aside first, so nothing inside one is read as markup (exit.* stays
    as it is), yet a bold stretch may hold one."""
    spans = []

    def aside(m):
        spans.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\0{len(spans) - 1}\0"
    s = html.escape(_CODE.sub(aside, text))
    s = _EM.sub(r"<em>\1</em>", _BOLD.sub(r"<strong>\1</strong>", s))
    return re.sub("\0([0-9]+)\0", lambda m: spans[int(m.group(1))], s)


def _text(text):
    """Inline markdown as plain text (the page title, ids)."""
    return re.sub(r"[`*]", "", text)


# -- the page around it ------------------------------------------------------------

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
<main>
{body}
</main>
<script>{script}</script>
</body>
</html>
"""

# Plain system fonts and colours: nothing to fetch.
_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; padding: 1rem 2rem 4rem; max-width: 80rem; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1.1rem; margin-top: 1.8rem; }
p, li { max-width: 60rem; }
code { font: .9em ui-monospace, "DejaVu Sans Mono", monospace; background: #f3f3f3;
       padding: 0 .2em; border-radius: 3px; }
nav { font-size: .9rem; border: 1px solid #e4e4e4; border-radius: 6px; background: #fafafa;
      margin: 1rem 0; padding: .4rem 1rem; }
nav ul { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap;
         gap: .2rem 1.4rem; }
nav a { color: #1a5fb4; text-decoration: none; }
.scroll { overflow-x: auto; margin: .8rem 0; max-width: 100%; width: fit-content; }
.scroll.long { max-height: 34rem; overflow-y: auto; border: 1px solid #ccc; }
.scroll.long table { border-style: hidden; }
@media print { .scroll.long { max-height: none; overflow: visible; } }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; vertical-align: top; }
tbody tr:nth-child(even) { background: #f8f8f8; }
thead th { background: #eef1f5; position: sticky; top: 0; white-space: nowrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0;
            cursor: pointer; color: inherit; text-align: inherit; }
th button::after { content: " \\2195"; color: #999; font-weight: normal; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; color: #333; }
th[aria-sort="descending"] button::after { content: " \\25BC"; color: #333; }
.right { text-align: right; font-variant-numeric: tabular-nums; }
.center { text-align: center; }
.left { text-align: left; }
figure { margin: 1rem 0; overflow-x: auto; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; cursor: zoom-in; }
figure.full img { max-width: none; cursor: zoom-out; }
figcaption { font-size: .85rem; color: #555; }
"""

# Sorting, written for this page: a click on a heading sorts by its column,
# a second click reverses.  A column whose cells are all numbers (or empty)
# sorts as numbers; empty cells ("-") go last either way.
_SCRIPT = r"""
"use strict";
(function () {
  function number(text) {
    var t = text.trim().replace(/,/g, "").replace(/\u2212/g, "-");
    return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t) ? parseFloat(t) : null;
  }
  function empty(text) {
    var t = text.trim();
    return t === "" || t === "-";
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var cells = rows.map(function (r) { return r.cells[col] ? r.cells[col].textContent : ""; });
    var numeric = cells.every(function (c) { return empty(c) || number(c) !== null; });
    var up = th.getAttribute("aria-sort") !== "ascending";
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (a, b) {
      var x = cells[a], y = cells[b];
      if (empty(x) || empty(y)) {
        return empty(x) === empty(y) ? a - b : (empty(x) ? 1 : -1);
      }
      var d = numeric ? number(x) - number(y) : x.localeCompare(y);
      return (up ? d : -d) || a - b;
    });
    order.forEach(function (i) { body.appendChild(rows[i]); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
  }
  // A wide figure (the breakdown of a full bench) is shown fitted to the
  // page; a click shows it at its own size, scrolling sideways, and back.
  document.querySelectorAll("figure img").forEach(function (img) {
    img.addEventListener("click", function () {
      img.parentNode.classList.toggle("full");
    });
  });
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.querySelector("button").addEventListener("click", function () {
        sortBy(table, col, th);
      });
    });
  });
})();
"""
