"""The workload catalog: every program the bundled guest can run as a workload.

A catalog name is ``family.op``; it runs the guest program ``family_op``
(``workloads/user/progs/family_op.c``). Each entry says what the workload measures
and which published benchmark it mirrors, so result tables can cite their origin.

``default_scale`` is the number of iterations used when a run asks for scale 0;
defaults are chosen so the whole suite runs in seconds under the native back end
(every exit to the VMM costs microseconds of host time on the emulated CPU).
"""

from __future__ import annotations

import fnmatch
import pathlib
from dataclasses import dataclass

__all__ = ["Workload", "CATALOG", "FAMILIES", "select", "image_path", "program_name"]


@dataclass(frozen=True)
class Workload:
    name: str            # "family.op"
    family: str          # "nano", "micro", "macro", "fidelity"
    measures: str        # one line: what the workload measures
    mirrors: str         # the published benchmark it mirrors
    default_scale: int   # iterations when the run asks for scale 0
    image: str = "native"

    @property
    def program(self) -> str:
        """The guest program name (``family_op``) the kernel execs."""
        return program_name(self.name)


def program_name(name: str) -> str:
    """Catalog name ``family.op`` -> guest program name ``family_op``."""
    return name.replace(".", "_")


_AA = "Adams & Agesen 2006, Fig. 4"  # nanobenchmarks (ASPLOS 2006)
_XEN3 = "Xen paper (Barham et al. 2003) Table 3"
_XEN4 = "Xen paper (Barham et al. 2003) Table 4"
_XEN5 = "Xen paper (Barham et al. 2003) Table 5"

_ENTRIES = [
    # --- nano: one operation per iteration (Adams & Agesen nanobenchmarks) ---------------
    Workload("nano.syscall", "nano",
             "null system call (getpid via int 0x80) from user mode, one per iteration",
             f"{_AA} 'syscall'", 10000),
    Workload("nano.in", "nano",
             "port read (in from the UART line-status port) executed by the kernel, one per iteration",
             f"{_AA} 'in'", 10000),
    Workload("nano.crwr", "nano",
             "control-register write (mov CR0 <- CR0; 32-bit mode has no CR8) executed by the kernel",
             f"{_AA} 'cr8wr' (CR write; no CR8 in 32-bit mode)", 10000),
    Workload("nano.callret", "nano",
             "call/ret pair executed by the kernel (the BT translator's worst case)",
             f"{_AA} 'call/ret'", 20000),
    Workload("nano.pgfault", "nano",
             "demand-zero page fault: first touch of a fresh anonymous page per iteration",
             f"{_AA} 'pgfault'", 2000),
    Workload("nano.divzero", "nano",
             "divide-by-zero fault (#DE) delivered to a user handler and resumed",
             f"{_AA} 'divzero'", 2000),
    Workload("nano.ptemod", "nano",
             "page-table entry modification (store to a live PTE + invlpg) by the kernel",
             f"{_AA} 'ptemod'", 10000),
    Workload("nano.cli", "nano",
             "cli/sti pair executed by the kernel",
             "Adams & Agesen 2006, Sec. 4 (cli: 60 cycles native, a store under BT)", 20000),
    Workload("nano.popf", "nano",
             "pushf/popf pair executed by the kernel",
             "Adams & Agesen 2006, Sec. 2-4 (popf, the Popek-Goldberg hole)", 20000),
    Workload("nano.rdtsc", "nano",
             "rdtsc from user mode, one per iteration",
             "Adams & Agesen 2006, Sec. 6 (rdtsc: trap 2030 / callout 1254 / in-TC 216 cycles)",
             20000),
    Workload("nano.cpuid", "nano",
             "cpuid (leaf 0) from user mode, one per iteration",
             "Adams & Agesen 2006 nanobenchmark style (cpuid: an unconditional VT-x exit)",
             20000),
    # --- micro: lmbench style, after the Xen paper ------------------------------------
    Workload("micro.null_call", "micro",
             "lmbench null call: one getpid system call per iteration",
             f"lmbench lat_syscall null ({_XEN3} 'null call')", 5000),
    Workload("micro.null_io", "micro",
             "lmbench null I/O: read 1 byte from and write 1 byte to the null device per iteration",
             f"lmbench lat_syscall read/write ({_XEN3} 'null I/O')", 2000),
    Workload("micro.ctxsw", "micro",
             "context switch: 2 processes yielding to each other (one round trip per iteration)",
             f"lmbench lat_ctx 2p/0K ({_XEN4} 'ctx sw 2p/0K')", 2000),
    Workload("micro.fork", "micro",
             "process creation: fork + child exit + parent wait per iteration",
             f"lmbench lat_proc fork ({_XEN3} 'fork proc')", 300),
    Workload("micro.exec", "micro",
             "program execution: fork + exec of a tiny program + wait per iteration",
             f"lmbench lat_proc exec ({_XEN3} 'exec proc')", 200),
    Workload("micro.pagefault", "micro",
             "copy-on-write page fault: a forked child writes to shared pages, one fault per iteration",
             f"lmbench lat_pagefault ({_XEN5} 'page fault')", 1000),
    Workload("micro.protfault", "micro",
             "protection fault: a write to a read-only page caught by a user handler and skipped",
             f"lmbench lat_sig prot ({_XEN5} 'prot fault')", 2000),
    Workload("micro.mmap", "micro",
             "map/unmap: mmap 4 pages, touch each, munmap, per iteration",
             f"lmbench lat_mmap ({_XEN5} 'mmap lat')", 300),
    # --- macro ------------------------------------------------------------------------
    Workload("macro.compute", "macro",
             "compute-bound integer kernels (sort, CRC-32 hash, sieve, matrix multiply)",
             "SPEC CINT2000 (Xen paper Fig. 3 'SPEC INT2000'; Adams & Agesen 2006 SPECint)", 50),
    Workload("macro.forkwait", "macro",
             "process creation from a non-trivial address space: fork, child COW-touches a page, exit, wait",
             "Adams & Agesen 2006 'forkwait' (40,000 fork/wait pairs)", 300),
    Workload("macro.build", "macro",
             "build-like mix: per source file fork+exec a compiler that reads disk, computes, "
             "allocates and writes an object; then a link pass",
             "kernel compile (Adams & Agesen 2006 'compileLin'; Xen paper Fig. 3 'Linux build time')",
             64),
    Workload("macro.disk", "macro",
             "disk-bound I/O: write sectors, read them back, verify (IDE PIO / PV block ring)",
             "dbench/PostgreSQL-style I/O (Xen paper Fig. 3 disk-bound workloads)", 128),
    # --- fidelity: sensitive instructions that are not privileged --------------------
    Workload("fidelity.popf", "fidelity",
             "does popf in the kernel restore IF=0? (silently ignored under ring compression)",
             "Popek & Goldberg 1974; Robin & Irvine 2000 (x86 popf)", 1000),
    Workload("fidelity.pushf", "fidelity",
             "does pushf in the kernel show the IF the kernel set? (shows the real IF when deprivileged)",
             "Robin & Irvine 2000 (x86 pushf)", 1000),
    Workload("fidelity.sidt", "fidelity",
             "sidt/sgdt from kernel and user mode: do they reveal a relocated IDT/GDT?",
             "Rutkowska 2004 'Red Pill'; Robin & Irvine 2000 (sidt/sgdt)", 1000),
    Workload("fidelity.pushcs", "fidelity",
             "push cs / mov from cs in the kernel: does the selector's RPL reveal the real ring?",
             "Robin & Irvine 2000 (push cs, mov r, cs)", 1000),
    Workload("fidelity.smsw", "fidelity",
             "smsw (unprivileged read of CR0's low bits) from kernel and user mode",
             "Robin & Irvine 2000 (smsw)", 1000),
]

