"""pv: paravirtualization, as Xen 3.0 did it on x86-32.

Start at backend.py, whose docstring lists the other files in reading order;
docs/pv.md describes the technique as implemented, docs/pv-abi.md the
interface a PV image follows.
"""
