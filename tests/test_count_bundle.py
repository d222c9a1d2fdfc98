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


def test_a_bundled_count_differs_from_natives_only_where_the_back_end_is_unfaithful():
    # A back end that runs a workload faithfully runs the same guest
    # instructions as native (test_icount.py), so the bundle can be checked
    # whole without counting again: a row of the same image that differs
    # from native's must be a divergence the back end declares.  (A stale
    # entry was caught so: trap's fidelity.smsw, counted before trap came
    # to run it faithfully.)
    rows = {}
    for key, value in count_cache._bundle().items():
        digest, workload, scale, b, ram, _ = key.split("|")
        rows.setdefault((digest, workload, scale, ram), {})[b] = value
    wrong = []
    for (_, workload, scale, _), per in sorted(rows.items()):
        native = per.get("native")
        for b, value in per.items():
            if native is not None and value != native \
                    and workload not in backend.load(b).unfaithful:
                wrong.append(f"{workload} at scale {scale} under {b}: {value} != native {native}")
    assert not wrong, "stale workloads/images/counts.json? " + "; ".join(wrong[:5])


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
    count_cache.clear_bundle()
    try:
        assert count_cache.lookup(key) is None
    finally:
        monkeypatch.undo()
        count_cache.clear_bundle()


def test_rebuilding_the_bundle_writes_the_same_bytes(tmp_path):
    entries = dict(count_cache._bundle())
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    count_cache.write_bundle(entries, a)
    count_cache.write_bundle(dict(reversed(list(entries.items()))), b)
    assert a.read_bytes() == b.read_bytes()


def test_entries_in_reads_back_what_a_cache_holds(tmp_path, monkeypatch):
    # How the lessons' counts reach the bundle: what runs with an empty
    # cache counted, read back key by key; an unreadable or foreign file is
    # no entry.
    monkeypatch.setenv("VIRTLAB_CACHE", str(tmp_path))
    count_cache.store("a|key", (10, 4))
    count_cache.store("b|key", (7, 0))
    (tmp_path / "instructions" / "junk.json").write_text("{not json")
    (tmp_path / "instructions" / "other.json").write_text('{"key": 3, "value": [1, 2]}')
    assert count_cache.entries_in(tmp_path) == {"a|key": [10, 4], "b|key": [7, 0]}
    assert count_cache.entries_in(tmp_path / "nothing-here") == {}
