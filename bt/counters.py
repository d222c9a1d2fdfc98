"""The counters `bt` introduces, what they mean and what they cost.

The costs are defaults for every CPU profile (a profile may override them).
The Pentium 4 figures are Adams & Agesen's (ASPLOS 2006); no later paper
measured a software VMM's translator, so the other profiles use the same
numbers, which is an assumption: a callout and the in-TC sequences are
ordinary code, with no VM exit whose cost fell from CPU to CPU.
"""
from virtlab.counters import Cost, CounterSpec

_AA = "Adams & Agesen 2006"


def _free(name, meaning, kind, reason):
    return CounterSpec(name, meaning, charged=False, kind=kind, reason=reason)


BT = (
    CounterSpec("bt.translate.instructions", "a guest instruction translated", kind="translation",
                cost=Cost(2300, source=f"{_AA}: the translator costs about 2300 cycles per "
                          "guest instruction translated")),
    _free("bt.translate.units", "a translation unit made (at most 12 guest instructions)",
          "translation", "its cost is that of its instructions (bt.translate.instructions)"),
    _free("bt.translate.bytes", "bytes of translated code written into the TC", "translation",
          "a size, not an event"),
    CounterSpec("bt.callout", "a call from translated code into the VMM", kind="callouts",
                cost=Cost(1254, source=f"{_AA}: rdtsc by a callout from translated code, "
                          "then emulated, 1254 cycles on the Pentium 4",
                          assumption="the same on every profile: a callout is software, "
                          "not a VM exit")),
    CounterSpec("bt.callout.io", "a port access from translated code, through the CPU's port "
                "hook to the device model", kind="io",
                cost=Cost(1704, source=f"{_AA}: a callout, 1254 cycles (rdtsc by callout)",
                          assumption="plus the software device model the trap and hw exits "
                          "pay: 300 VMM instructions at CPI 1.5 = 450")),
    CounterSpec("bt.callout.ptwrite", "a store to a traced page table performed by a "
                "callout after adaptive retranslation, without a fault", kind="paging",
                cost=Cost(2154, source=f"{_AA}: a callout, 1254 cycles (rdtsc by callout)",
                          assumption="plus the shadow work of a traced write the #PF exits "
                          "pay: 600 VMM instructions at CPI 1.5 = 900")),
    _free("bt.callout.*", "bt.callout by what was called out for (an instruction, io, "
          "chain, miss, irq, ptwrite)", "callouts", "a subset of bt.callout, charged there"),
    _free("bt.chain", "an exit stub patched into a direct jump to its target's translation",
          "translation", "done during the callout that first reached the stub (bt.callout.chain)"),
    CounterSpec("bt.indirect.hit", "an indirect branch (ret, jmp/call r/m) found its target in "
                "the TC's table, without leaving the TC", kind="translation",
                cost=Cost(12, assumption="the inline lookup is about a dozen simple "
                          "instructions (two loads, lea, jecxz, an indirect jump) against the "
                          "native call/ret pair's 11 cycles")),
    _free("bt.indirect.miss", "an indirect branch whose target was not in the table: a callout",
          "callouts", "charged as the callout it is (bt.callout.miss)"),
    CounterSpec("bt.intc.cli", "a cli run in the TC (a store to the virtual IF)", kind="privileged",
                cost=Cost(5, source=f"{_AA}: 'a handful' of cycles for cli in the TC, "
                          "against 60 native")),
    CounterSpec("bt.intc.sti", "an sti run in the TC (a store, and a test for a waiting "
                "interrupt)", kind="privileged",
                cost=Cost(5, source=f"{_AA}: 'a handful' of cycles, as for cli")),
    CounterSpec("bt.intc.pushf", "a pushf run in the TC (virtual IF and IOPL put in the pushed "
                "word)", kind="privileged",
                cost=Cost(15, assumption="pushfd plus about eight simple instructions")),
    CounterSpec("bt.intc.popf", "a popf run in the TC (IF and IOPL taken into the vCPU page)",
                kind="privileged",
                cost=Cost(20, assumption="popfd plus about a dozen simple instructions")),
    CounterSpec("bt.intc.movseg", "a mov from cs or ss run in the TC (the RPL the guest "
                "expects)", kind="privileged",
                cost=Cost(5, assumption="two simple instructions more than the move itself")),
    _free("bt.fetch_fault", "a guest page fault found while fetching kernel code to translate, "
          "delivered within a VMM entry counted under another kind", "paging",
          "charged as the reflection it is (reflect.pf)"),
    _free("bt.invalidate", "a translation dropped because the guest wrote its code page, "
          "or invalidated or remapped its page (invlpg, a CR3 load)", "translation",
          "it happens inside the page fault the write took (exit.pf.hidden) or the callout "
          "of the invlpg or CR3 load; its retranslation is bt.translate.instructions"),
    _free("bt.retranslate", "a store retranslated by adaptive translation (to a callout, or "
          "back to IDENT)", "translation", "its retranslation is bt.translate.instructions"),
    _free("bt.tc.flush", "the translation cache was full and was emptied", "translation",
          "the cost is the retranslation that follows (bt.translate.instructions)"),
)
