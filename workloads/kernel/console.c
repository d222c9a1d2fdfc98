/*
 * console.c -- the console is COM1, a 16550 UART at I/O port 0x3F8.
 *
 * Writing a byte to the transmit holding register (THR, 0x3F8) sends it.
 * Before writing, software must wait until the line status register (LSR,
 * 0x3FD) says the THR is empty (bit 5): a real UART sends only about one
 * byte per 87 microseconds at 115200 baud.
 */
#include "defs.h"
#include "priv.h"

#define COM1        0x3F8
#define UART_THR    (COM1 + 0)
#define UART_IER    (COM1 + 1)
#define UART_LSR    (COM1 + 5)
#define LSR_THRE    0x20            /* transmit holding register empty */

void console_init(void)
{
    outb(UART_IER, 0);              /* no UART interrupts: we poll */
}

void console_putc(int c)
{
    int spins = 0;
    while (!(inb(UART_LSR) & LSR_THRE) && ++spins < 100000)
        ;
    outb(UART_THR, (uchar)c);
}

void console_write(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        console_putc(s[i]);
}
