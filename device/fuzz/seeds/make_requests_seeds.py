#!/usr/bin/env python3
"""Writes the seed inputs of the `requests` fuzz target to seeds/requests/ (standard library
only; the same files on every run).

An input starts with two bytes: the memory (0 shared memfds, 1 anonymous 4 KiB pages, 2
anonymous huge pages) and the slices (0 a page, 1 a sixteenth of a huge page). Each seed then
creates a 2 MiB object backed by the data area's first 2 MiB-aligned page, moves it to VRAM
(MIGRATE_CLEAN, or MIGRATE then CLEAN), evicts it into the next 2 MiB and checksums it: on
anonymous memory the pages move (with huge slices on huge pages, as whole 2 MiB pages), so
the fuzzer starts from inputs that reach the page mover. The byte layout follows
fuzz_targets/requests.rs (`step`, `command`, `Input::size`, `Input::addr`, `entries`).
"""
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requests")


def cmd(sel, *fields):
    # step kind 0 (a well-formed command), flags 0, fence 0, the command, its fields, then a
    # non-zero byte: not truncated
    return bytes([0, 0, 0, sel, *fields, 1])


CREATE = cmd(2, 1, 3, 1)  # CREATE object 1, size: kind 3 (huge pages) x 1 = 2 MiB
ATTACH = cmd(4, 1, 1, 3, 0, 2)  # ATTACH_BACKING 1: one entry, address kind 3 (2 MiB-aligned) #0, 2 MiB
MIGRATE_CLEAN = cmd(18, 1)
MIGRATE = cmd(5, 1)
CLEAN = cmd(6, 1)
EVICT = cmd(7, 1, 1, 3, 1, 2)  # EVICT 1 into one entry: the next 2 MiB-aligned page, 2 MiB
CHECKSUM = cmd(10, 1, 0, 0, 3, 1)  # CHECKSUM 1, offset 0, 2 MiB


def main():
    os.makedirs(HERE, exist_ok=True)
    for memory, mname in [(0, "shared"), (1, "anon4k"), (2, "thp")]:
        for slices, sname in [(0, "page_slices"), (1, "huge_slices")]:
            head = bytes([memory, slices])
            seeds = {
                "migrate_clean_evict_2mib": MIGRATE_CLEAN,
                "migrate_then_clean_evict_2mib": MIGRATE + CLEAN,
            }
            for name, to_vram in seeds.items():
                path = os.path.join(HERE, f"{name}_{mname}_{sname}")
                with open(path, "wb") as f:
                    f.write(head + CREATE + ATTACH + to_vram + EVICT + CHECKSUM)


if __name__ == "__main__":
    main()
