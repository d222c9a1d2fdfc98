"""The virtual PC's memory map: where the boot protocol puts things in guest
RAM (docs/boot-protocol.md) and the linear range every back end keeps for its
VMM.  Constants only, so that a back end can name an address without importing
the machine."""

MiB = 1 << 20
IMAGE_BASE = 0x100000            # images load here, as a multiboot kernel does
BOOT_GDT = 0x1000                # the flat GDT the guest is entered with
BOOT_INFO = 0x2000               # the boot-information block (EBX at entry)
BOOT_STACK = 0x9F000             # ESP at entry, below the legacy EBDA
BOOT_MAGIC = 0x42414C56          # "VLAB" in EAX at entry
BOOT_GDT_LIMIT = 23              # null, code and data descriptors

# The top 64 MiB of every address space belongs to the VMM (as on Xen x86-32):
# no guest page table may map it, whatever the back end.
VMM_BASE_LINEAR = 0xFC000000
