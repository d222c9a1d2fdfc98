"""The guest-visible interface: Xen's x86-32 PV numbers, layouts and error codes.

docs/pv-abi.md is the prose of this file.  The values are Xen's (its public
headers xen.h, xen-x86_32.h, event_channel.h, sched.h, physdev.h and
io/blkif.h), so that a guest written against Xen's interface finds the same
numbers here; the layouts are the 32-bit ones.
"""
import struct

# -- hypercalls: `int 0x82`, number in EAX ----------------------------------------
HYPERCALL_VECTOR = 0x82

SET_TRAP_TABLE, MMU_UPDATE, STACK_SWITCH, SET_CALLBACKS, FPU_TASKSWITCH = 0, 1, 3, 4, 5
MULTICALL, UPDATE_VA_MAPPING, SET_TIMER_OP, XEN_VERSION, CONSOLE_IO = 13, 14, 15, 17, 18
IRET, MMUEXT_OP, SCHED_OP, EVENT_CHANNEL_OP, PHYSDEV_OP = 23, 26, 29, 32, 33

# -- error codes: a failing hypercall returns -errno --------------------------------
EPERM, ENOENT, ESRCH, E2BIG, EAGAIN, ENOMEM = 1, 2, 3, 7, 11, 12
EFAULT, EBUSY, EEXIST, EINVAL, ENOSPC, ENOSYS = 14, 16, 17, 22, 28, 38

# -- segments: Xen's flat selectors in the hypervisor's GDT -------------------------
FLAT_KERNEL_CS, FLAT_KERNEL_DS = 0xE019, 0xE021       # ring 1
FLAT_USER_CS, FLAT_USER_DS = 0xE02B, 0xE033           # ring 3
FLAT_KERNEL_SS = FLAT_KERNEL_DS

# -- memory ------------------------------------------------------------------------
HYPERVISOR_VIRT_START = 0xFC000000                    # non-PAE x86-32
MACH2PHYS_VIRT_START = 0xFC000000
FIRST_HYPERVISOR_SLOT = HYPERVISOR_VIRT_START >> 22   # page-directory slot 1008
INVALID_M2P = 0xFFFFFFFF
DOMID_SELF = 0x7FF0

MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE = 0, 1
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_UNPIN_TABLE = 0, 1, 4
MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL = 5, 6, 7
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3

# -- scheduling, time, console, version, physical devices --------------------------
SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN = 0, 1, 2
SHUTDOWN_POWEROFF, SHUTDOWN_CRASH = 0, 3
CONSOLEIO_WRITE, CONSOLEIO_READ = 0, 1
CONSOLE_MAX = 4096
XENVER_VERSION = 0
XEN_VERSION_NUMBER = 0x00030000                       # 3.0: the ABI of 2005-2006
PHYSDEVOP_SET_IOPL, PHYSDEVOP_SET_IOBITMAP = 6, 7

# -- events --------------------------------------------------------------------------
EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND = 1, 3, 4
EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_UNMASK = 6, 9
NR_EVENT_CHANNELS = 1024                              # 32 x 32 bits
VIRQ_TIMER = 0

# -- structures (32-bit layouts) ------------------------------------------------------
TRAP_INFO = struct.Struct("<BBHI")                   # vector, flags, cs, address
TI_DPL_MASK, TI_SET_IF = 3, 4
MAX_TRAPS = 256
MMU_UPDATE_REQ = struct.Struct("<QQ")                # ptr, val
MMUEXT_REQ = struct.Struct("<III")                   # cmd, arg1, arg2
MULTICALL_ENTRY = struct.Struct("<8I")               # op, result, args[6]
MULTICALL_MAX = 64
U32 = struct.Struct("<I")

# start_info
START_INFO_MAGIC = b"xen-3.0-x86_32"
START_INFO = struct.Struct("<32s12I")   # magic, nr_pages, shared_info, flags, store_mfn,
#                                         store_evtchn, console mfn, console evtchn,
#                                         pt_base, nr_pt_frames, mfn_list, mod_start, mod_len
CMD_LINE_OFF, CMD_LINE_MAX = 80, 1024

# shared_info and vcpu_info[0]
UPCALL_PENDING, UPCALL_MASK, PENDING_SEL, ARCH_CR2 = 0, 1, 4, 8
TIME_VERSION, TIME_SYSTEM = 32, 48                   # vcpu_time_info: version, system_time
EVTCHN_PENDING, EVTCHN_MASK = 2048, 2176

# -- the image header (virtlab's stand-in for Xen's ELF notes) ----------------------
IMAGE_MAGIC = b"VLABPV32"
IMAGE_HEADER = struct.Struct("<8sIIII8x")            # magic, virt_base, entry, virt_end, version
IMAGE_LOAD = 0x100000                                # pseudo-physical load address

# -- the block device: Xen's blkif ring --------------------------------------------------
BLKIF_OP_READ, BLKIF_OP_WRITE = 0, 1
BLKIF_RSP_OKAY, BLKIF_RSP_ERROR = 0, -1
BLKIF_MAX_SEGMENTS = 11
RING_HEADER = 64                                     # req_prod, req_event, rsp_prod, rsp_event, pad
RING_SLOT, RING_SIZE = 108, 32                       # slots of the shared ring
BLK_REQUEST = struct.Struct("<BBHQQ")                # operation, nr_segments, handle, id, sector
BLK_SEGMENT = struct.Struct("<IBBH")                 # frame, first_sect, last_sect, pad
BLK_RESPONSE = struct.Struct("<QBxh")                # id, operation, status
SECTOR = 512

ERROR_NAMES = {-EPERM: "-EPERM", -ENOENT: "-ENOENT", -ESRCH: "-ESRCH", -E2BIG: "-E2BIG",
               -EAGAIN: "-EAGAIN", -ENOMEM: "-ENOMEM", -EFAULT: "-EFAULT", -EBUSY: "-EBUSY",
               -EEXIST: "-EEXIST", -EINVAL: "-EINVAL", -ENOSPC: "-ENOSPC", -ENOSYS: "-ENOSYS"}
BIND_VIRQ = struct.Struct("<III")                    # virq, vcpu, port (out)
ALLOC_UNBOUND = struct.Struct("<HHI")                # dom, remote_dom, port (out)
IOBITMAP = struct.Struct("<II")                      # bitmap, nr_ports
