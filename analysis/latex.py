r"""Tables as LaTeX: a booktabs `tabular` to \input into a paper.

It needs `\usepackage{booktabs}` in the document (\toprule, \midrule,
\bottomrule).  Every cell is text, so each of LaTeX's special characters is
escaped: `_` alone (every column name has one) stops pdflatex.  Anything
outside ASCII becomes `?`: a reason may quote arbitrary text, and a bare
pdflatex has no glyph for most of Unicode.
"""

SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "&": r"\&",
           "%": r"\%", "$": r"\$", "#": r"\#", "~": r"\textasciitilde{}",
           "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
           "|": r"\textbar{}"}


def escape(text):
    return "".join(SPECIAL.get(ch, ch if ch.isascii() and ch.isprintable() else "?")
                   for ch in str(text))


def tabular(header, rows, numeric):
    """`header` and `rows` are cell texts; `numeric[i]` right-aligns column i."""
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", _row(header), r"\midrule"]
    lines += [_row(r) for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _row(cells):
    return " & ".join(escape(c) for c in cells) + r" \\"