CATALOG: dict[str, Workload] = {w.name: w for w in _ENTRIES}

FAMILIES: tuple[str, ...] = ("nano", "micro", "macro", "fidelity")

# Programs in user/progs that are not workloads but are exec'd by workloads.
HELPER_PROGRAMS: tuple[str, ...] = ("true", "cc")


def select(patterns: str) -> list[Workload]:
    """Workloads named by a comma-separated list of names and fnmatch globs.

    ``"nano.*,micro.fork"`` -> all nano workloads then micro.fork, in catalog order
    within each pattern, without duplicates. A bare family name (``"nano"``) means
    ``"nano.*"``. An empty string or ``"*"``/``"all"`` selects everything. A pattern
    that matches nothing raises ``KeyError`` naming it.
    """
    if patterns is None:
        patterns = ""
    parts = [p.strip() for p in str(patterns).split(",") if p.strip()]
    if not parts:
        return list(CATALOG.values())
    chosen: list[Workload] = []
    seen: set[str] = set()
    for pat in parts:
        if pat == "all":
            pat = "*"
        if pat in FAMILIES:
            pat = pat + ".*"
        if pat in CATALOG:
            matched = [CATALOG[pat]]
        else:
            matched = [w for n, w in CATALOG.items() if fnmatch.fnmatchcase(n, pat)]
        if not matched:
            raise KeyError(pat)
        for w in matched:
            if w.name not in seen:
                seen.add(w.name)
                chosen.append(w)
    return chosen


def image_path(kind: str = "native") -> pathlib.Path:
    """Path of a prebuilt guest image: ``workloads/images/<kind>.img``."""
    return pathlib.Path(__file__).resolve().parent / "images" / f"{kind}.img"
