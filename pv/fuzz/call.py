"""One hypercall as the generator makes it: its registers, the structure
copied into the scratch page before it, and what it meant (its kind)."""
from dataclasses import dataclass

from ..counters import HYPERCALL_NAMES

NAMES = HYPERCALL_NAMES


def name_of(number):
    return NAMES.get(number, "unknown")


@dataclass
class Call:
    number: int
    args: list                   # EBX ECX EDX ESI EDI
    kind: str                    # what the generator meant, for the report
    copy: tuple = None           # (from, to, length): copied into EDGE before the call
