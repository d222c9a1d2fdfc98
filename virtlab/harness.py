"""Running guests: from a workload name to a RunResult.

A run is: catalog entry -> image + boot block -> a fresh machine under the chosen
back end -> run to completion or failure -> RunResult.  Every run gets a fresh
machine, so a guest that crashes, hangs or attacks its VMM cannot affect the next.
Pricing the result is the analysis's business, composed above this (api.py).
"""
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import backend as backends, count_cache
from .errors import UsageError
from .machine import BootSpec, Budget, Machine
from .memmap import MiB
from .result import RunResult, digest

DISK_BYTES = 4 * MiB


@dataclass(frozen=True)
class Guest:
    """What to boot: an image and the boot block's workload name and scale."""
    name: str
    image_path: Path
    workload: str
    scale: int


def catalog():
    from workloads import catalog as cat
    return cat


def resolve(workload=None, image=None, scale=None, kind="native"):
    """Turn user input into a Guest, or raise UsageError."""
    if image is not None:
        return _image_guest(Path(image), workload, scale)
    cat = catalog()
    if workload not in cat.CATALOG:
        raise UsageError(f"unknown workload '{workload}' (see 'virtlab list')")
    entry = cat.CATALOG[workload]
    path = cat.image_path(kind if entry.image == "native" else entry.image)
    if not path.is_file():
        raise UsageError(f"guest image {path} is missing; rebuild with 'make -C workloads'")
    return Guest(workload, path, workload, _scale(scale, entry.default_scale))


def _image_guest(path, workload, scale):
    """A raw image, with the boot block's workload name if one is given.  The
    result is named after the image too: it is this image's run, not the
    catalog's (a rebuilt kernel, or any guest told which workload to run)."""
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UsageError(f"cannot read image file '{path}'")
    if path.stat().st_size == 0:
        # Zeroed memory decodes as `add [eax], al`: it would run, and mean nothing.
        raise UsageError(f"image file '{path}' is empty")
    if not workload:
        return Guest(path.name, path, "", _scale(scale, 0))
    entry = catalog().CATALOG.get(workload)
    return Guest(f"{path.name}:{workload}", path, workload,
                 _scale(scale, entry.default_scale if entry else 0))


MAX_SCALE = 10_000_000


def _scale(scale, default):
    if scale is None:
        return default
    if not isinstance(scale, int) or scale < 1 or scale > MAX_SCALE:
        raise UsageError(f"scale must be an integer from 1 to {MAX_SCALE:,}, not {scale!r}")
    return scale


# [tour native 110] The end of a run: what it produced.
# A fresh machine per run; the guest booted and run; console, counters and the region
# of interest the guest marked kept in a RunResult, with which every other back end's
# run of the same workload is compared (compare_with_native).
def run_guest(guest, backend_name, timeout=120.0, max_exits=50_000_000, ram_mb=32,
              on_machine=None, configure=None):
    """Run one guest under one back end on a fresh machine (`on_machine`, if
    given, sees the machine before it runs: how `virtlab trace` attaches).
    `configure`, if given, is called with the new back end before the machine
    is built, so before the guest's first instruction: it may set options the
    back end reads from then on, and keep the back end to look into it once
    the run is over (how `virtlab translate` profiles and lists the
    translation cache)."""
    try:
        be = backends.create(backend_name)
    except backends.UnknownBackend as exc:
        raise UsageError(exc.args[0]) from None
    if configure is not None:
        configure(be)
    image = guest.image_path.read_bytes()
    with Machine(be, ram_size=ram_mb * MiB, budget=Budget(timeout, max_exits)) as machine:
        try:
            machine.boot(BootSpec(image, guest.workload, guest.scale, bytearray(DISK_BYTES)))
        except ValueError as exc:
            raise UsageError(f"{guest.image_path}: {exc}") from None
        if on_machine is not None:
            on_machine(machine)
        t0 = time.perf_counter()
        outcome = machine.run()
        seconds = time.perf_counter() - t0
    # The machine is closed (its engine, hooks and context released); what
    # the run produced is still readable.
    console = machine.uart.text()
    roi = machine.roi
    return RunResult(
        workload=guest.name, backend=backend_name, scale=guest.scale,
        ok=outcome.ok, exit_status=outcome.exit_status, reason=outcome.reason,
        console=console, output_digest=digest(console),
        counters=dict(sorted(machine.counters.snapshot().items())),
        roi_counters=roi.counters if roi.ended else {},
        host_seconds=seconds, roi_host_seconds=roi.seconds if roi.ended else None,
        iterations=machine.platform.iterations, vmm_entries=machine.exits,
        image=str(guest.image_path), details=be.report())


def count_instructions(guest, backend_name, ram_mb=32, timeout=600.0):
    """(instructions, roi_instructions) of the guest under the back end: a
    separate, slower run with the instruction counter on, cached on disk by
    image content, workload, scale and back end (icount.py)."""
    key = count_key(guest, backend_name, ram_mb)
    cached = count_cache.lookup(key)
    if cached is not None:
        return cached
    result, ok = _count(guest, backend_name, ram_mb, timeout)
    if ok:
        count_cache.store(key, result)
    return result


def _count(guest, backend_name, ram_mb, timeout):
    """((instructions, roi_instructions), ok) of one counting run."""
    with Machine(backends.create(backend_name), ram_size=ram_mb * MiB,
                 budget=Budget(timeout, 50_000_000), count_instructions=True) as machine:
        machine.boot(BootSpec(guest.image_path.read_bytes(), guest.workload, guest.scale,
                              bytearray(DISK_BYTES)))
        outcome = machine.run()
        return (machine.icount.total, machine.roi.instructions), outcome.ok


def count_key(guest, backend_name, ram_mb=32):
    """The key of a guest's count in the caches (count_cache.py)."""
    return "|".join([image_digest(guest.image_path), guest.workload, str(guest.scale),
                     backend_name, str(ram_mb), ICOUNT_VERSION])


def bundle_counts(progress=None):
    """Count every catalog workload at its default scale under every
    back end virtlab itself installs, counting afresh (the bundle is what is being made):
    the entries of workloads/images/counts.json."""
    entries = {}
    for name in catalog().CATALOG:
        for b in backends.bundled():
            guest = resolve(name, kind=backends.load(b).image)
            result, ok = _count(guest, b, 32, 600.0)
            if not ok:
                raise RuntimeError(f"{name} under {b} failed: nothing to bundle")
            entries[count_key(guest, b)] = list(result)
            if progress is not None:
                progress(f"{name} {b}: {result}")
    return entries


ICOUNT_VERSION = "3"               # bumped when counting changes: older cached counts are stale


def image_digest(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def compare_with_native(result, reference):
    """matches_native: same console output and exit status as the native run."""
    result.matches_native = (reference.ok and result.ok
                             and result.console == reference.console
                             and result.exit_status == reference.exit_status)
    return result
