"""The accelerator probe guest: a self-contained 64 KiB firmware image (pure).

The guest needs no disk, kernel or download. QEMU loads it with ``-bios``; the
CPU starts at the reset vector in real mode, the guest builds identity page
tables in RAM, enters 64-bit long mode (the mode real guests spend their time
in, so a KVM that only emulates it is caught), times a fixed busy loop with
RDTSC, prints the elapsed TSC ticks as 16 hex digits plus a newline on the
debugcon port and exits QEMU through ``isa-debug-exit`` with a known status.

The bytes below are the assembled form of ``tests/data/host/probe_guest.S``;
the unit tests re-assemble that file (when GNU ``as`` is installed) and compare.
"""

from __future__ import annotations

import re

# QEMU's x86 -bios loader refuses any file whose size is not a non-zero multiple
# of 64 KiB ("could not load PC BIOS"; hw/i386/x86.c x86_bios_rom_init). It maps
# the file so that it ends at 4 GiB; the CPU's first instruction is at 0xFFFFFFF0,
# i.e. the last 16 bytes of the file.
ROM_SIZE = 64 * 1024
RESET_VECTOR_OFFSET = ROM_SIZE - 16

DEBUGCON_PORT = 0xE9
DEBUG_EXIT_PORT = 0x501
DEBUG_EXIT_VALUE = 0x2A
# isa-debug-exit makes QEMU exit with (value << 1) | 1: odd and distinct from
# QEMU's own 0 (normal exit) and 1 (startup error).
EXIT_STATUS = (DEBUG_EXIT_VALUE << 1) | 1

# Busy-loop iterations: ~0.06 s under TCG and ~1.1 s per million iterations
# under this host's kvm_pvm; a working KVM needs ~1 cycle each (~7 ms).
DEFAULT_LOOPS = 20_000_000

# fmt: off
_REAL_MODE = bytes([
    0xFA,                                     # 00 cli
    0x31, 0xC0,                               # 01 xor ax, ax
    0x8E, 0xD8,                               # 03 mov ds, ax
    0x8E, 0xC0,                               # 05 mov es, ax
    0x8E, 0xD0,                               # 07 mov ss, ax
    0xBF, 0x00, 0x10,                         # 09 mov di, 0x1000   ; page tables
    0xB9, 0x00, 0x10,                         # 0c mov cx, 0x1000   ; 4 pages of dwords
    0x66, 0x31, 0xC0,                         # 0f xor eax, eax
    0xFC,                                     # 12 cld
    0x66, 0xF3, 0xAB,                         # 13 rep stosd        ; zero them
    0x66, 0xC7, 0x06, 0x00, 0x10, 0x03, 0x20, 0x00, 0x00,  # 16 PML4[0]   = PDPT|3
    0x66, 0xC7, 0x06, 0x00, 0x20, 0x03, 0x30, 0x00, 0x00,  # 1f PDPT[0]   = PD0|3
    0x66, 0xC7, 0x06, 0x18, 0x20, 0x03, 0x40, 0x00, 0x00,  # 28 PDPT[3]   = PD3|3
    0x66, 0xC7, 0x06, 0x00, 0x30, 0x83, 0x00, 0x00, 0x00,  # 31 PD0[0]    = 0|PS|RW|P
    0x66, 0xC7, 0x06, 0xF8, 0x4F, 0x83, 0x00, 0xE0, 0xFF,  # 3a PD3[511]  = ROM 2 MiB
    0x66, 0xB8, 0x00, 0x10, 0x00, 0x00,       # 43 mov eax, 0x1000
    0x0F, 0x22, 0xD8,                         # 49 mov cr3, eax
    0x0F, 0x20, 0xE0,                         # 4c mov eax, cr4
    0x66, 0x83, 0xC8, 0x20,                   # 4f or eax, CR4.PAE
    0x0F, 0x22, 0xE0,                         # 53 mov cr4, eax
    0x66, 0xB9, 0x80, 0x00, 0x00, 0xC0,       # 56 mov ecx, EFER
    0x0F, 0x32,                               # 5c rdmsr
    0x66, 0x0D, 0x00, 0x01, 0x00, 0x00,       # 5e or eax, EFER.LME
    0x0F, 0x30,                               # 64 wrmsr
    0x2E, 0x66, 0x0F, 0x01, 0x16, 0xF0, 0x00, # 66 lgdt dword [cs:gdtr]
    0x0F, 0x20, 0xC0,                         # 6d mov eax, cr0
    0x66, 0x0D, 0x01, 0x00, 0x00, 0x80,       # 70 or eax, CR0.PG|CR0.PE
    0x0F, 0x22, 0xC0,                         # 76 mov cr0, eax
    0x66, 0xEA, 0x81, 0x00, 0xFF, 0xFF, 0x08, 0x00,  # 79 jmp dword 0x08:0xFFFF0081
])

