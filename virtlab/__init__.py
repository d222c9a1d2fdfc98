"""virtlab: one real guest OS under interchangeable x86 virtualization back ends."""
__version__ = "0.1.0"


def run(workload=None, backend="native", **options):
    """Run one workload under one back end; returns a RunResult, priced under
    the default CPU profile (options: scale, image, profile, model=False to
    skip pricing, repeat, timeout, max_exits)."""
    from .api import run as _run
    return _run(workload, backend, **options)


def bench(workloads="*", backends=None, **options):
    """The bench matrix as a pandas DataFrame (one row per workload and back end).
    `workloads` and `backends` are each a list or a comma-separated string;
    options: scale, profile, repeat (3), jobs, progress, timeout, max_exits."""
    from .api import bench as _bench
    return _bench(workloads, backends, **options)


def bench_runs(workloads="*", backends=None, **options):
    """The bench's runs (a list of RunResults) rather than its table: what
    analysis.table.frame, .breakdown and analysis.sensitivity.sweep price
    under any profile.  Options as for bench, less profile."""
    from .api import bench_runs as _runs
    return _runs(workloads, backends, **options)
