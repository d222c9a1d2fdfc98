"""How numbers are shown in the human-readable tables (markdown, LaTeX, the
terminal view); CSV and JSON keep every digit.

Cycle counts are whole numbers.  Everything else gets three significant
digits without an exponent: a ratio of 1.004 shows as 1.00, a syscall of
0.0807 us as 0.0807 (a fixed number of decimals would print 0.081 or 0.000).
"""
import math

MISSING = "-"


def missing(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def cycles(x):
    return MISSING if missing(x) else f"{round(x):,}"


def significant(x, digits=3):
    if missing(x):
        return MISSING
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def ratio(x):
    """An overhead: times native."""
    return significant(x)
