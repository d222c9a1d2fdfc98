"""Differential testing of bt at scale: generated guest-kernel sequences run
natively and under bt (and any other back ends named), counted where they end
differently.

    python benchmarks/bt_differential.py [--sequences N] [--json] [--jobs J]
    python benchmarks/bt_differential.py --seed S --index I [--shrink]
    python benchmarks/bt_differential.py --without pushf16,popf16 ...
    python benchmarks/bt_differential.py --backends trap --classic
    python benchmarks/bt_differential.py --backends bt,hw --user

The sequences are virtlab/seqgen.py's, --per-image to a guest image (seeds
--first-seed, --first-seed + 1, ...; odd seeds with paging on), the same as
tests/test_bt_differential.py runs for its first seeds.  --json prints one
summary line: sequences run, mismatches (sequences whose end state differs
from native under some back end), images whose run, console or GDT differ,
the same two counts for each back end alone (by_backend: trap, documented to
differ, fills the totals), and seconds of host time.  --show N prints the
first N mismatches in full.

--seed and --index reproduce one sequence alone (in its own image, at its
own block); --shrink then drops its items while it still differs, to a
minimal sequence.  --without leaves out features known to differ
(seqgen.FEATURES), to look for other differences past them.

--classic generates classic sequences instead (seqgen.py): only what classic
trap-and-emulate runs as the CPU does, so that trap, documented to differ on
the sensitive instructions, is compared exactly like the others.  --user runs
the sequences at ring 3, entering the kernel only through interrupts and
exceptions (with --classic too for trap).
"""
import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virtlab import asmseq as S, backend as B, seqgen as G      # noqa: E402
from guestbench import integer                        # noqa: E402


def check_image(seed, per_image, backends, without, show, classic=False, user=False,
                mmu=False):
    """Run one image under native and `backends`; what differed."""
    seqs = G.batch(seed, per_image, without=without, classic=classic, user=user, mmu=mmu)
    img = S.image(seqs)
    ref = S.run("native", seqs, img)
    bad, problems, reports = set(), [], []
    by_backend = {}                  # name -> [mismatching sequences, image differs]
    for name in backends:
        other = S.run(name, seqs, img)
        differences = S.image_differences(ref, other)
        problems += [f"seed {seed} {name}: {p}" for p in differences]
        mismatches = S.compare(seqs, ref, other)
        by_backend[name] = [len(mismatches), bool(differences)]
        for m in mismatches:
            bad.add(m.sequence.index)
            if len(reports) < show:
                reports.append(m.report())
    return {"seed": seed, "sequences": len(seqs), "mismatches": sorted(bad),
            "problems": problems, "reports": reports, "native_ok": ref.ok,
            "by_backend": by_backend}


def per_backend(done, backends):
    """{back end: {"mismatches": sequences, "images_differing": images}}: each
    back end's own count, so that one documented to differ (trap) cannot hide
    another's finding in the totals."""
    return {name: {"mismatches": sum(d["by_backend"][name][0] for d in done),
                   "images_differing": sum(d["by_backend"][name][1] for d in done)}
            for name in backends}


def one(args, backends, without):
    """Reproduce (and with --shrink, minimise) one sequence."""
    seq = G.generate(args.seed, args.index, bool(args.seed & 1) or args.mmu, without,
                     args.classic, args.user, args.mmu)

    def differs(s):
        ref = S.run("native", [s])
        return any(S.compare([s], ref, S.run(name, [s])) for name in backends)

    if args.shrink and differs(seq):
        seq = S.shrink(seq, differs)
    ref = S.run("native", [seq])
    print(seq.source())
    print("native:\n  " + S.dump_text(ref.results[0]))
    for name in backends:
        other = S.run(name, [seq])
        mismatch = S.compare([seq], ref, other)
        print(f"{name}:\n  " + S.dump_text(other.results[0]))
        for line in (S.differences(ref.results[0], other.results[0]) if mismatch else
                     ["(the same as native)"]):
            print("  " + line)


