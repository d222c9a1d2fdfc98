"""The hypercall fuzzer: a hostile PV guest against the `pv` hypervisor.

    python -m pv.fuzz --count N --seed S [--json]

A PV hypervisor trusts nothing its guest passes: "nothing a guest passes can
make the hypervisor fail" (docs/pv-abi.md, section 4).  This program tests
that claim the way an attacker would, from inside a domain.  A guest at ring
1 issues N hypercalls through `int 0x82` aimed at what the hypervisor must
protect:

  - numbers it does not implement (negative and huge EAX too), unknown
    commands, other domains, counts far too large;
  - pointers into the hypervisor's range (0xFC000000 up), unmapped, read-only
    where the hypervisor must write, misaligned, straddling a page into an
    unmapped or read-only one, arrays that run off their end;
  - machine frames the domain does not own: the hypervisor's, below the
    domain's first frame, and frames past the end of the machine;
  - the one rule paging rests on, that no page table is ever writable:
    writable mappings of the bootstrap page tables and of frames just pinned
    as tables, pins of frames still mapped writable, 4 MiB pages, reserved
    bits, the hypervisor's slots of a page directory;
  - the block device's shared ring, which the guest fills as it likes.

Random calls alone rarely get past a hypercall's first check, so part of
them follow a model of the domain and make progress the way a kernel does:
take a free page, make it read-only in the direct map, pin it as a page
table, install it in the page directory, map frames through it, unpin it,
make it writable again -- with the hostile step mixed in at the moment it
matters.  Event channels are bound, signalled and closed; multicalls carry
all of this.  The calls are generated before they run, so the model is a
guess: it steers the fuzzer, it does not judge the hypervisor.

What judges is the hypervisor's own state.  After every hypercall, and after
every entry of a multicall, pv.invariants.check() recomputes the page types
from the page tables (unless nothing it reads has changed since it last
passed).  The fuzzer also checks what the ABI promises on every return: the
registers other than EAX are preserved, EAX is what the hypercall returned,
an unknown number gives -ENOSYS, an error is one of Xen's errnos.  A broken invariant, a broken promise, or a Python exception
escaping the hypervisor is a *hypervisor error*.  A crashed domain is not
(a guest may kill itself), but this guest never tries to: it keeps its own
image, stack and data mapped, never issues SCHEDOP_block, SCHEDOP_shutdown
(except with a reason it cannot read) or the iret hypercall (except inside
a multicall, where it is refused), never loads another page directory, and
lets the hypervisor write only into its scratch space and the pages it plays
with.  So a crash means the fuzzer damaged itself; it is counted and reported.

How it runs: the calls are generated in Python from random.Random, one
stream per chunk of CHUNK calls, with the domain's layout known in advance
(the domain builder is deterministic).  Each chunk is one guest image whose
data area holds a table of register sets and each call's structures; the
guest's code walks the table, does `int 0x82` and stores the registers it
gets back.  Each chunk runs in a fresh, small domain, where checking the
invariants takes about a millisecond.

The package, one concept a file:

    guest.py      the guest: its domain's size, its memory layout, its code
    call.py       one hypercall as the generator makes it
    model.py      what the fuzzer knows of the domain, and the data area
    generator.py  the calls of one chunk, and the block device's disk
    runner.py     running a chunk and watching its hypervisor
    report.py     what the chunks add up to, and the summary
    cli.py        the command line's options
"""
import json
import sys
import time

from virtlab.errors import UsageError

from .call import NAMES, Call, name_of
from .cli import _parser
from .generator import DISK, Gen, disk_image, generate
from .guest import CHUNK, NR, RAM, handlers
from .model import Cand, Data, Domain
from .report import WORK, Report, summary
from .runner import Broken, Monitor, run_chunk

__all__ = ["fuzz", "main", "summary", "Report", "WORK", "run_chunk", "Monitor", "Broken",
           "generate", "disk_image", "DISK", "Gen", "Domain", "Cand", "Data", "Call",
           "NAMES", "name_of", "handlers", "RAM", "NR", "CHUNK"]


def fuzz(count, seed):
    """Issue `count` hypercalls generated from `seed`; the report as a dict."""
    started = time.perf_counter()
    report = Report(seed, count)
    chunk = done = 0
    while done < count:
        done += run_chunk(chunk, seed, min(CHUNK, count - done), report)
        chunk += 1
    return report.as_dict(time.perf_counter() - started)


def main(argv=None, out=None):
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"pv.fuzz: error: {exc}\n")
        return 2
    r = fuzz(args.count, args.seed)
    out.write(json.dumps(r) + "\n" if args.json else summary(r))
    return 0 if r["ok"] else 1
