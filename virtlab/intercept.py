"""Translation-time intercepts: making chosen instructions exit without changing
a byte of guest memory.

VT-x decides in hardware which instructions exit; Unicorn has no such controls,
and patching the guest's code would be visible to it.  Instead the machine
watches Unicorn translate guest code (UC_HOOK_EDGE_GENERATED fires for each new
translation block), decodes each new block once, and puts an exact-address
UC_HOOK_CODE hook on every instruction some client wants to see: a VMM's exits,
the sensitive-instruction audit, the I/O permission check of user code.  A hook
added while a block is being generated does not apply to that block's first
run, so the machine stops the CPU, drops that block from the translation cache
and restarts it: the block has not run yet, so nothing is lost
(docs/unicorn.md, item 8).

A client is a pair of functions: select(insn, cpl) -> a kind or None, called at
translation time with the privilege level the block is translated for, and
on_hit, called before each execution of a selected instruction.  select must
answer from the instruction and the privilege level alone: at an exit its
answer for a decoded instruction is remembered with the decoding.  A hook runs
*before* its instruction, so an instruction that then faults (a push to a stack
page not yet mapped) is hooked again when it is retried; a client that counts
executions passes on_retry to take the first one back.

There are two kinds of client.  An observer (on_hit(address, kind)) only looks:
the sensitive-instruction audit.  An exit client (watch(..., exit=True)) is a
VMM that wants the instruction to exit, as VT-x would make it: the machine
saves the CPU with EIP at the instruction, decodes it again (the page may hold
other code by now: then the hook is stale and nothing happens), and calls
on_hit(decoded, kind) with the CPU saved.  The client answers
  None       not an exit after all: the instruction runs natively;
  EMULATED   the VMM performed it: the guest resumes at the saved EIP, and the
             instruction counts as executed;
  RAISED     the VMM delivered an exception instead (the instruction did not
             complete): the guest resumes at the saved EIP, in its handler.
"""
import ctypes

from capstone import x86_const as C
from unicorn import UC_HOOK_CODE, UC_HOOK_EDGE_GENERATED
from unicorn.unicorn_py3.unicorn import uc_tb

from .decode import decode_lazily, decoded_block
from .memory import GuestMemoryFault

_EDGE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(uc_tb),
                            ctypes.POINTER(uc_tb), ctypes.c_void_p)
_CODE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                            ctypes.c_void_p)


# Where Unicorn (QEMU) ends a translation block: every control transfer (all
# the jumps, calls, returns and interrupts, by capstone instruction id), and
# the instructions after which the CPU cannot simply go on.
BLOCK_END_IDS = frozenset(
    [v for k, v in vars(C).items() if k.startswith(("X86_INS_J", "X86_INS_LOOP"))]
    + [C.X86_INS_CALL, C.X86_INS_LCALL, C.X86_INS_LJMP, C.X86_INS_RET, C.X86_INS_RETF,
       C.X86_INS_IRET, C.X86_INS_IRETD, C.X86_INS_INT, C.X86_INS_INT1, C.X86_INS_INT3,
       C.X86_INS_INTO, C.X86_INS_SYSENTER, C.X86_INS_SYSEXIT, C.X86_INS_SYSCALL,
       C.X86_INS_SYSRET, C.X86_INS_HLT, C.X86_INS_UD2])


EMULATED, RAISED = "emulated", "raised"


