"""`python -m pv.fuzz`: the fuzzer's command line (see pv/fuzz/__init__.py)."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
