"""The translation cache as a reader would study it: each unit's guest
instructions beside the translated code that stands for each, for
`virtlab translate`.

The result is plain data (lists and dicts of ints, strings and booleans), so
that the front end can print it as text or as JSON without knowing a Unit.
The TC code is disassembled from each unit's own copy of its bytes
(`Unit.code`, as the translator emitted them).  Chaining rewrites exit stubs
in the TC but not that copy, so a stub is shown as what the TC holds now: a
callout while it is unchained ("exit"), a direct jump to the target's
translation once patched ("chained").

Bytes outside every guest instruction's sequence are the unit's own: the
execution counter in front (profiling runs only) and, for a unit that ends
without a branch (12 instructions, or the page's end), the exit stub to the
next guest instruction after the last.
"""
from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from . import layout as L
from .templates import STUB_SIZE, jmp_rel32
from .translate import BRANCH, CALLOUT, IDENT, IN_TC, INDIRECT

_CS = Cs(CS_ARCH_X86, CS_MODE_32)

MARKS = {IDENT: "IDENT", IN_TC: "in-TC", CALLOUT: "callout", INDIRECT: "indirect"}


def units(bt):
    """Every unit in `bt`'s translation cache, in TC order (a flush empties
    the cache, so these are the units made since the last one).
    `executions` is None for a unit made without a counter (profiling off,
    a transient unit, or the counter area full)."""
    cache = bt.cache
    return [_unit(cache, u) for u in cache.units]


def _unit(cache, unit):
    stubs = {ex.at: ex for ex in unit.exits}
    code = _disassemble(unit, stubs)
    first = unit.sites[0].tc if unit.sites else unit.tc_end
    last = unit.sites[-1].tc_end if unit.sites else unit.tc_end
    return {
        "guest": unit.guest, "guest_end": unit.guest_end,
        "tc": unit.tc, "tc_end": unit.tc_end,
        "executions": cache.executions(unit),
        "dead": unit.dead, "transient": unit.transient,
        "prologue": [i for i in code if i["address"] < first],
        "sites": [_site(s, code, stubs) for s in unit.sites],
        "epilogue": [i for i in code if i["address"] >= last],
        "exits": [{"at": ex.at, "target": ex.target, "state": _state(ex),
                   "chained_to": ex.chained_to.tc if ex.chained_to is not None else None}
                  for ex in unit.exits],
    }


def _site(site, code, stubs):
    mine = [i for i in code if site.tc <= i["address"] < site.tc_end]
    return {"guest": site.guest, "size": site.size, "text": site.text,
            "kind": site.kind, "mark": _mark(site, stubs), "reason": site.reason,
            "tc": site.tc, "tc_end": site.tc_end, "code": mine}


def _mark(site, stubs):
    """The site's kind as shown; a branch by the state of its exit stubs, in
    the order the translator laid them out ("exit/chained" for a conditional
    branch whose fall-through is not chained yet and whose target is)."""
    if site.kind != BRANCH:
        return MARKS[site.kind]
    states = [_state(ex) for at, ex in sorted(stubs.items()) if site.tc <= at < site.tc_end]
    if not states:
        return "branch"
    return states[0] if len(set(states)) == 1 else "/".join(states)


def _state(ex):
    return "chained" if ex.chained_to is not None else "exit"


def _disassemble(unit, stubs):
    """The unit's TC code, one dict per instruction; an exit stub is one
    entry, as the TC now holds it."""
    out, pos, code = [], 0, unit.code
    callouts = {c.resume: c.kind for c in unit.callouts}
    while pos < len(code):
        at = unit.tc + pos
        ex = stubs.get(at)
        if ex is not None:
            out.append(_stub(ex, code[pos:pos + STUB_SIZE]))
            pos += STUB_SIZE
            continue
        insn = next(_CS.disasm(code[pos:pos + 15], at, 1), None)
        if insn is None:                     # never emitted by the translator
            out.append(_entry(at, code[pos:pos + 1], f".byte {code[pos]:#04x}", ""))
            pos += 1
            continue
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        note = ""
        if insn.mnemonic == "int" and insn.op_str == hex(L.CALLOUT_VECTOR):
            note = "callout: " + callouts.get(at + insn.size, "?")
        out.append(_entry(at, insn.bytes, text, note))
        pos += insn.size
    return out


def _stub(ex, original):
    if ex.chained_to is not None:
        target = ex.chained_to.tc
        return _entry(ex.at, jmp_rel32(ex.at, target), f"jmp {target:#x}",
                      f"chained to guest {ex.target:#x}")
    return _entry(ex.at, original, f"int {L.CALLOUT_VECTOR:#x}",
                  f"exit: callout to translate guest {ex.target:#x} and chain")


def _entry(address, raw, text, note):
    return {"address": address, "bytes": bytes(raw).hex(), "text": text, "note": note}
