"""What every test shares."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def subprocesses_import_this_checkout():
    """Every process a test starts (`python -m virtlab`, a script, a kernel)
    imports virtlab from this checkout, as the test process does (pytest puts
    the checkout first on its own path), even from another working directory:
    else an installed virtlab, or another checkout's in editable mode, would
    be the one tested."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [old])])
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session", autouse=True)
def private_count_cache(tmp_path_factory):
    """No test reads or writes the user's own instruction-count cache: every
    test, and every command a test starts (they inherit the environment),
    keeps counts in a directory of this test session's (VIRTLAB_CACHE), so
    that no result depends on what ran on the machine before, and no later run
    of the user's finds what a test left.  Modules that need a cache of their
    own (isolated_cli.cache_dir) set it over this one."""
    old = os.environ.get("VIRTLAB_CACHE")
    os.environ["VIRTLAB_CACHE"] = str(tmp_path_factory.mktemp("virtlab-cache"))
    yield
    if old is None:
        os.environ.pop("VIRTLAB_CACHE", None)
    else:
        os.environ["VIRTLAB_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def shared_runs(tmp_path_factory, worker_id):
    """Catalog runs shared between test files and workers (tests/runs.py), in
    a directory of this session's: under pytest-xdist every worker's base
    temporary directory is inside the controller's, so their parent is the
    one they share; run alone, the session's own."""
    import runs
    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "shared-runs"
    shared.mkdir(exist_ok=True)
    runs.share(shared)
    yield
    runs.share(None)
