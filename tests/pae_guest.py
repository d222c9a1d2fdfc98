"""Kernel code that turns on PAE paging, for the tests that page with it."""


def tables_on(edits="", cr0_bits=0x80000000):
    """A PDPT at 0x60000 whose first directory, at 0x61000, maps 0-2 MiB
    through the page table at 0x62000 (identity, user, writable) and 2-4 MiB
    as one 2 MiB page; then `edits` (more entries, data); then CR3, CR4.PAE
    and CR0 with `cr0_bits` (PG; WP too if asked) set."""
    return f"""
mov dword ptr [0x60000], 0x61001
mov dword ptr [0x61000], 0x62007
mov dword ptr [0x61008], 0x200087
xor ecx, ecx
fill:
mov eax, ecx
shl eax, 12
or eax, 7
mov [0x62000 + ecx*8], eax
inc ecx
cmp ecx, 512
jne fill
{edits}
mov eax, 0x60000
mov cr3, eax
mov eax, cr4
or eax, 0x20
mov cr4, eax
mov eax, cr0
or eax, {cr0_bits:#x}
mov cr0, eax
"""
