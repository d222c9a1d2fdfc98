"""The fuzzing guest: the size of its domain, the layout of its memory (the
special pages, the table of calls, the heap of their structures) and its
code, which walks the table, does `int 0x82` and stores what comes back."""
from .. import abi, layout
from ..asmguest import CODE, DATA, VIRT_BASE

RAM = 2 << 20                    # 512 pages: the invariants are quick to recompute
NR = RAM // layout.PAGE
CHUNK = 500                      # calls per domain
PAGE = layout.PAGE
IMAGE = VIRT_BASE + abi.IMAGE_LOAD
END = IMAGE + 0x80000            # fixed: the bootstrap region is always at the same pfns

# The guest's data area.  Three special pages first, then the call table and
# the heap of the calls' structures:
EDGE = DATA                      # scratch: a structure is copied here before its call
RO = DATA + 0x1000               # zeroes, made read-only by the first call
HOLE = DATA + 0x2000             # unmapped by the second call
TABLE = DATA + 0x3000            # u32: the end of the records
RECORD = 64                      # in: EAX..EDI, copy (from, to, length); out: ESP, EAX..EDI
RECORDS = TABLE + RECORD         # aligned: a record never crosses a page
_OUT = 36
HEAP = (RECORDS + CHUNK * RECORD + 0xFFF) & ~0xFFF

_FAULT, _UPCALL = 0xEE, 0xEC             # exit statuses of the trap handler and the callback

_GUEST = """
jmp main
fault:
mov al, {fault}
mov dx, 0x500
out dx, al
callback:
mov al, {upcall}
mov dx, 0x500
out dx, al
main:
mov ebp, {records}
next:
cmp ebp, [{table}]
jae done
mov ecx, [ebp + 32]
jecxz nocopy
mov esi, [ebp + 24]
mov edi, [ebp + 28]
cld
rep movsb
nocopy:
mov eax, [ebp]
mov ebx, [ebp + 4]
mov ecx, [ebp + 8]
mov edx, [ebp + 12]
mov esi, [ebp + 16]
mov edi, [ebp + 20]
int 0x82
mov [ebp + 36], esp
mov [ebp + 40], eax
mov [ebp + 44], ebx
mov [ebp + 48], ecx
mov [ebp + 52], edx
mov [ebp + 56], esi
mov [ebp + 60], edi
add ebp, {record}
jmp next
done:
mov al, 0
mov dx, 0x500
out dx, al
""".format(fault=_FAULT, upcall=_UPCALL, records=RECORDS, table=TABLE, record=RECORD)


_handlers = None


def handlers():
    """The addresses of the guest's trap handler and event callback, which
    end the run (the fuzzer counts either as a crash: neither should run)."""
    global _handlers
    if _handlers is None:
        from virtlab.asmguest import assemble
        code = assemble(_GUEST, CODE)
        fault = assemble(f"mov al, {_FAULT}\nmov dx, 0x500\nout dx, al\n", 0)
        upcall = assemble(f"mov al, {_UPCALL}\nmov dx, 0x500\nout dx, al\n", 0)
        _handlers = (CODE + code.index(fault), CODE + code.index(upcall))
    return _handlers
