//! Entering the guest directly in 64-bit mode: the boot GDT, identity-mapping page tables and
//! the special registers.
//!
//! The guest kernel loads its own GDT and page tables at once; these only have to get it there.
//! Layout: GDT at BOOT_GDT_ADDR (null, 0x08 64-bit code, 0x10 data, all DPL 0); PML4 at
//! BOOT_PML4_ADDR → one PDPT at BOOT_PDPT_ADDR → four PDs from BOOT_PD_ADDR mapping 0..4 GiB
//! with 2 MiB pages, supervisor-only.

use kvm_bindings::{kvm_segment, kvm_sregs};
use pvgpu_abi::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// Boot GDT: null, 64-bit code (selector 0x08), data (selector 0x10).
pub const BOOT_GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
/// Code segment selector.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data segment selector.
pub const DATA_SELECTOR: u16 = 0x10;

/// Page-table entry flags.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_WRITE: u64 = 1 << 1;
/// Large page (in a PD entry: 2 MiB).
pub const PTE_PS: u64 = 1 << 7;

/// CR0: PE | MP | ET | NE | WP | PG.
pub const CR0_BOOT: u64 = 0x8005_0033;
/// CR4: PAE.
pub const CR4_BOOT: u64 = 0x20;
/// EFER: LME | LMA.
pub const EFER_BOOT: u64 = 0x500;

/// Number of boot page directories (each maps 1 GiB).
pub const BOOT_PD_COUNT: u64 = (layout::BOOT_PT_END - layout::BOOT_PD_ADDR) / layout::PAGE_SIZE;

/// Writes the boot GDT.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    let bytes: Vec<u8> = BOOT_GDT.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(layout::BOOT_GDT_ADDR))
}

/// Writes the identity-mapping page tables for 0..4 GiB.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    let page = layout::PAGE_SIZE as usize;
    let mut pml4 = vec![0u8; page];
    pml4[..8].copy_from_slice(&(layout::BOOT_PDPT_ADDR | PTE_PRESENT | PTE_WRITE).to_le_bytes());
    mem.write_slice(&pml4, GuestAddress(layout::BOOT_PML4_ADDR))?;

    let mut pdpt = vec![0u8; page];
    for i in 0..BOOT_PD_COUNT as usize {
        let pd = layout::BOOT_PD_ADDR + i as u64 * layout::PAGE_SIZE;
        pdpt[i * 8..i * 8 + 8].copy_from_slice(&(pd | PTE_PRESENT | PTE_WRITE).to_le_bytes());
    }
    mem.write_slice(&pdpt, GuestAddress(layout::BOOT_PDPT_ADDR))?;

    let mut pds = vec![0u8; page * BOOT_PD_COUNT as usize];
    for (i, entry) in pds.chunks_exact_mut(8).enumerate() {
        let addr = i as u64 * layout::LARGE_PAGE_SIZE;
        entry.copy_from_slice(&(addr | PTE_PRESENT | PTE_WRITE | PTE_PS).to_le_bytes());
    }
    mem.write_slice(&pds, GuestAddress(layout::BOOT_PD_ADDR))
}

/// The flat 64-bit code segment (selector 0x08).
pub fn code_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: CODE_SELECTOR,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The flat data segment (selector 0x10).
pub fn data_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: DATA_SELECTOR,
        type_: 3,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts long-mode state into `sregs` (as read from the vCPU; TR, LDT and the rest are kept).
pub fn configure_sregs(sregs: &mut kvm_sregs) {
    sregs.cs = code_segment();
    let data = data_segment();
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::BOOT_GDT_ADDR;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.cr3 = layout::BOOT_PML4_ADDR;
    sregs.cr4 = CR4_BOOT;
    sregs.cr0 = CR0_BOOT;
    sregs.efer = EFER_BOOT;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout::RAM_MIN as usize)]).unwrap()
    }

    fn entry(m: &GuestMemoryMmap, addr: u64) -> u64 {
        m.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn gdt_entries() {
        let m = mem();
        write_gdt(&m).unwrap();
        assert_eq!(entry(&m, layout::BOOT_GDT_ADDR), 0);
        assert_eq!(entry(&m, layout::BOOT_GDT_ADDR + 8), 0x00af9a000000ffff);
        assert_eq!(entry(&m, layout::BOOT_GDT_ADDR + 16), 0x00cf92000000ffff);
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let m = mem();
        write_page_tables(&m).unwrap();
        assert_eq!(BOOT_PD_COUNT, 4);
        assert_eq!(
            entry(&m, layout::BOOT_PML4_ADDR),
            layout::BOOT_PDPT_ADDR | 3
        );
        for i in 1..512 {
            assert_eq!(entry(&m, layout::BOOT_PML4_ADDR + i * 8), 0);
        }
        for i in 0..4 {
            assert_eq!(
                entry(&m, layout::BOOT_PDPT_ADDR + i * 8),
                (layout::BOOT_PD_ADDR + i * 0x1000) | 3
            );
        }
        assert_eq!(entry(&m, layout::BOOT_PDPT_ADDR + 4 * 8), 0);
        // Walk a few addresses through the tables.
        for va in [
            0u64,
            0x20_0000,
            0x3fff_ffff,
            0x4000_0000,
            0xd000_0000,
            0xffff_ffff,
        ] {
            let pdpte = entry(&m, layout::BOOT_PDPT_ADDR + (va >> 30) * 8);
            let pde = entry(&m, (pdpte & !0xfff) + ((va >> 21) & 511) * 8);
            assert_eq!(pde & 0xfff, 0x83, "flags at {va:#x}");
            assert_eq!(pde & 0x4, 0, "no user bit");
            assert_eq!((pde & !0xfff) | (va & 0x1f_ffff), va);
        }
        // Nothing beyond the last PD.
        const { assert!(layout::BOOT_PD_ADDR + BOOT_PD_COUNT * 0x1000 <= layout::BOOT_PT_END) };
    }

    #[test]
    fn sregs_for_long_mode() {
        let mut s = kvm_sregs::default();
        s.tr.selector = 0x18;
        configure_sregs(&mut s);
        assert_eq!(s.cr0, 0x80050033);
        assert_eq!(s.cr4, 0x20);
        assert_eq!(s.efer, 0x500);
        assert_eq!(s.cr3, layout::BOOT_PML4_ADDR);
        assert_eq!(
            (s.cs.selector, s.cs.l, s.cs.db, s.cs.type_, s.cs.dpl),
            (8, 1, 0, 11, 0)
        );
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(
                (seg.selector, seg.type_, seg.present, seg.s, seg.db),
                (0x10, 3, 1, 1, 1)
            );
        }
        assert_eq!((s.gdt.base, s.gdt.limit), (layout::BOOT_GDT_ADDR, 23));
        assert_eq!(s.tr.selector, 0x18, "TR is kept");
    }
}
