"""The committed guest images are what their sources build.

Where gcc, ld and make are present, rebuild both images (native, and the
paravirtualized build of the same kernel) from a copy of workloads/ and check
that each is byte-for-byte the committed one (the build is deterministic) and
that it gives the same outputs.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

import runs
import virtlab
from workloads.catalog import image_path

TOOLS = ("gcc", "ld", "objcopy", "make")
SAMPLE = {"nano.syscall": 50, "micro.fork": 10, "macro.compute": 2, "fidelity.popf": 20}
KINDS = {"native": "native", "pv": "pv"}            # image kind -> a back end that boots it


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"no guest toolchain here ({', '.join(missing)} missing)")
    src = Path(image_path()).parent.parent
    dst = tmp_path_factory.mktemp("rebuild") / "workloads"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build", "images", "__pycache__"))
    (dst / "images").mkdir()
    proc = subprocess.run(["make", "-C", str(dst)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dst / "images"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_rebuilt_image_is_identical(rebuilt, kind):
    assert (rebuilt / f"{kind}.img").read_bytes() == Path(image_path(kind)).read_bytes(), \
        f"workloads/images/{kind}.img is stale: run 'make -C workloads' and commit it"


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name", sorted(SAMPLE))
def test_rebuilt_image_gives_the_same_outputs(rebuilt, name, kind):
    backend = KINDS[kind]
    committed = runs.run(name, backend, SAMPLE[name])
    fresh = virtlab.run(name, backend, scale=SAMPLE[name], image=str(rebuilt / f"{kind}.img"),
                        model=False)
    assert committed.ok and fresh.ok, (committed.reason, fresh.reason)
    assert fresh.console == committed.console
    assert fresh.exit_status == committed.exit_status
    assert fresh.counters == committed.counters