class Intercepts:
    def __init__(self, machine):
        self.machine = machine
        self.clients = []
        self.hits = {}                       # address -> [(on_hit, kind)]
        self._code_cb = _CODE_CB(self._on_code)
        self._installed = False
        self._retry = {}                     # on_hit -> on_retry
        self._exits = {}                     # on_hit -> select, for exit clients
        self.observer = None                 # trace.Tracer, when a run is traced
        # Calls of observers (the kernel's iret under trap, the audit): the
        # platform gets control without an exit (not in Machine.exits).
        self.observed = 0
        # The last hooked instruction that the CPU went on to execute (None
        # once an exit has come, or the hook redirected execution): if it
        # faults, its hook's side effect on the flags is to be undone, and a
        # client that counts it takes the count back (faulted).
        self.last = None
        self.prior = None                    # the one before it, when it was hooked
        self._retried = set()                # addresses with such a client
        # Unicorn reports a new block only once some block has run to its end
        # (its `last_tb`, never reset afterwards, is the edge's source).  A
        # guest whose every block so far ended in an exception (a PV kernel
        # making hypercall after hypercall at boot) gets no edges: until the
        # first one arrives, the block an exit returns to is examined then
        # (examine_resume: some client watches and no edge has come yet).
        self.edges = False
        self.examine_resume = False
        self.examined = None                 # (code, pc) of the block being examined

    def watch(self, select, on_hit, on_retry=None, exit=False, ids=None, hook=True):
        """Add a client (the module's docstring).  `ids`: the capstone
        instruction ids select can answer for; at translation time it is
        asked about no other instruction (None: about every one), since asking
        every client about every instruction of every new block was most of
        what watching translation cost.  select must still answer None for
        any other: at an exit it is asked about whatever is at the address
        now.  `hook` False: no hook at all; on_hit(address, kind) is called
        when a block holding the instruction is translated, for a client that
        needs only to know where such instructions are (a hook has its own
        cost to the flags: docs/unicorn.md, item 39)."""
        self.clients.append((select, on_hit, None if ids is None else frozenset(ids), hook))
        if on_retry is not None:
            self._retry[on_hit] = on_retry
        if exit:
            self._exits[on_hit] = select
        self.examine_resume = not self.edges
        if not self._installed:
            self.machine.add_hook(UC_HOOK_EDGE_GENERATED, _EDGE_CB(self._on_generated))
            self._installed = True

    def _live_cpl(self):
        return self.machine.live_cpl()

    # [tour hw 30, hw-npt 30] Intercepts are set when a block is translated.
    # Each new translation block is decoded once and a hook put on the exact address
    # of every instruction a client selects, without changing a byte of guest memory.
    def _on_generated(self, _uc, cur, _prev, _user):
        m = self.machine
        self.edges = True
        self.examine_resume = False
        try:
            tb = cur.contents
            try:
                code = m.backend.live_view().read(tb.pc, tb.size)
            except GuestMemoryFault:
                return
            if self._hook_selected(code, tb.pc, self._live_cpl()):
                m.request_restart(tb.pc, tb.pc + tb.size)
        except BaseException as exc:
            m.abort(exc)

    def _hook_selected(self, code, pc, cpl, one_block=False):
        """Hook every instruction some client selects; True if any is new.
        With one_block, stop after the first control transfer (where Unicorn
        ends a translation block)."""
        # (A block that is only the start of `code` is decoded lazily, up to
        # its end, and not kept: decode.py.)
        added = False
        self.examined = (code, pc)           # for clients without a hook (lost_flags.py)
        for insn in decode_lazily(code, pc) if one_block else decoded_block(code, pc):
            iid = insn.id
            if one_block and iid in BLOCK_END_IDS:
                one_block = None             # this one still belongs to the block
            for select, on_hit, ids, hook in self.clients:
                if ids is not None and iid not in ids:
                    continue
                kind = select(insn, cpl)
                if kind is None:
                    continue
                if not hook:
                    on_hit(insn.address, kind)
                    continue
                targets = self.hits.setdefault(insn.address, [])
                if not targets:
                    self.machine.add_hook(UC_HOOK_CODE, self._code_cb, begin=insn.address,
                                          end=insn.address)
                    added = True
                target = (on_hit, kind, self._exits.get(on_hit))   # select: None for an observer
                if target not in targets:
                    targets.append(target)
                    if on_hit in self._retry:
                        self._retried.add(insn.address)
            if one_block is None:
                break
        return added

    def before_start(self, linear):
        """Unicorn reports no edge for the first block run after emu_start (it has
        no predecessor), so the machine calls this before every emu_start: the
        instructions from `linear` to the end of its page get their hooks now,
        and any translation made without them is dropped."""
        if not self.clients:
            return
        end = (linear | 0xFFF) + 1
        try:
            code = self.machine.backend.live_view().read(linear, end - linear)
        except GuestMemoryFault:
            return
        if self._hook_selected(code, linear, self._live_cpl(), one_block=True):
            self.machine.drop_translations(linear, end)

    def resume(self, linear, cpl):
        """An exit returns to `linear` (the CPU saved): before Unicorn reports
        edges at all, hook the block there now and drop any translation of
        it made without the hooks."""
        if self.edges or not self.clients:
            return
        end = (linear | 0xFFF) + 1
        try:
            code = self.machine.backend.code_view(linear).read(linear, end - linear)
        except GuestMemoryFault:
            return
        if self._hook_selected(code, linear, cpl, one_block=True):
            self.machine.forget_code(linear, end)

    def faulted(self, linear):
        """An exception at `linear`, the address of the hooked instruction
        that ran last (the machine asks at every exit after one).  If it is
        a fault of that instruction, it did not complete and will be hooked
        again when it is retried.  The CPU model made the arithmetic flags
        concrete after the hook, and the fault put back the lazy operation
        they came from (docs/unicorn.md, item 37): the state area is told
        they are concrete.  (An `int n`, int3 or into is no fault: EIP is past
        it, and may be the hooked instruction's address only because that
        ran in an earlier pass of a loop.)"""
        if self.machine.state.is_software_int():
            return
        self.machine.state.flags_made_concrete()
        for on_hit, kind, _ in self.hits.get(linear, ()):
            retry = self._retry.get(on_hit)
            if retry is not None:
                retry(linear, kind)

    def _on_code(self, _uc, address, _size, _user):
        if self.machine.outcome is not None:
            return                           # the run has ended: nothing more exits
        self.prior, self.last = self.last, address
        try:
            for on_hit, kind, select in self.hits.get(address, ()):
                if select is None:
                    self.observed += 1
                    on_hit(address, kind)
                    continue
                if self.observer is not None:
                    redirected = self.observer(address, kind,
                                               lambda s=select, h=on_hit, k=kind:
                                               self._exit(address, s, h, k))
                else:
                    redirected = self._exit(address, select, on_hit, kind)
                if redirected:
                    self.last = None         # the client redirected execution
                    return
        except BaseException as exc:
            self.machine.abort(exc)

    # [tour hw 40, hw-npt 40] The first VM exit.
    # The hook runs before the instruction: the machine saves the CPU with EIP at it,
    # decodes it again (the page may hold other code by now) and asks the back end,
    # which emulates it, raises an exception instead, or lets it run.
    def _exit(self, address, select, on_hit, kind):
        """A synthetic exit at `address`: the service that exit clients get."""
        m, st = self.machine, self.machine.state
        if not st.live:
            st.save()
        st.eip = (address - st.seg_base_of("cs")) & 0xFFFFFFFF
        decoded = m.decoder.at(m.backend.guest_view(), address)
        if decoded is None:
            return False
        # Is it still the selected instruction?  select's answer is a function
        # of the bytes (which the decoder has just checked) and the CPL.
        key = (select, st.cpl)
        selected = decoded.memo.get(key, _UNKNOWN)
        if selected is _UNKNOWN:
            selected = decoded.memo[key] = select(decoded.insn, key[1])
        if selected != kind:
            return False                     # other code now lives at this address
        if self.prior is not None:           # a second hook in one block: item 39
            m.lost_flags.second_hook(self.prior, address)
        done = on_hit(decoded, kind)
        if done is None:
            return False
        m._count_exit()                      # a VMM entry, under the exit budget
        if m.icount is not None:
            m.icount.cut(address + decoded.size if done == EMULATED else address)
        m.resume_at(st.eip)
        return True


_UNKNOWN = object()
