#!/usr/bin/env python3
"""Writes the seed corpus of the `elf_loader` fuzz target (vmm/fuzz/seeds/elf_loader/).

Small ELF64 images for the target's guest (4 MiB of RAM, the kernel area is [2 MiB, 4 MiB)):
valid ones (1-3 PT_LOAD segments, entry inside a segment, various p_offset, p_filesz, p_memsz,
p_paddr, other program headers among them) and near-misses, one for each refusal of the loader
(vmm/src/vstate/loader.rs) and of linux-loader behind it. Random bytes rarely get past the ELF
header checks; mutations of these reach the segment checks and the copy.

Each file is named `<outcome>-<what>`, the outcome being what loading it in that guest gives:
`ok`, or the LoaderError it is refused with in kebab case (`not-elf`,
`segment-out-of-range`, `empty-segment-with-data`, `file-larger-than-memory`, `bad-entry`,
`load` for linux-loader's own refusals). The unit test
`vstate::loader::tests::every_seed_gets_the_outcome_its_name_says` loads every seed and
checks that.

Python 3 standard library only. Run from anywhere:
    python3 vmm/fuzz/seeds/make_elf_loader_seeds.py
It replaces the files in the output folder; the output is the same on every run.
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "elf_loader")

# The fuzz target's guest.
KMIN = 0x20_0000  # pvgpu_abi::layout::KERNEL_MIN_ADDR
RAM = 0x40_0000  # 4 MiB

EHDR_SIZE = 64
PHDR_SIZE = 56
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_EXEC = 2
EM_386, EM_X86_64, EM_AARCH64 = 3, 0x3E, 0xB7
PT_NULL, PT_LOAD, PT_NOTE = 0, 1, 4
PT_GNU_STACK = 0x6474E551
PF_RWX = 7

# A few instructions (hlt; jmp $-1; nops) as segment contents.
CODE = bytes([0xF4, 0xEB, 0xFD]) + bytes([0x90] * 13)


def ehdr(entry, phoff, phnum, *, cls=ELFCLASS64, data=ELFDATA2LSB, machine=EM_X86_64,
         phentsize=PHDR_SIZE, shoff=0, magic=b"\x7fELF"):
    """An ELF64 header (64 bytes)."""
    ident = magic + bytes([cls, data, 1]) + bytes(9)
    return ident + struct.pack(
        "<HHIQQQIHHHHHH",
        ET_EXEC, machine, 1, entry, phoff, shoff, 0,
        EHDR_SIZE, phentsize, phnum, 0, 0, 0,
    )


def phdr(p_type, offset, paddr, filesz, memsz, *, vaddr=None, flags=PF_RWX, align=0x1000):
    """One ELF64 program header (56 bytes); p_vaddr defaults to p_paddr."""
    return struct.pack(
        "<IIQQQQQQ",
        p_type, flags, offset, paddr if vaddr is None else vaddr, paddr, filesz, memsz, align,
    )


def image(entry, segs, *, extra_phdrs=(), phoff=EHDR_SIZE, **hdr):
    """An image: the header, the program headers, and the data of each segment
    `(paddr, data, memsz)` or `(paddr, data, memsz, vaddr)`, one after the other.
    `extra_phdrs` (already packed) follow the PT_LOAD headers. With `phoff` beyond the header,
    the program headers go there, after the data, instead of right after the header."""
    n = len(segs) + len(extra_phdrs)
    after = phoff > EHDR_SIZE
    headers, blobs = [], b""
    off = EHDR_SIZE if after else EHDR_SIZE + n * PHDR_SIZE
    for s in segs:
        paddr, payload, memsz = s[0], s[1], s[2]
        vaddr = s[3] if len(s) > 3 else None
        headers.append(phdr(PT_LOAD, off, paddr, len(payload), memsz, vaddr=vaddr))
        blobs += payload
        off += len(payload)
    table = b"".join(headers) + b"".join(extra_phdrs)
    if not after:
        return ehdr(entry, EHDR_SIZE, n, **hdr) + table + blobs
    body = ehdr(entry, phoff, n, **hdr) + blobs
    assert len(body) <= phoff
    return body + bytes(phoff - len(body)) + table


def raw(entry, phdrs, tail=b"", *, phoff=EHDR_SIZE, phnum=None, **hdr):
    """A header, the packed program headers `phdrs` right after it, then `tail`."""
    n = len(phdrs) if phnum is None else phnum
    return ehdr(entry, phoff, n, **hdr) + b"".join(phdrs) + tail


def note(name, n_type, desc):
    """One ELF note, name and descriptor padded to 4 bytes."""
    pad = lambda b: b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), n_type) + pad(name) + pad(desc)


def with_note(entry, notes):
    """One code segment at KMIN and a PT_NOTE segment holding `notes`."""
    data_off = EHDR_SIZE + 2 * PHDR_SIZE
    return raw(
        entry,
        [
            phdr(PT_LOAD, data_off, KMIN, len(CODE), 0x1000),
            phdr(PT_NOTE, data_off + len(CODE), 0, len(notes), len(notes)),
        ],
        CODE + notes,
    )


def seeds():
    s = {}
    k = KMIN
    # --- Valid images ---
    s["ok-one-segment"] = image(k, [(k, CODE, len(CODE))])
    s["ok-one-segment-bss"] = image(k, [(k, CODE, 0x1000)])
    s["ok-entry-mid-segment"] = image(k + 9, [(k, CODE, len(CODE))])
    s["ok-entry-in-bss"] = image(k + 0x800, [(k, CODE, 0x1000)])
    s["ok-segment-ends-at-ram"] = image(RAM - 0x10, [(RAM - 0x10, CODE, 0x10)])
    s["ok-unaligned-paddr"] = image(k + 0x1235, [(k + 0x1235, CODE[:5], 0x333)])
    s["ok-high-half-vaddr"] = image(k, [(k, CODE, 0x2000, 0xFFFF_FFFF_8000_0000 + k)])
    s["ok-two-segments-entry-in-second"] = image(
        k + 0x10_0004, [(k, CODE, 0x1000), (k + 0x10_0000, CODE, 0x2000)]
    )
    s["ok-two-segments-descending"] = image(
        k + 4, [(k + 0x8_0000, CODE, 0x100), (k, CODE, 0x100)]
    )
    s["ok-three-segments"] = image(
        k + 0x2_0001,
        [(k, CODE, 0x1000), (k + 0x2_0000, CODE[:8], 0x800), (k + 0x4_0000, b"", 0x4000)],
    )
    s["ok-overlapping-segments"] = image(
        k + 0x10, [(k, CODE, 0x1000), (k + 0x8, CODE, 0x100)]
    )
    # Two segments reading the same file bytes (the same p_offset).
    s["ok-shared-p-offset"] = raw(
        k,
        [
            phdr(PT_LOAD, EHDR_SIZE + 2 * PHDR_SIZE, k, len(CODE), len(CODE)),
            phdr(PT_LOAD, EHDR_SIZE + 2 * PHDR_SIZE, k + 0x1000, len(CODE), 0x1000),
        ],
        CODE,
    )
    # The segment's bytes taken from the start of the file (p_offset 0: the header itself).
    s["ok-p-offset-zero"] = raw(k, [phdr(PT_LOAD, 0, k, EHDR_SIZE, 0x1000)])
    s["ok-bss-only-and-code"] = image(
        k + 0x1_0000, [(k, b"", 0x4000), (k + 0x1_0000, CODE, len(CODE))]
    )
    s["ok-empty-load-ignored"] = raw(
        k,
        [
            phdr(PT_LOAD, 0, 0, 0, 0),
            phdr(PT_LOAD, EHDR_SIZE + 2 * PHDR_SIZE, k, len(CODE), len(CODE)),
        ],
        CODE,
    )
    s["ok-other-program-headers"] = image(
        k,
        [(k, CODE, 0x1000)],
        extra_phdrs=[
            phdr(PT_NULL, 0, 0, 0, 0),
            phdr(PT_GNU_STACK, 0, 0, 0, 0, flags=6, align=16),
            phdr(PT_NOTE, 0, 0, 0, 0),
        ],
    )
    s["ok-program-headers-after-data"] = image(k, [(k, CODE, 0x1000)], phoff=0x100)
    s["ok-64-program-headers"] = image(
        k, [(k, CODE, 0x1000)], extra_phdrs=[phdr(PT_NULL, 0, 0, 0, 0)] * 63
    )
    s["ok-gnu-note"] = with_note(k, note(b"GNU\0", 3, bytes(range(20))))
    s["ok-pvh-note"] = with_note(
        k, note(b"GNU\0", 1, bytes(16)) + note(b"Xen\0", 18, struct.pack("<I", k))
    )
    s["ok-section-offset-set"] = image(k, [(k, CODE, 0x1000)], shoff=0x4000)

    # --- The loader's refusals ---
    for name, f in [
        ("empty", b""),
        ("magic-only", b"\x7fELF"),
        ("short-header", image(k, [(k, CODE, 0x10)])[:EHDR_SIZE - 1]),
        ("bad-magic", image(k, [(k, CODE, 0x10)], magic=b"\x7fELG")),
        ("class-32", image(k, [(k, CODE, 0x10)], cls=ELFCLASS32, machine=EM_386)),
        ("big-endian", image(k, [(k, CODE, 0x10)], data=ELFDATA2MSB)),
        ("machine-i386", image(k, [(k, CODE, 0x10)], machine=EM_386)),
        ("machine-aarch64", image(k, [(k, CODE, 0x10)], machine=EM_AARCH64)),
        ("phentsize-32", image(k, [(k, CODE, 0x10)], phentsize=32)),
        ("phnum-0", raw(k, [], CODE)),
        ("phnum-65", image(k, [(k, CODE, 0x1000)], extra_phdrs=[phdr(PT_NULL, 0, 0, 0, 0)] * 64)),
        ("phoff-past-eof", raw(k, [phdr(PT_LOAD, 0, k, 0x10, 0x10)], phoff=0x1_0000)),
        ("phoff-huge", raw(k, [phdr(PT_LOAD, 0, k, 0x10, 0x10)] * 2,
                                phoff=0xFFFF_FFFF_FFFF_FFF0)),
        ("program-headers-truncated", raw(k, [phdr(PT_LOAD, 0, k, 0x10, 0x10)] * 2, phnum=3)),
        ("last-program-header-cut", raw(k, [phdr(PT_LOAD, 0, k, 0x10, 0x10)])[:-1]),
        ("no-load-segment", raw(k, [phdr(PT_NOTE, 0, 0, 0, 0)])),
        ("only-empty-loads", raw(k, [phdr(PT_LOAD, 0, k, 0, 0)] * 2)),
    ]:
        s["not-elf-" + name] = f

    s["empty-segment-with-data-below-kernel-area"] = image(
        k, [(k, CODE, 0x1000), (0, CODE, 0)]
    )
    s["empty-segment-with-data-in-range"] = image(k, [(k, CODE, 0)])
    s["file-larger-than-memory-first"] = image(k, [(k, CODE, 4)])
    s["file-larger-than-memory-second"] = image(k, [(k, CODE, 0x1000), (k + 0x2000, CODE, 1)])

    s["segment-out-of-range-below-kernel-area"] = image(0x1000, [(0x1000, CODE, 0x10)])
    s["segment-out-of-range-straddles-kernel-area"] = image(k, [(k - 0x10, CODE, 0x20)])
    s["segment-out-of-range-past-ram"] = image(RAM - 8, [(RAM - 8, CODE, 0x10)])
    s["segment-out-of-range-bss-past-ram"] = image(k, [(k, CODE, RAM)])
    s["segment-out-of-range-second"] = image(k, [(k, CODE, 0x10), (RAM, CODE, 0x10)])
    s["segment-out-of-range-end-overflows"] = image(
        k, [(0xFFFF_FFFF_FFFF_F000, CODE, 0x2000)]
    )

    s["bad-entry-in-gap"] = image(
        k + 0x8_0000, [(k, CODE, 0x1000), (k + 0x10_0000, CODE, 0x1000)]
    )
    s["bad-entry-at-segment-end"] = image(k + 0x10, [(k, CODE, 0x10)])
    s["bad-entry-before-segment"] = image(k, [(k + 0x1000, CODE, 0x10)])
    s["bad-entry-below-kernel-area"] = image(0x1000, [(k, CODE, 0x10)])
    s["bad-entry-zero"] = image(0, [(k, CODE, 0x10)])

    # --- Refused by linux-loader after our checks passed ---
    # Segment bytes past the end of the file.
    s["load-segment-data-truncated"] = raw(k, [phdr(PT_LOAD, EHDR_SIZE + PHDR_SIZE, k, 0x100,
                                                    0x1000)], CODE)
    s["load-p-offset-past-eof"] = raw(k, [phdr(PT_LOAD, 0x10_0000, k, 0x10, 0x1000)], CODE)
    # e_phoff inside the header (40: the table overlaps e_shoff.., whose low word reads as
    # PT_LOAD): our checks read a valid segment there, linux-loader refuses the offset.
    overlap = bytearray(ehdr(k, 40, 1))
    overlap[40:44] = struct.pack("<I", PT_LOAD)
    overlap += struct.pack("<QQQ", k, 0x10, 0x1000) + bytes(8)
    s["load-phoff-inside-header"] = bytes(overlap)
    # A PVH note whose descriptor is too small for an address.
    s["load-pvh-note-too-small"] = with_note(k, note(b"Xen\0", 18, b"\x01\x02"))
    # A note header cut short.
    s["load-note-truncated"] = with_note(k, note(b"GNU\0", 3, bytes(8)))[:-14]
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        os.remove(os.path.join(OUT, old))
    all_seeds = seeds()
    for name, data in sorted(all_seeds.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    total = sum(len(d) for d in all_seeds.values())
    print(f"{len(all_seeds)} seeds, {total} bytes, in {OUT}")


if __name__ == "__main__":
    main()
