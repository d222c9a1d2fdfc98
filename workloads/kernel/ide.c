/*
 * ide.c -- the IDE (ATA) disk, programmed I/O, LBA28, one sector at a time.
 *
 * The command block registers at 0x1F0-0x1F7:
 *   0x1F0 data (16 bit)         0x1F2 sector count
 *   0x1F3-0x1F5 LBA bits 0-23   0x1F6 drive/head: 0xE0 | LBA bits 24-27
 *   0x1F7 command (write) / status (read): BSY 0x80, DRDY 0x40, DRQ 0x08, ERR 0x01
 * and the device control register 0x3F6, where nIEN (bit 1) turns the
 * drive's interrupt off.  We poll instead of sleeping on IRQ 14: simple,
 * and every back end sees the same sequence of port accesses.
 *
 * A READ SECTORS command: wait until not busy, write the LBA and count,
 * write the command, wait for DRQ (data ready), read 256 words.  WRITE
 * SECTORS is the same with the data going out, then wait until not busy.
 *
 * The rest of the kernel knows this as "the disk" (disk_read, ...): a
 * paravirtual kernel has Xen's block front end, pv/blkfront.c, instead.
 */
#include "defs.h"
#include "priv.h"

#define IDE_DATA    0x1F0
#define IDE_COUNT   0x1F2
#define IDE_LBA0    0x1F3
#define IDE_LBA1    0x1F4
#define IDE_LBA2    0x1F5
#define IDE_DRIVE   0x1F6
#define IDE_CMD     0x1F7
#define IDE_STATUS  0x1F7
#define IDE_CTRL    0x3F6

#define ST_BSY  0x80
#define ST_DRDY 0x40
#define ST_DF   0x20
#define ST_DRQ  0x08
#define ST_ERR  0x01

#define CMD_READ  0x20
#define CMD_WRITE 0x30

#define SPIN_LIMIT 1000000

static uint disk_sectors;

/* Wait until the drive is not busy; with want_drq also until it has data
 * (or wants data).  -1 on an error status or if it never gets there. */
static int ide_wait(int want_drq)
{
    for (int i = 0; i < SPIN_LIMIT; i++) {
        uchar st = inb(IDE_STATUS);
        if (st & ST_BSY)
            continue;
        if (st & (ST_ERR | ST_DF))
            return -1;
        if (!want_drq || (st & ST_DRQ))
            return 0;
    }
    return -1;
}

void disk_init(uint nsectors)
{
    disk_sectors = nsectors;
    if (nsectors)
        outb(IDE_CTRL, 0x02);       /* nIEN: no interrupts, we poll */
}

uint disk_nsectors(void)
{
    return disk_sectors;
}

static int ide_command(uint lba, uchar cmd)
{
    if (lba >= disk_sectors || ide_wait(0) < 0)
        return -1;
    outb(IDE_DRIVE, 0xE0 | ((lba >> 24) & 0x0F));   /* master, LBA mode */
    outb(IDE_COUNT, 1);
    outb(IDE_LBA0, lba & 0xFF);
    outb(IDE_LBA1, (lba >> 8) & 0xFF);
    outb(IDE_LBA2, (lba >> 16) & 0xFF);
    outb(IDE_CMD, cmd);
    return 0;
}

int disk_read(uint lba, void *buf)
{
    if (ide_command(lba, CMD_READ) < 0 || ide_wait(1) < 0)
        return -1;
    insw(IDE_DATA, buf, 256);
    return 0;
}

int disk_write(uint lba, const void *buf)
{
    if (ide_command(lba, CMD_WRITE) < 0 || ide_wait(1) < 0)
        return -1;
    outsw(IDE_DATA, buf, 256);
    return ide_wait(0);
}
