"""The block device's back end: the hypervisor's half of a split driver.

A PV domain has no disk controller.  Its disk driver is a *frontend* that
puts requests on a ring in a page it shares with the *backend*, names its
buffers by machine frame, and notifies the backend through an event channel;
the backend performs the requests on the real disk and answers on the same
ring and channel (Xen's blkif).  No port I/O at all: a sector costs two shared
memory accesses and a notification, where the emulated IDE disk of the other
back ends costs a dozen port accesses and a 256-word string transfer, each of
them a trap under trap-and-emulate.

The ring is untrusted guest memory: indices are read once and checked, a
request with a bad operation, segment or sector is answered with
BLKIF_RSP_ERROR, and a frame the backend would write must be the domain's
and not a page table.  Xen's backend runs in another domain and completes
later; this one completes every request inside the notification, so the
responses are there when the guest's EVTCHNOP_send returns.
"""
from . import abi
from .frames import L1, L2


class BlockBackend:
    def __init__(self, machine, frames, channels, disk):
        self.machine = machine
        self.frames = frames
        self.channels = channels
        self.disk = disk                 # the disk image (bytearray), 512-byte sectors
        self.ring = None
        self.cons = 0                    # the next request to take

    def attach(self, ring_mfn):
        """Share the ring frame with the frontend; the event-channel port.
        The back end writes the ring, so it holds it writable: the guest can
        never make it a page table and have the back end write entries."""
        self.frames.hold_writable(ring_mfn)
        self.ring = ring_mfn << 12
        return self.channels.bind_backend(self)

    # [tour pv 190] The split driver's back end, in the hypervisor.
    # It takes the new requests off the ring, performs them on the disk, puts the
    # responses back and signals the guest's port.
    def notify(self, port):
        """EVTCHNOP_send from the frontend: take every new request."""
        mem = self.machine.mem
        prod = mem.u32(self.ring)
        if (prod - self.cons) & 0xFFFFFFFF > abi.RING_SIZE:
            self.cons = prod             # a corrupt index: drop what it claims
            return
        rsp = mem.u32(self.ring + 8)
        while self.cons != prod:
            slot = self.ring + abi.RING_HEADER + abi.RING_SLOT * (self.cons % abi.RING_SIZE)
            req_id, op, status = self._perform(slot)
            mem.write(slot, abi.BLK_RESPONSE.pack(req_id, op, status))
            self.cons = (self.cons + 1) & 0xFFFFFFFF
            rsp = (rsp + 1) & 0xFFFFFFFF
        mem.set_u32(self.ring + 8, rsp)
        self.channels.signal(port)

    def _perform(self, slot):
        mem, c = self.machine.mem, self.machine.counters
        op, nseg, _handle, req_id, sector = abi.BLK_REQUEST.unpack(mem.read(slot, 20))
        c["pv.blk.requests"] += 1
        if op not in (abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE) or not 1 <= nseg <= abi.BLKIF_MAX_SEGMENTS:
            return req_id, op, abi.BLKIF_RSP_ERROR
        segments = [abi.BLK_SEGMENT.unpack(mem.read(slot + 20 + 8 * i, 8)) for i in range(nseg)]
        plan = self._plan(op, sector, segments)
        if plan is None:
            return req_id, op, abi.BLKIF_RSP_ERROR
        for pa, disk_off, n in plan:
            if op == abi.BLKIF_OP_READ:
                mem.write(pa, bytes(self.disk[disk_off:disk_off + n]))
                if self.frames.stored is not None:   # as DMA: code read there runs
                    self.frames.stored(pa, n)
            else:
                self.disk[disk_off:disk_off + n] = mem.read(pa, n)
            c["pv.blk.sectors"] += n // abi.SECTOR
        self.machine.clock.tick()
        return req_id, op, abi.BLKIF_RSP_OKAY

    def _plan(self, op, sector, segments):
        """(machine address, disk offset, bytes) for each segment, or None if
        any part of the request is not allowed."""
        plan, disk_off = [], sector * abi.SECTOR
        for frame, first, last, _ in segments:
            if not first <= last <= 7 or not self.frames.owns(frame):
                return None
            if op == abi.BLKIF_OP_READ and self.frames.type_of(frame) in (L1, L2):
                return None              # a read would write a page table
            n = (last - first + 1) * abi.SECTOR
            if disk_off + n > len(self.disk):
                return None
            plan.append(((frame << 12) + first * abi.SECTOR, disk_off, n))
            disk_off += n
        return plan
