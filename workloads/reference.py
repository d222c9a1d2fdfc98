"""Python re-implementations of the workloads' deterministic results.

The guest programs in ``user/progs`` print checksums and counts; these functions
compute the same values independently, from the same definitions, so tests can
check a run's console without trusting the guest. ``expected_lines(name, scale)``
gives the lines (without newline) that a correct *native* run must print.
"""

from __future__ import annotations

import zlib

M32 = 0xFFFFFFFF


def _u32(x: int) -> int:
    return x & M32


class Lcg:
    """The guests' generator: seed = seed * 1664525 + 1013904223 (mod 2**32)."""

    def __init__(self, seed: int):
        self.seed = _u32(seed)

    def __call__(self) -> int:
        self.seed = _u32(self.seed * 1664525 + 1013904223)
        return self.seed


def crc32(data: bytes, crc: int = 0) -> int:
    """Standard CRC-32 (IEEE, reflected, as zlib) -- what the guests compute."""
    return zlib.crc32(data, crc) & M32


# --- macro.compute -------------------------------------------------------------------
NSORT, NCRC, NMAT = 1000, 4096, 20


def _sieve(limit: int) -> tuple[int, int]:
    comp = bytearray(limit)
    count = total = 0
    for i in range(2, limit):
        if comp[i]:
            continue
        count += 1
        total += i
        comp[i * i:limit:i] = b"\x01" * len(range(i * i, limit, i))
    return count, _u32(total)


def compute_reference(scale: int) -> dict:
    """The totals macro.compute prints for `scale` iterations."""
    t_sort = t_crc = t_primes = t_psum = t_mat = 0
    for i in range(scale):
        rnd = Lcg(0x12345678 ^ _u32(i * 0x9E3779B9))
        vals = sorted(rnd() for _ in range(NSORT))
        t_sort = _u32(t_sort + sum(v * (k + 1) for k, v in enumerate(vals)))
        buf = bytes(rnd() >> 24 for _ in range(NCRC))
        t_crc ^= crc32(buf)
        count, psum = _sieve(20000 + (i % 8) * 1000)
        t_primes += count
        t_psum = _u32(t_psum + psum)
        a = [[rnd() & 0xFFFF for _ in range(NMAT)] for _ in range(NMAT)]
        b = [[rnd() & 0xFFFF for _ in range(NMAT)] for _ in range(NMAT)]
        cs = 0
        for r in range(NMAT):
            ar = a[r]
            for c in range(NMAT):
                acc = sum(ar[k] * b[k][c] for k in range(NMAT))
                cs += _u32(acc) * (r * NMAT + c + 1)
        t_mat = _u32(t_mat + cs)
    return {"sort": t_sort, "crc32": t_crc, "primes": _u32(t_primes),
            "prime_sum": t_psum, "matmul": t_mat}


# --- macro.disk ----------------------------------------------------------------------
DISK_BASE_LBA, DISK_NSECT, DISK_AREA = 64, 2, 256


