/*
 * blkfront.c -- the disk of a paravirtual kernel: the front half of Xen's
 * split block driver.
 *
 * There is no IDE controller to program.  The back end (in the hypervisor
 * here; in another domain on real Xen) shares one page with us, a ring of
 * 32 slots (docs/pv-abi.md section 8).  We write a request into the next
 * slot -- operation, sector, and the machine frame of the buffer -- publish
 * it by advancing req_prod, and notify the back end through an event
 * channel.  It performs the request, writes the response into the same
 * slot and advances rsp_prod.  One hypercall per sector, whatever its size,
 * where the IDE driver needs a port access per 16-bit word.
 *
 * virtlab's back end answers inside the notifying hypercall, so the
 * response is there when EVTCHNOP_send returns: we simply look.  The
 * back end also signals our port when it is done; we keep that port
 * masked, so the signal only sets its pending bit, which we clear --
 * no upcall for an answer we already have.
 *
 * The back end reads or writes the buffer by machine frame, so a sector
 * must not straddle two pages: the requests use a 512-byte aligned bounce
 * buffer of our own, whatever buffer the caller has.
 */
#include "defs.h"
#include "priv.h"

#define SECTOR 512

static volatile struct blkif_sring *ring;
static uint port;
static uint nsectors;
static uint rsp_cons;               /* the next response we will read */
static char bounce[SECTOR] __attribute__((aligned(SECTOR)));

void disk_init(uint n)
{
    nsectors = n;
    if (!n)
        return;
    if (!blk_ring_pfn || !blk_evtchn || blk_ring_pfn >= bootinfo.ram_size / PGSIZE)
        panic("blkfront: disk=%u needs blkring= and blkevtchn= (got %u, %u)",
              n, blk_ring_pfn, blk_evtchn);
    ring = P2V(blk_ring_pfn << PGSHIFT);
    port = blk_evtchn;
    rsp_cons = ring->rsp_prod;
    evtchn_mask(port);
}

uint disk_nsectors(void)
{
    return nsectors;
}

/* [tour pv 185] The split driver's front end.
 * A request on the shared ring names its buffer by frame; a notification on the event
 * channel replaces every port access of the IDE driver.
 */
/* One request for one sector, to or from the bounce buffer. */
static int request(uchar op, uint lba)
{
    if (lba >= nsectors)
        return -1;
    uint i = ring->req_prod;
    volatile struct blkif_request *rq = &ring->ring[i % BLKIF_RING_SIZE].req;
    rq->operation = op;
    rq->nr_segments = 1;
    rq->handle = 0;
    rq->id = i;
    rq->sector_number = lba;
    rq->seg[0].frame = pfn_to_mfn(V2P(bounce) >> PGSHIFT);
    rq->seg[0].first_sect = (V2P(bounce) % PGSIZE) / SECTOR;
    rq->seg[0].last_sect = rq->seg[0].first_sect;
    barrier();              /* the request is complete before it is published */
    ring->req_prod = i + 1;
    evtchn_send(port);
    barrier();

    if (ring->rsp_prod == rsp_cons)
        panic("blkfront: no response to request %u", i);
    volatile struct blkif_response *rsp = &ring->ring[rsp_cons % BLKIF_RING_SIZE].rsp;
    if (rsp->id != i)
        panic("blkfront: response for request %u, expected %u", (uint)rsp->id, i);
    int status = rsp->status;
    rsp_cons++;
    evtchn_clear(port);
    return status == BLKIF_RSP_OKAY ? 0 : -1;
}

int disk_read(uint lba, void *buf)
{
    if (request(BLKIF_OP_READ, lba) < 0)
        return -1;
    memcpy(buf, bounce, SECTOR);
    return 0;
}

int disk_write(uint lba, const void *buf)
{
    memcpy(bounce, buf, SECTOR);
    return request(BLKIF_OP_WRITE, lba);
}
