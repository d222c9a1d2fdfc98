"""The command line's options: --count, --seed and --json; a bad one is a
UsageError (one line, exit status 2)."""
import argparse

from virtlab.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _number(low, what):
    def parse(text):
        try:
            v = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        return v
    return parse


def _parser():
    p = _Parser(prog="python -m pv.fuzz",
                description="Fuzz the pv hypervisor's hypercalls from a hostile PV guest.")
    p.add_argument("--count", type=_number(1, "a positive number of hypercalls"), required=True,
                   help="hypercalls the guest issues")
    p.add_argument("--seed", type=_number(0, "a seed of 0 or more"), default=0,
                   help="the same count and seed make the same calls (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p
