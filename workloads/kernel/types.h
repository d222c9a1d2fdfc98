/* types.h -- fixed-width types for a freestanding IA-32 kernel (no libc). */
#ifndef TYPES_H
#define TYPES_H

typedef unsigned int   uint;
typedef unsigned short ushort;
typedef unsigned char  uchar;
typedef unsigned int   uint32;
typedef unsigned short uint16;
typedef unsigned char  uint8;
typedef uint pte_t;          /* a page-table entry (also used for directory entries) */
typedef uint pde_t;

#define NULL ((void *)0)

#endif
