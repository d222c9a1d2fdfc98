"""What every test shares."""
import os

import pytest


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
