"""The command line as a user runs it, in a process of its own, with a cache
directory of the test module's own (VIRTLAB_CACHE), so that no test reads
counts another one left behind.

    from isolated_cli import cache_dir, isolated_cache, vl   # noqa: F401

in a test module gives it both fixtures (isolated_cache applies to every
test of the module) and vl(cache_dir, *args) to run `python -m virtlab`.

in_process(cache_dir, *args) runs the same command through virtlab.cli.main in
this process and answers as vl does (returncode, stdout, stderr): the same
argv, working directory and cache, stdout and stderr each in one buffer, the
warnings a fresh interpreter would print added to stderr, and an exception
that would have been a traceback raised in the test.  What it cannot show is
what only a new interpreter does (the entry point, `sys.argv`, exit at
interpreter shutdown): each module keeps a few commands through vl for that.
It saves an interpreter start and the imports (about a second of CPU each).
"""
import contextlib
import io
import os
import subprocess
import sys
import warnings

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


# The categories a fresh interpreter does not print (Python's default filters).
_SILENT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def in_process(cache_dir, *args, cwd=None, env=None):
    """`virtlab ARGS` through virtlab.cli.main in this process: a
    subprocess.CompletedProcess like vl's (see the module's docstring)."""
    from virtlab.cli import main
    argv = [str(a) for a in args]
    settings = {"VIRTLAB_CACHE": str(cache_dir), **(env or {})}
    saved_env = {k: os.environ.get(k) for k in settings}
    here = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(settings)
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                status = main(argv, out=out)
            except SystemExit as exc:              # argparse's own errors
                status = exc.code if isinstance(exc.code, int) else 1
        for w in caught:
            if not issubclass(w.category, _SILENT):
                err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno,
                                                 w.line))
    finally:
        os.chdir(here)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["virtlab", *argv], status, out.getvalue(),
                                       err.getvalue())


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
