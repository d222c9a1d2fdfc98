/*
 * main.c -- from the boot block to the first process.
 *
 * entry.S has enabled paging and called kmain on the boot stack.  We read
 * the boot-information block the machine left at EBX (RAM size, scale,
 * disk size, workload name), set up the CPU tables, memory, devices, then
 * start the program named after the workload ("nano.syscall" runs the
 * program "nano_syscall") with main(scale), and become the scheduler.
 * A paravirtual kernel (pv/entry.S) reads the same facts from Xen's
 * start_info page instead (pv/start.c) and has no PIC to program.
 */
#include "defs.h"
#include "priv.h"

#define DEFAULT_RAM    (32 * 1024 * 1024)
#define MIN_RAM        (8 * 1024 * 1024)
#define PORT_EXIT      0x500
#define DEFAULT_PROG   "hello"          /* for a boot block without a workload name */

struct bootinfo bootinfo;

/* End the run: the platform port 0x500 takes the exit status. */
void platform_exit(int status)
{
    outb(PORT_EXIT, (uchar)status);
    halt_forever();
}

#ifndef PARAVIRT
extern uint boot_info_pa;

static void read_bootinfo(void)
{
    /* The block is in low memory, which the boot page tables still map. */
    const struct bootinfo *bi = P2V(boot_info_pa);
    if (boot_info_pa && boot_info_pa < 0x100000 && bi->magic == BOOT_MAGIC)
        bootinfo = *bi;
    bootinfo.workload[sizeof(bootinfo.workload) - 1] = 0;
    if (bootinfo.ram_size == 0)
        bootinfo.ram_size = DEFAULT_RAM;
    if (bootinfo.ram_size > MAXRAM)
        bootinfo.ram_size = MAXRAM;
    bootinfo.ram_size = PGROUNDDOWN(bootinfo.ram_size);
}
#endif

/* "family.op" -> "family_op"; no name -> DEFAULT_PROG. */
static void program_name(char *out, uint size)
{
    const char *w = bootinfo.workload[0] ? bootinfo.workload : DEFAULT_PROG;
    safestrcpy(out, w, size);
    for (char *c = out; *c; c++)
        if (*c == '.')
            *c = '_';
}

void kmain(void)
{
    char name[64];

#ifdef PARAVIRT
    read_start_info();                  /* Xen's start_info instead of the boot block */
#else
    read_bootinfo();
#endif
    console_init();
    gdt_init();
    idt_init();
    if (bootinfo.ram_size < MIN_RAM)
        panic("need at least 8 MiB of RAM");
    kvm_init(bootinfo.ram_size);        /* from here on, no identity map */
    kalloc_init(bootinfo.ram_size);
#ifndef PARAVIRT
    pic_init();                         /* under Xen: no PIC, only event channels */
#endif
    timer_init();
    disk_init(bootinfo.disk_sectors);

    program_name(name, sizeof(name));
    user_init(name, (int)bootinfo.scale);
    scheduler();
}
