"""virtlab: one real guest OS under interchangeable x86 virtualization back ends."""
__version__ = "0.1.0"


def run(workload=None, backend="native", **options):
    """Run one workload under one back end; returns a RunResult."""
    from .api import run as _run
    return _run(workload, backend, **options)


def bench(workloads="*", backends=None, **options):
    """The bench matrix as a pandas DataFrame (one row per workload and back end);
    options: scale, profile, jobs, timeout, max_exits."""
    from .api import bench as _bench
    return _bench(workloads, backends, **options)
