"""The command line as a user runs it, in a process of its own, with a cache
directory of the test module's own (VIRTLAB_CACHE), so that no test reads
counts another one left behind.

    from isolated_cli import cache_dir, isolated_cache, vl   # noqa: F401

in a test module gives it both fixtures (isolated_cache applies to every
test of the module) and vl(cache_dir, *args) to run `python -m virtlab`.
"""
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("virtlab-cache")


@pytest.fixture(autouse=True)
def isolated_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("VIRTLAB_CACHE", str(cache_dir))


def vl(cache_dir, *args, cwd=None, timeout=600):
    env = {**os.environ, "VIRTLAB_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "virtlab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def install_offline(package, target):
    """pip-install the back-end package at `package` into the directory
    `target`, with no index and no build isolation (its build back end must
    be installed already): how the plug-in and tutorial tests install a back
    end of their own through the entry point."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--disable-pip-version-check", "--target",
         str(target), str(package)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target