def disk_reference(scale: int) -> dict:
    """macro.disk: the final contents of its disk area and their CRC-32."""
    rnd = Lcg(0xD15C0000)
    block = DISK_NSECT * 512
    area: dict[int, bytes] = {}
    for i in range(scale):
        data = b"".join(rnd().to_bytes(4, "little") for _ in range(block // 4))
        area[i % DISK_AREA] = data
    nblocks = min(scale, DISK_AREA)
    crc = 0
    for k in range(nblocks):
        crc = crc32(area[k], crc)
    return {"crc32": crc, "nblocks": nblocks}


# --- macro.build (and its compiler, progs/cc.c) ---------------------------------------
BUILD_MAXFILES = 3000
OBJ_MAGIC = 0x314A424F
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619
CC_TABSZ, CC_MAXSYM = 512, 121


def build_sources(scale: int) -> list[bytes]:
    """The source sectors macro.build writes, one per file."""
    rnd = Lcg(0xB111D000)
    out = []
    for _ in range(min(scale, BUILD_MAXFILES)):
        src = bytearray(512)
        for k in range(512):
            c = (rnd() >> 24) & 7
            src[k] = 0x20 if c < 2 else ord("a") + c - 2
        out.append(bytes(src))
    return out


def _fnv1a(word: bytes) -> int:
    h = FNV_OFFSET
    for ch in word:
        h = _u32((h ^ ch) * FNV_PRIME)
    return h


def build_object(index: int, src: bytes) -> bytes:
    """The one-sector object progs/cc.c writes for source file `index`."""
    crc = crc32(src)
    tokens = [w for w in src.split(b" ") if w]
    counts: dict[int, int] = {}
    for w in tokens:
        h = _fnv1a(w)
        counts[h] = counts.get(h, 0) + 1
    if len(counts) > CC_TABSZ:
        raise ValueError("symbol table overflow")
    uniq = sorted(counts)
    x = crc
    for k in range(32):
        for u in uniq:
            x = _u32((x ^ u ^ k) * FNV_PRIME)
    words = [0] * 128
    words[0], words[1], words[2], words[3], words[4] = OBJ_MAGIC, index, len(tokens), len(uniq), crc
    for p, u in enumerate(uniq[:CC_MAXSYM]):
        words[5 + p] = u
    words[126] = max(counts.values()) if counts else 0
    words[127] = x
    return b"".join(w.to_bytes(4, "little") for w in words)


def build_reference(scale: int) -> dict:
    """The totals macro.build prints: tokens, symbols, code sum, link CRC-32."""
    tokens = symbols = code = 0
    crc = 0
    files = build_sources(scale)
    for i, src in enumerate(files):
        obj = build_object(i, src)
        w = [int.from_bytes(obj[4 * k:4 * k + 4], "little") for k in range(128)]
        tokens += w[2]
        symbols += w[3]
        code = _u32(code + w[127])
        crc = crc32(obj, crc)
    return {"files": len(files), "tokens": _u32(tokens), "symbols": _u32(symbols),
            "code": code, "crc32": crc}


# --- small closed forms ----------------------------------------------------------------
PGFAULT_CHUNK = 128


def pgfault_sum(scale: int) -> int:
    total, done = 0, 0
    while done < scale:
        n = min(PGFAULT_CHUNK, scale - done)
        total += n * (n + 1) // 2
        done += n
    return _u32(total)


def mmap_sum(scale: int, npages: int = 4) -> int:
    return _u32(sum(i + p for i in range(scale) for p in range(npages)))


def _h(v: int) -> str:
    return f"0x{v:08x}"


def expected_lines(name: str, scale: int) -> list[str] | None:
    """Lines a correct native run of workload `name` at `scale` prints (in order).

    Returns None for a workload whose output is not fully predictable from outside
    (e.g. it prints the current process id or a CPU's vendor string); tests then
    check its shape instead.
    """
    s = max(1, scale)
    kb = {"nano.in": "in", "nano.crwr": "crwr", "nano.callret": "callret",
          "nano.ptemod": "ptemod", "nano.cli": "cli", "nano.popf": "popf"}
    if name in kb:
        return [f"{kb[name]}: {s} iterations"]
    if name == "nano.syscall":
        return [f"syscall: {s} getpid calls, 0 mismatches"]
    if name == "nano.pgfault":
        return [f"pgfault: {s} pages faulted, 0 not zero, sum {pgfault_sum(s)}"]
    if name == "nano.divzero":
        return [f"divzero: {s} iterations, {s} faults caught, 0 wrong results"]
    if name == "nano.rdtsc":
        return [f"rdtsc: {s} reads, monotonic: yes"]
    if name == "micro.fork":
        return [f"fork: {s} fork/exit/wait, 0 bad"]
    if name == "micro.exec":
        return [f"exec: {s} fork/exec/wait, 0 bad"]
    if name == "micro.ctxsw":
        return [f"ctxsw: 2 processes, {s} round trips, 1 children reaped, 0 bad status"]
    if name == "micro.pagefault":
        rounds = -(-s // 64)
        return [f"pagefault: {s} COW faults in {rounds} rounds of up to 64 pages, 0 bad"]
    if name == "micro.protfault":
        return [f"protfault: {s} iterations, {s} faults caught, 0 stores got through"]
    if name == "micro.mmap":
        return [f"mmap: {s} map/touch/unmap of 4 pages, sum {mmap_sum(s)}, 0 not zero"]
    if name == "macro.compute":
        r = compute_reference(s)
        return [f"compute: {s} iterations",
                f"sort: {_h(r['sort'])}",
                f"crc32: {_h(r['crc32'])}",
                f"sieve: {r['primes']} primes, sum {_h(r['prime_sum'])}",
                f"matmul: {_h(r['matmul'])}",
                "compute: ok"]
    if name == "macro.forkwait":
        return [f"forkwait: {s} fork/wait pairs, 0 bad"]
    if name == "macro.disk":
        r = disk_reference(s)
        return [f"disk: {s} blocks of 2 sectors written and read back, 0 mismatches, 0 errors",
                f"disk: area crc32 {_h(r['crc32'])} over {r['nblocks']} blocks"]
    if name == "macro.build":
        r = build_reference(s)
        return [f"build: {r['files']} files compiled, 0 bad",
                f"build: {r['tokens']} tokens, {r['symbols']} symbols, "
                f"code {_h(r['code'])}, link crc32 {_h(r['crc32'])}"]
    return None


# What the fidelity probes must say on real hardware (the native back end): the
# kernel runs at ring 0, so popf clears IF, pushf shows the cleared IF, CS RPL is 0,
# and the descriptor tables live in the guest kernel's own memory.
NATIVE_FIDELITY = {
    "fidelity.popf": ["popf: kernel IF after popf(IF=0) = 0 (popf honoured)",
                      "popf: user IF after popf(IF=0) = 1 (user popf cannot change IF)"],
    "fidelity.pushf": ["pushf: kernel IF seen by pushf after cli = 0 (matches cli)",
                       "pushf: user pushf IF = 1, IOPL = 0"],
    "fidelity.pushcs": ["pushcs: kernel CS RPL = 0 (ring 0)",
                        "pushcs: user CS = 0x1b, RPL = 3"],
    "fidelity.sidt": ["str: kernel TR 0x28, kernel loaded 0x28: match yes",
                      "str: user TR 0x28",
                      "sidt: user mode sees the kernel's tables: yes"],
    "fidelity.smsw": [],
}
