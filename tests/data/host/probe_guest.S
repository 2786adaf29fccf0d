/*
 * hangar's accelerator probe guest: a 64 KiB flat ROM for QEMU's -bios.
 *
 * Source of the bytes in hangar/host/probe_guest.py; tests/unit/test_host_probe.py
 * re-assembles this file (when GNU as is installed) and compares.
 *
 *   as --32 -o g.o probe_guest.S && objcopy -O binary -j .text g.o g.bin
 *
 * The CPU starts in real mode at the reset vector (last 16 bytes of the ROM,
 * mapped just below 4 GiB). The guest builds identity page tables in RAM (the
 * ROM is read-only), enters 64-bit long mode directly from real mode, times a
 * fixed busy loop with RDTSC, prints the elapsed TSC ticks as 16 hex digits and
 * a newline on the debugcon port 0xe9, then writes 0x2a to isa-debug-exit
 * (port 0x501) so QEMU exits with status (0x2a << 1) | 1 = 85.
 */
    .set ROM_BASE, 0xFFFF0000
    .set PML4, 0x1000
    .set PDPT, 0x2000
    .set PD0,  0x3000
    .set PD3,  0x4000
    .set LOOPS, 0x12345678          /* patched by probe_guest.py */
    .set DEBUGCON, 0xe9
    .set DEBUG_EXIT, 0x501

    .code16
    .org 0
start16:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $PML4, %di                  /* zero the 4 page-table pages */
    mov $0x1000, %cx
    xor %eax, %eax
    cld
    rep stosl
    movl $(PDPT | 3), PML4
    movl $(PD0 | 3), PDPT
    movl $(PD3 | 3), PDPT + 3*8
    movl $0x83, PD0                 /* 0..2 MiB: 2 MiB page, RW, present */
    movl $(0xFFE00000 | 0x83), PD3 + 511*8   /* the ROM below 4 GiB */
    mov $PML4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax                  /* CR4.PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx           /* EFER */
    rdmsr
    or $0x100, %eax                 /* EFER.LME */
    wrmsr
    lgdtl %cs:gdtr
    mov %cr0, %eax
    or $0x80000001, %eax            /* CR0.PG | CR0.PE */
    mov %eax, %cr0
    ljmpl $0x08, $(ROM_BASE + start64)

    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %rsi                  /* rsi = TSC at start */
    mov $LOOPS, %ecx
1:  dec %ecx                        /* the fixed amount of guest work */
    jnz 1b
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %rsi, %rax
    mov %rax, %rbx                  /* rbx = elapsed TSC ticks */
    mov $16, %ecx
2:  rol $4, %rbx                    /* print rbx as 16 lowercase hex digits */
    mov %bl, %al
    and $0x0f, %al
    add $'0', %al
    cmp $'9', %al
    jbe 3f
    add $('a' - '0' - 10), %al
3:  out %al, $DEBUGCON
    dec %ecx
    jnz 2b
    mov $'\n', %al
    out %al, $DEBUGCON
    mov $DEBUG_EXIT, %dx
    mov $0x2a, %al
    out %al, %dx
4:  hlt
    jmp 4b

    .balign 8, 0
gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF        /* 0x08: 64-bit code; accessed bit preset: no ROM write */
    .quad 0x00CF93000000FFFF        /* 0x10: data; accessed bit preset */
gdtr:
    .word gdtr - gdt - 1
    .long ROM_BASE + gdt

    .code16
    .org 0xFFF0
reset:                              /* CS base 0xFFFF0000, IP 0xFFF0 */
    jmp start16
    .org 0x10000
