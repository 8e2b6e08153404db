//! The GDT (kernel and user segments, one TSS per CPU) and the TSSs.
//!
//! The kernel selectors match the VMM's boot GDT (code 0x08, data 0x10), so loading ours
//! needs no segment reload: that saves emulated far jumps.

use pvgpu_abi::layout::{self, MAX_VCPUS};
use spin::Once;
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use crate::memory_map::kernel_stacks;

const NCPU: usize = MAX_VCPUS as usize;
const ENTRIES: usize = 5 + 2 * NCPU;

/// Ring-3 code selector (GDT index 4, RPL 3).
pub const USER_CS: u16 = 0x23;
/// Ring-3 stack selector (GDT index 3, RPL 3).
pub const USER_SS: u16 = 0x1b;

/// Stack for double faults, so a kernel stack overflow is still reported.
const DF_STACK_SIZE: usize = 4096;
#[repr(C, align(16))]
struct DfStacks([[u8; DF_STACK_SIZE]; NCPU]);
#[link_section = ".kbss"]
static mut DF_STACKS: DfStacks = DfStacks([[0; DF_STACK_SIZE]; NCPU]);

/// The CPU whose double-fault stack holds `rsp`, if it is on one.
pub fn cpu_of_df_stack(rsp: u64) -> Option<usize> {
    let base = core::ptr::addr_of!(DF_STACKS) as u64;
    let cpu = rsp.checked_sub(base)? / DF_STACK_SIZE as u64;
    (cpu < NCPU as u64).then_some(cpu as usize)
}

/// IST slot used by the double-fault gate.
pub const DOUBLE_FAULT_IST: u16 = 0;

/// Ports ring 3 may use directly: the console, the exit device, the phase marker and the
/// used-wait device.
const USER_PORTS: [(u16, u16); 4] = [
    (layout::SERIAL_PORT, layout::SERIAL_PORT_LEN),
    (layout::EXIT_PORT, 1),
    (layout::PHASE_PORT, 4),
    (layout::USED_WAIT_PORT, 2),
];
/// One past the highest user port.
const USER_PORTS_END: usize = {
    let mut end = 0;
    let mut i = 0;
    while i < USER_PORTS.len() {
        let e = USER_PORTS[i].0 as usize + USER_PORTS[i].1 as usize;
        if e > end {
            end = e;
        }
        i += 1;
    }
    end
};
/// Bytes of I/O permission bitmap: up to the highest user port, plus the 0xff terminator.
const IOMAP_LEN: usize = USER_PORTS_END.div_ceil(8) + 1;

/// A TSS followed by its I/O permission bitmap (a clear bit lets ring 3 use that port).
/// PVM ignores IOPL for ring 3, so the bitmap is how ring 3 reaches its ports.
#[repr(C)]
struct TssIo {
    tss: TaskStateSegment,
    iomap: [u8; IOMAP_LEN],
}

fn iomap() -> [u8; IOMAP_LEN] {
    let mut m = [0xff; IOMAP_LEN];
    for (first, len) in USER_PORTS {
        for port in first..first + len {
            m[port as usize / 8] &= !(1 << (port % 8));
        }
    }
    m
}

struct Tables {
    gdt: GlobalDescriptorTable<ENTRIES>,
    tss: [SegmentSelector; NCPU],
}

#[link_section = ".kdata"]
static TSS: Once<[TssIo; NCPU]> = Once::new();
#[link_section = ".kdata"]
static GDT: Once<Tables> = Once::new();

/// Builds the GDT and the TSSs of `ncpu` CPUs (vCPU 0 only).
pub fn init(ncpu: usize) {
    let tss = TSS.call_once(|| {
        core::array::from_fn(|cpu| {
            let mut t = TaskStateSegment::new();
            t.privilege_stack_table[0] = VirtAddr::new(kernel_stacks().top(cpu));
            let df_base = core::ptr::addr_of!(DF_STACKS) as u64;
            t.interrupt_stack_table[DOUBLE_FAULT_IST as usize] =
                VirtAddr::new(df_base + ((cpu + 1) * DF_STACK_SIZE) as u64);
            t.iomap_base = core::mem::offset_of!(TssIo, iomap) as u16;
            TssIo {
                tss: t,
                iomap: iomap(),
            }
        })
    });
    GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::empty();
        gdt.append(Descriptor::kernel_code_segment());
        gdt.append(Descriptor::kernel_data_segment());
        gdt.append(Descriptor::user_data_segment());
        gdt.append(Descriptor::user_code_segment());
        let mut sel = [SegmentSelector(0); NCPU];
        for (cpu, s) in sel.iter_mut().enumerate().take(ncpu) {
            let d = Descriptor::tss_segment_with_iomap(&tss[cpu].tss, &tss[cpu].iomap);
            // The map is built above to satisfy every rule this checks.
            *s = gdt.append(d.unwrap_or_else(|_| Descriptor::tss_segment(&tss[cpu].tss)));
        }
        Tables { gdt, tss: sel }
    });
}

/// Loads the GDT and this CPU's TSS.
pub fn load(cpu: usize) {
    let Some(t) = GDT.get() else { return };
    t.gdt.load();
    // SAFETY: the selector names this CPU's own TSS descriptor in the GDT just loaded, and
    // each CPU loads a different one (ltr marks it busy).
    unsafe { load_tss(t.tss[cpu]) };
}