_LONG_MODE = bytes([
    0x66, 0xB8, 0x10, 0x00,                   # 81 mov ax, 0x10
    0x8E, 0xD8,                               # 85 mov ds, ax
    0x8E, 0xC0,                               # 87 mov es, ax
    0x8E, 0xD0,                               # 89 mov ss, ax
    0x0F, 0x31,                               # 8b rdtsc
    0x48, 0xC1, 0xE2, 0x20,                   # 8d shl rdx, 32
    0x48, 0x09, 0xD0,                         # 91 or rax, rdx
    0x48, 0x89, 0xC6,                         # 94 mov rsi, rax     ; start TSC
    0xB9, 0x78, 0x56, 0x34, 0x12,             # 97 mov ecx, LOOPS   ; patched
    0xFF, 0xC9,                               # 9c dec ecx          ; the guest work
    0x75, 0xFC,                               # 9e jnz 9c
    0x0F, 0x31,                               # a0 rdtsc
    0x48, 0xC1, 0xE2, 0x20,                   # a2 shl rdx, 32
    0x48, 0x09, 0xD0,                         # a6 or rax, rdx
    0x48, 0x29, 0xF0,                         # a9 sub rax, rsi
    0x48, 0x89, 0xC3,                         # ac mov rbx, rax     ; elapsed ticks
    0xB9, 0x10, 0x00, 0x00, 0x00,             # af mov ecx, 16
    0x48, 0xC1, 0xC3, 0x04,                   # b4 rol rbx, 4       ; next hex digit
    0x88, 0xD8,                               # b8 mov al, bl
    0x24, 0x0F,                               # ba and al, 0x0f
    0x04, 0x30,                               # bc add al, '0'
    0x3C, 0x39,                               # be cmp al, '9'
    0x76, 0x02,                               # c0 jbe c4
    0x04, 0x27,                               # c2 add al, 'a'-'0'-10
    0xE6, 0xE9,                               # c4 out 0xe9, al     ; debugcon
    0xFF, 0xC9,                               # c6 dec ecx
    0x75, 0xEA,                               # c8 jnz b4
    0xB0, 0x0A,                               # ca mov al, '\n'
    0xE6, 0xE9,                               # cc out 0xe9, al
    0x66, 0xBA, 0x01, 0x05,                   # ce mov dx, 0x501
    0xB0, 0x2A,                               # d2 mov al, 0x2a
    0xEE,                                     # d4 out dx, al       ; QEMU exits
    0xF4,                                     # d5 hlt
    0xEB, 0xFD,                               # d6 jmp d5
])

# Descriptors have the accessed bit preset: the CPU would otherwise write it
# into the GDT, which lives in read-only ROM.
_GDT = bytes([
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  # d8 null
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9B, 0xAF, 0x00,  # e0 0x08: 64-bit code
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x93, 0xCF, 0x00,  # e8 0x10: data
    0x17, 0x00, 0xD8, 0x00, 0xFF, 0xFF,              # f0 gdtr: limit, base 0xFFFF00D8
])

# At 0xFFF0 (CS base 0xFFFF0000, IP 0xFFF0): jmp near 0x0000.
_RESET = bytes([0xE9, 0x0D, 0x00])
# fmt: on

_LONG_MODE_OFFSET = 0x81
_GDT_OFFSET = 0xD8
_LOOPS_OFFSET = 0x98

_TICKS_LINE = re.compile(r"^([0-9a-f]{16})$", re.MULTILINE)


def build_probe_rom(loops: int = DEFAULT_LOOPS) -> bytes:
    """Return the 64 KiB probe firmware running ``loops`` busy-loop iterations.

    Raises :class:`ValueError` unless ``1 <= loops < 2**32`` (the loop counter
    is a 32-bit register that counts down to zero).
    """
    if not 1 <= loops < 2**32:
        raise ValueError(f"loops must be in [1, 2**32), got {loops}")
    rom = bytearray(ROM_SIZE)
    rom[0 : len(_REAL_MODE)] = _REAL_MODE
    rom[_LONG_MODE_OFFSET : _LONG_MODE_OFFSET + len(_LONG_MODE)] = _LONG_MODE
    rom[_GDT_OFFSET : _GDT_OFFSET + len(_GDT)] = _GDT
    rom[RESET_VECTOR_OFFSET : RESET_VECTOR_OFFSET + len(_RESET)] = _RESET
    rom[_LOOPS_OFFSET : _LOOPS_OFFSET + 4] = loops.to_bytes(4, "little")
    return bytes(rom)


def parse_probe_output(text: str) -> int | None:
    """Return the TSC ticks the guest reported on debugcon, or None if it did not.

    The guest prints exactly one line of 16 lowercase hex digits.
    """
    match = _TICKS_LINE.search(text)
    return int(match.group(1), 16) if match else None
