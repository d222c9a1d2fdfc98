"""SYSENTER and SYSEXIT, the IA-32 fast system call (SDM vol. 2B; vol. 3, 5.8.7).

Unicorn does not implement SYSENTER: QEMU's helper only calls the UC_HOOK_INSN
hooks for UC_X86_INS_SYSENTER and then adds the instruction's length to EIP
(measured: with no hook the guest goes on at a wrong EIP, with one it goes on
after the instruction at the same CPL).  SYSEXIT is QEMU's own and correct at
real ring 0.  The machine therefore hooks SYSENTER (machine.py) and the back
end performs it here, through its view of the CPU (delivery.RealCpuView, or the
ring-compressed vmm.reflect.VirtualCpuView), so that the guest kernel's ring 0
becomes whatever real ring that back end runs it at.

Neither instruction reads the GDT: both load fixed flat caches derived from
IA32_SYSENTER_CS.
"""
from . import x86

SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP = 0x174, 0x175, 0x176
MSRS = (SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP)

# Flat 4-GiB segments as SYSENTER/SYSEXIT load them (low dword, high dword):
# 32-bit, page-granular, present, accessed; code execute/read, data read/write.
_FLAT_LO = 0x0000FFFF
_CODE = 0x00CF9B00
_DATA = 0x00CF9300


def _flat(kind, dpl):
    return kind | (dpl << x86.DESC_DPL_SHIFT)


def enter_kernel(state, cpu, cs, esp, eip):
    """SYSENTER's segment, stack and instruction-pointer loads (the caller
    checked that SYSENTER_CS is not null and clears IF, VM and RF as its view
    of the CPU requires): CS = SYSENTER_CS & 0xFFFC, flat ring-0 code; SS = CS
    + 8, flat ring-0 data; ESP and EIP from the MSRs."""
    sel = cs & 0xFFFC
    state.set_segment("cs", *cpu.segment(sel, _FLAT_LO, _flat(_CODE, 0), 0))
    state.set_segment("ss", *cpu.segment(sel + 8, _FLAT_LO, _flat(_DATA, 0), 0))
    state.set_reg("esp", esp)
    state.eip = eip


def exit_to_user(state, segment, cs):
    """SYSEXIT's loads: CS = (SYSENTER_CS + 16) | 3, SS = (SYSENTER_CS + 24) | 3,
    both flat ring 3; EIP = EDX, ESP = ECX.  `segment` is a view's segment()."""
    state.set_segment("cs", *segment((cs + 16) | 3, _FLAT_LO, _flat(_CODE, 3), 3))
    state.set_segment("ss", *segment((cs + 24) | 3, _FLAT_LO, _flat(_DATA, 3), 3))
    state.set_reg("esp", state.reg("ecx"))
    state.eip = state.reg("edx")


def native_sysenter(backend, events, counter="native.sysenter"):
    """SYSENTER on a guest that owns the real ring 0 (native; hw and hw-npt,
    where VT-x does not exit on it): the MSRs are the real ones.  Returns True
    if the instruction completed, False if an interrupt or #GP(0) was delivered
    at it instead."""
    m, st = backend.machine, backend.machine.state
    if st.system_flags() & x86.IF and events.interrupt_first(False, backend):
        return False
    cs = m.read_msr(SYSENTER_CS) & 0xFFFF
    if cs & 0xFFFC == 0:
        st.set_error_code(0)
        backend.exception(x86.GP)
        return False
    m.counters[counter] += 1
    m.clock.tick()
    enter_kernel(st, events.path.cpu, cs, m.read_msr(SYSENTER_ESP), m.read_msr(SYSENTER_EIP))
    st.set_eflags(st.eflags() & ~(x86.IF | x86.VM | x86.RF))
    return True