def _check_backend(parser, name, classic):
    """Refuse a back end that cannot run the sequences (one line, exit 2),
    and say it when one is documented to differ from native on them."""
    try:
        cls = B.load(name)
    except B.UnknownBackend as exc:
        parser.error(exc.args[0])
    if cls.image != "native":
        parser.error(f"back end '{name}' boots its own kind of image ({cls.image}); "
                     "the sequences run on the native image")
    if cls.unfaithful and not classic:
        print(f"note: {name} is documented to differ from native ({', '.join(cls.unfaithful)}): "
              "the sequences use the sensitive instructions it runs unmodified, and each "
              "one's EFLAGS are set with popf, so many of its mismatches are those "
              "(--classic leaves them out)", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=integer(1), default=10_000,
                   help="sequences to generate and compare (default 10,000)")
    p.add_argument("--per-image", type=integer(1), default=100, metavar="N",
                   help=f"sequences in one guest image, at most {S.MAX_SEQUENCES} (default 100)")
    p.add_argument("--first-seed", type=integer(0), default=0, metavar="S",
                   help="the seed of the first image; image i has seed S + i (default 0)")
    p.add_argument("--backends", default="bt", help="compared with native (comma-separated)")
    p.add_argument("--without", default="", help="features to leave out: "
                   + ", ".join(sorted(G.FEATURES)))
    p.add_argument("--classic", action="store_true",
                   help="classic sequences: only what classic trap-and-emulate runs as "
                        "the CPU does (for comparing trap exactly)")
    p.add_argument("--user", action="store_true",
                   help="user sequences: run at ring 3, entering the kernel through "
                        "interrupts and exceptions")
    p.add_argument("--mmu", action="store_true",
                   help="mmu sequences: each also rewrites a page-table entry and a 4 MiB "
                        "directory entry of its own, and CR0.WP and CR4.PSE (paging on; "
                        "not with --user)")
    p.add_argument("--jobs", type=integer(1), default=1,
                   help="images run in parallel processes (default 1)")
    p.add_argument("--show", type=integer(0), default=0, metavar="N",
                   help="mismatches to print in full (default 0)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--seed", type=integer(0), help="with --index: reproduce one sequence")
    p.add_argument("--index", type=integer(0),
                   help="with --seed: the sequence's index in its image")
    p.add_argument("--shrink", action="store_true",
                   help="with --seed and --index: reduce a mismatching sequence to a minimal one")
    args = p.parse_args(argv)
    if args.per_image > S.MAX_SEQUENCES:
        p.error(f"--per-image: at most {S.MAX_SEQUENCES} sequences fit in one image")
    backends = [b for b in args.backends.split(",") if b]
    for name in backends:
        _check_backend(p, name, args.classic)
    without = [w for w in args.without.split(",") if w]
    if args.mmu and args.user:
        p.error("--mmu sequences run in the kernel: not with --user")
    if args.seed is not None or args.index is not None:
        if args.seed is None or args.index is None:
            p.error("--seed and --index go together")
        return one(args, backends, without)
    images = -(-args.sequences // args.per_image)
    seeds = range(args.first_seed, args.first_seed + images)
    jobs = [(seed, args.per_image, backends, without, args.show, args.classic, args.user,
             args.mmu) for seed in seeds]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            done = list(pool.map(check_image, *zip(*jobs)))
    else:
        done = [check_image(*job) for job in jobs]
    seconds = time.perf_counter() - t0
    summary = {"sequences": sum(d["sequences"] for d in done),
               "images": len(done),
               "backends": backends,
               "without": without,
               "classic": args.classic,
               "user": args.user,
               "mmu": args.mmu,
               "mismatches": sum(len(d["mismatches"]) for d in done),
               "images_differing": sum(bool(d["problems"]) for d in done),
               "native_failed": sum(not d["native_ok"] for d in done),
               "by_backend": per_backend(done, backends),
               "seconds": round(seconds, 2)}
    for d in done:
        for r in d["reports"][:max(0, args.show)]:
            print(r)
        args.show -= len(d["reports"])
    if args.json:
        print(json.dumps(summary))
    else:
        for d in done:
            if d["mismatches"] or d["problems"]:
                print(f"seed {d['seed']}: sequences {d['mismatches']}")
                for line in d["problems"]:
                    print("  " + line)
        for k, v in summary.items():
            if k == "by_backend":
                print("by back end")
                for name, counts in v.items():
                    print(f"{'  ' + name:<18} {counts['mismatches']} mismatches, "
                          f"{counts['images_differing']} images differing")
            else:
                print(f"{k:<18} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
