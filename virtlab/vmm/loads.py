"""The checks the CPU makes before it loads SS, TR, LDTR or a returning CS
from a selector.

A deprivileged guest kernel cannot load these itself: at real ring 1 the CPU
refuses its RPL-0 stack selector (RPL must equal the CPL) and the RPL-0 code
selector of its far return or iret to its own ring, and `ltr` and `lldt` are
privileged.  The VMM performs the load for it, and must first fault exactly
where the CPU would, with the same vector and error code; otherwise a kernel
that relies on the fault (or a buggy one) runs on with a code segment in SS,
a data segment or a TSS in CS, a busy TSS loaded twice, or a data descriptor as its LDT -- or, worse,
with an SS of DPL 3 that silently drops the CPU to ring 3 (QEMU takes the CPL
from SS).  The rules are the SDM's (vol. 2: MOV, POP, LSS, LTR, LLDT, RET, IRET, JMP, CALL); the
error code is the selector without its RPL, as the CPU pushes it.

TR and LDTR come only from the GDT (a selector with TI set is #GP); a stack
selector with TI set names the LDT: beyond its limit, or with none loaded, it
is #GP(selector); within it, the VMM does not perform the load
(check_stack_segment leaves it to the caller, which ends the run saying so).
Each function returns the descriptor (lo, hi) it checked, or raises
DeliveryFault, which the VMM delivers at the instruction.
"""
from virtlab import x86
from virtlab.delivery import DeliveryFault, read_descriptor

TSS16_AVAILABLE, TSS32_AVAILABLE, LDT_TYPE = 0x1, 0x9, 0x2


def _type(hi):
    return (hi >> 8) & 0xF


def _fault(vector, selector, why):
    return DeliveryFault(vector, selector & 0xFFFC, f"{why} ({selector:#x})")


def check_stack_segment(view, gdtr, selector, cpl, ldt_limit=None):
    """SS: not null (#GP(0)); within the table, RPL = CPL, a writable data
    segment of DPL = CPL (else #GP(selector)); present (else #SS(selector)).
    An LDT selector is #GP(selector) beyond `ldt_limit` (None: no LDT is
    loaded), and None within it (not checked further here)."""
    if selector & 4:
        if ldt_limit is None or (selector & ~7) + 7 > ldt_limit:
            raise _fault(x86.GP, selector, "beyond the LDT, or no LDT loaded, for SS")
        return None
    if selector & 0xFFFC == 0:
        raise DeliveryFault(x86.GP, 0, "null selector loaded into SS")
    lo, hi = read_descriptor(view, gdtr, selector)        # #GP(selector) past the limit
    writable_data = hi & x86.DESC_S and not hi & x86.DESC_CODE and hi & x86.DESC_RW
    if selector & 3 != cpl or not writable_data or x86.seg_dpl(hi) != cpl:
        raise _fault(x86.GP, selector, "not a writable data segment of the CPL for SS")
    if not hi & x86.DESC_P:
        raise _fault(x86.SS, selector, "stack segment not present")
    return lo, hi


def check_return_code_segment(view, gdtr, selector, cpl):
    """CS of a far return or iret to the same privilege level (vol. 2: RET,
    IRET): a code segment whose DPL is the RPL (at most the RPL if it is
    conforming), the RPL not below the CPL.  The CPU pops the frame before it
    checks any of this, so a fault here leaves ESP as it was."""
    rpl = selector & 3
    return _code_segment(view, gdtr, selector, lambda dpl, conforming: rpl >= cpl and (
        dpl <= rpl if conforming else dpl == rpl))


def check_far_code_segment(view, gdtr, selector, cpl):
    """CS of a far jmp or call to a code segment (vol. 2: JMP, CALL): a
    conforming one of DPL at most the CPL, or a nonconforming one of DPL the
    CPL with an RPL not above it.  (A call gate or a TSS is the caller's to
    recognise first.)"""
    rpl = selector & 3
    return _code_segment(view, gdtr, selector, lambda dpl, conforming: (
        dpl <= cpl if conforming else rpl <= cpl and dpl == cpl))


def _code_segment(view, gdtr, selector, allowed):
    """What every load of CS checks: not null (#GP(0)); within the table, a
    code segment that allowed(dpl, conforming) accepts (else #GP(selector));
    present (else #NP(selector)).  None for an LDT selector (not checked
    here)."""
    if selector & 4:
        return None
    if selector & 0xFFFC == 0:
        raise DeliveryFault(x86.GP, 0, "null selector loaded into CS")
    lo, hi = read_descriptor(view, gdtr, selector)        # #GP(selector) past the limit
    code = hi & x86.DESC_S and hi & x86.DESC_CODE
    if not code or not allowed(x86.seg_dpl(hi), hi & x86.DESC_CONFORMING):
        raise _fault(x86.GP, selector, "not a code segment this transfer may load")
    if not hi & x86.DESC_P:
        raise _fault(x86.NP, selector, "code segment not present")
    return lo, hi


def check_task_register(view, gdtr, selector):
    """LTR: an available TSS in the GDT (a busy one, or anything else:
    #GP(selector)), present (else #NP(selector)).  A null selector, for which
    the SDM gives #GP(0), the CPU model loads as a null TR, and so does the
    VMM, as the guest would see natively: None."""
    if selector & 0xFFFC == 0:
        return None
    lo, hi = read_descriptor(view, gdtr, selector)
    if hi & x86.DESC_S or _type(hi) not in (TSS16_AVAILABLE, TSS32_AVAILABLE):
        raise _fault(x86.GP, selector, "ltr of a selector that is not an available TSS")
    if not hi & x86.DESC_P:
        raise _fault(x86.NP, selector, "TSS not present")
    return lo, hi


def check_ldt(view, gdtr, selector):
    """LLDT: a null selector is allowed (LDTR becomes unusable: None); else
    an LDT descriptor in the GDT (#GP(selector)), present (#NP(selector))."""
    if selector & 0xFFFC == 0:
        return None
    lo, hi = read_descriptor(view, gdtr, selector)
    if hi & x86.DESC_S or _type(hi) != LDT_TYPE:
        raise _fault(x86.GP, selector, "lldt of a selector that is not an LDT")
    if not hi & x86.DESC_P:
        raise _fault(x86.NP, selector, "LDT not present")
    return lo, hi
