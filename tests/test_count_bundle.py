"""The instruction counts shipped with the images (workloads/images/counts.json).

The first `virtlab bench` on a new machine must not spend minutes counting:
the counts of the default bench come with the images.  They are only a cache:
these tests check that the bundle covers the committed images (if an image
changes, rebuild it with `python -m virtlab.count_cache --bundle`) and that
what it says is what counting gives."""
import pytest

from virtlab import backend, count_cache, harness
from workloads.catalog import CATALOG


def default_guests():
    for name in sorted(CATALOG):
        for b in backend.bundled():
            yield name, b, harness.resolve(name, kind=backend.load(b).image)


def test_the_bundle_covers_the_default_bench():
    bundle = count_cache._bundle()
    missing = [f"{name} under {b}" for name, b, g in default_guests()
               if harness.count_key(g, b) not in bundle]
    assert not missing, ("stale or incomplete workloads/images/counts.json: run "
                         "'python -m virtlab.count_cache --bundle'; missing " + ", ".join(missing[:5]))


# Cheap rows, one per back end (each counted afresh here).
SAMPLE = [("nano.cli", "native"), ("nano.cli", "trap"), ("nano.cli", "hw"),
          ("nano.cli", "hw-npt"), ("nano.cli", "bt"), ("nano.crwr", "pv")]


@pytest.mark.parametrize("name, b", SAMPLE)
def test_bundled_counts_are_what_counting_gives(name, b):
    guest = harness.resolve(name, kind=backend.load(b).image)
    counted, ok = harness._count(guest, b, 32, 600.0)
    assert ok
    assert tuple(count_cache._bundle()[harness.count_key(guest, b)]) == counted


def test_the_bundle_can_be_switched_off(monkeypatch):
    guest = harness.resolve("nano.cli")
    key = harness.count_key(guest, "native")
    assert count_cache.lookup(key) is not None
    monkeypatch.setenv("VIRTLAB_NO_BUNDLED_COUNTS", "1")
    monkeypatch.setenv("VIRTLAB_CACHE", "/nonexistent/virtlab-cache")
    count_cache._bundle.cache_clear()
    try:
        assert count_cache.lookup(key) is None
    finally:
        monkeypatch.undo()
        count_cache._bundle.cache_clear()


def test_rebuilding_the_bundle_writes_the_same_bytes(tmp_path):
    entries = dict(count_cache._bundle())
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    count_cache.write_bundle(entries, a)
    count_cache.write_bundle(dict(reversed(list(entries.items()))), b)
    assert a.read_bytes() == b.read_bytes()
