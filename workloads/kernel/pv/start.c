/*
 * start.c -- what Xen's domain builder tells a new domain: start_info.
 *
 * A native kernel finds its boot-information block at EBX; a paravirtual
 * one finds Xen's start_info page at ESI (pv/entry.S kept it).  It says
 * how much memory we have (nr_pages), where our pages really are (the
 * page-frame list, mfn_list), where the bootstrap page directory and the
 * shared-info page are, and carries a command line with what the boot
 * block would say: "workload=NAME scale=N disk=SECTORS blkring=PFN
 * blkevtchn=PORT".  We turn it into the same struct bootinfo, so the rest
 * of kmain does not know the difference.
 */
#include "defs.h"
#include "priv.h"

uint blk_ring_pfn;
uint blk_evtchn;

/* Decimal, or hexadecimal with 0x. */
static uint number(const char *s, uint n)
{
    uint v = 0, base = 10;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        base = 16, s += 2, n -= 2;
    for (; n > 0; s++, n--) {
        uint d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
            d = (*s | 0x20) - 'a' + 10;
        else
            break;
        v = v * base + d;
    }
    return v;
}

/* The value of word w (n characters) if it is "key=value", else 0. */
static const char *value_of(const char *w, uint n, const char *key)
{
    uint k = strlen(key);
    return n >= k && strncmp(w, key, k) == 0 ? w + k : 0;
}

static void parse_word(const char *w, uint n)
{
    const char *v;
    const char *end = w + n;
    if ((v = value_of(w, n, "workload="))) {
        uint len = end - v;
        if (len >= sizeof(bootinfo.workload))
            len = sizeof(bootinfo.workload) - 1;
        memcpy(bootinfo.workload, v, len);
        bootinfo.workload[len] = 0;
    } else if ((v = value_of(w, n, "scale="))) {
        bootinfo.scale = number(v, end - v);
    } else if ((v = value_of(w, n, "disk="))) {
        bootinfo.disk_sectors = number(v, end - v);
    } else if ((v = value_of(w, n, "blkring="))) {
        blk_ring_pfn = number(v, end - v);
    } else if ((v = value_of(w, n, "blkevtchn="))) {
        blk_evtchn = number(v, end - v);
    }
    /* other words: not for us */
}

static void parse_cmdline(const char *s, uint max)
{
    const char *end = s + max;
    while (s < end && *s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        const char *w = s;
        while (s < end && *s && *s != ' ')
            s++;
        parse_word(w, s - w);
    }
}

/* [tour pv 50] The guest's first look at its world: start_info.
 * The machine-frame list, the page-table base and the command line (workload, scale,
 * block ring and its event channel) come from the page the builder wrote.
 */
void read_start_info(void)
{
    struct start_info *si = xen_start_info;
    if (strncmp(si->magic, XEN_START_MAGIC, sizeof(si->magic)) != 0)
        panic("start_info: not a Xen 3.0 x86_32 domain");

    phys_to_machine = (uint *)si->mfn_list;
    cr3_shadow = V2P(si->pt_base);      /* the builder loaded its directory */

    bootinfo.magic = BOOT_MAGIC;
    bootinfo.version = 1;
    /* All of our memory, capped like the native boot block's RAM size: the
     * direct map must end below the scratch window. */
    if (si->nr_pages > MAXRAM / PGSIZE)
        bootinfo.ram_size = MAXRAM;
    else
        bootinfo.ram_size = si->nr_pages * PGSIZE;
    parse_cmdline(si->cmd_line, sizeof(si->cmd_line));

    /* Let the kernel use I/O ports (virtual IOPL 1): the hypervisor then
     * emulates the few it touches (kbench's read of the UART status)
     * instead of ending the run.  The platform ports need no permission. */
    struct physdev_set_iopl iopl = { 1 };
    int r = HYPERVISOR_physdev_op(PHYSDEVOP_set_iopl, &iopl);
    if (r < 0)
        panic("set_iopl: error %d", r);
}
