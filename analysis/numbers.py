"""How numbers are shown in the human-readable tables (markdown, LaTeX, the
terminal view); CSV and JSON keep every digit.

Cycle counts are whole numbers.  Everything else gets three significant
digits without an exponent: a ratio of 1.004 shows as 1.00, a syscall of
0.0807 us as 0.0807 (a fixed number of decimals would print 0.081 or 0.000).
Only far outside what a run gives (a profile of a CPU that takes 1e-300
cycles per instruction) does a number take an exponent, as 2.47e-318,
rather than hundreds of zeros; an infinite one shows as inf.
"""
import math

MISSING = "-"


def missing(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def cycles(x):
    if missing(x):
        return MISSING
    return significant(x) if math.isinf(x) else f"{round(x):,}"


def significant(x, digits=3):
    if missing(x):
        return MISSING
    if x == 0:
        return "0"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if not _PLAIN_LOW <= abs(x) < _PLAIN_HIGH:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


# Magnitudes shown without an exponent: from a nanosecond in seconds to
# a quadrillion cycles.
_PLAIN_LOW, _PLAIN_HIGH = 1e-9, 1e15


def ratio(x):
    """An overhead: times native."""
    return significant(x)
