//! `display [--no-clean]`: pvgpu as a plain virtio-gpu, driven by a driver nobody here wrote,
//! then the memory extension applied to a framebuffer.
//!
//! 1. virtio-drivers' `VirtIOGpu`, unchanged, on our device: resolution (GET_DISPLAY_INFO) and
//!    the EDID's preferred mode, which must agree; `setup_framebuffer`; the test pattern
//!    ([`pvgpu_abi::pattern::test_pattern`]) drawn into it; `flush`; `setup_cursor` and
//!    `move_cursor`. `VirtIOGpu` does not negotiate the pvgpu feature bit.
//! 2. Our own driver (which does) after a device reset: a framebuffer built with the standard
//!    2D commands (RESOURCE_CREATE_2D, RESOURCE_ATTACH_BACKING of guest pages, SET_SCANOUT,
//!    TRANSFER_TO_HOST_2D, RESOURCE_FLUSH), checked in VRAM with CHECKSUM; phase marker
//!    `fb-drawn`; then CLEAN of the resource, which drops the backing's host pages (the pages
//!    go back to the allocator untouched); phase marker `fb-cleaned`; a flush and a CHECKSUM
//!    show the VRAM copy intact. With `--no-clean` the backing is kept.
//! 3. A memory object on the same device (write, migrate, clean, checksum), so the extension's
//!    own objects live next to the 2D resource.
//!
//! The framebuffer stays on the scanout when the guest exits, so `pvgpu run --screenshot`
//! writes the picture as the host holds it.

use alloc::vec;
use alloc::vec::Vec;

use pvgpu_abi::boot_info::BootInfo;
use pvgpu_abi::crc32c::{crc32c, crc32c_append};
use pvgpu_abi::layout::{phase, PAGE_SIZE};
use pvgpu_abi::pattern::test_pattern;
use pvgpu_abi::protocol::{self as p, format, Rect};
use pvgpu_abi::request as rq;
use virtio_drivers::device::gpu::VirtIOGpu;
use virtio_drivers::transport::mmio::MmioTransport;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::port;
use crate::user::gpu::hal::GuestHal;
use crate::user::gpu::{self, Cmd, GpuError};
use crate::user::objects::{self as obj, ObjError};
use crate::user::pages;

/// The framebuffer resource our own driver creates (clear of the object layer's ids).
const FB_ID: u32 = 0xfb00_0001;

/// Errors of the workload.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// virtio-drivers' VirtIOGpu failed.
    #[error("VirtIOGpu: {0:?}")]
    Virtio(virtio_drivers::Error),
    /// Our driver failed.
    #[error("driver: {0}")]
    Gpu(#[from] GpuError),
    /// The object layer failed.
    #[error("objects: {0}")]
    Obj(#[from] ObjError),
    /// Guest pages ran out.
    #[error("no guest pages for a {0}-byte framebuffer")]
    NoPages(u64),
    /// A check failed.
    #[error("{0}")]
    Check(&'static str),
}

impl From<virtio_drivers::Error> for DisplayError {
    fn from(e: virtio_drivers::Error) -> Self {
        DisplayError::Virtio(e)
    }
}

/// Pixel `(x, y)` of the pattern as B8G8R8A8 bytes.
fn bgra(x: u32, y: u32, w: u32, h: u32) -> [u8; 4] {
    let [r, g, b] = test_pattern(x, y, w, h);
    [b, g, r, 0xff]
}

/// Runs the workload on task 0.
pub fn run(args: &[&str], info: &BootInfo) -> u8 {
    let clean = match args {
        [] => true,
        ["--no-clean"] => false,
        _ => {
            crate::println!("usage: display [--no-clean]");
            return EXIT_USAGE;
        }
    };
    let result = stock_driver(info)
        .and_then(|(w, h)| extension(w, h, clean))
        .and_then(|()| memory_object());
    match result {
        Ok(()) => {
            crate::println!("display: PASS");
            EXIT_OK
        }
        Err(e) => {
            crate::println!("display: FAIL: {e}");
            EXIT_FAILED
        }
    }
}

/// Part 1: virtio-drivers' VirtIOGpu, as it comes. Returns the resolution.
fn stock_driver(info: &BootInfo) -> Result<(u32, u32), DisplayError> {
    if info.virtio_mmio_base == 0 || info.vram_size == 0 {
        return Err(GpuError::NoDevice.into());
    }
    // SAFETY: nothing else drives the device now: the object layer's driver has not started
    // (it starts in part 2, after this transport is dropped with the VirtIOGpu).
    let transport = unsafe { gpu::open_transport(info) }?;
    let mut g = VirtIOGpu::<GuestHal, MmioTransport<'static>>::new(transport)?;
    let (w, h) = g.resolution()?;
    let (ew, eh) = g.edid_preferred_resolution()?;
    crate::println!("display: VirtIOGpu: {w}x{h}, EDID preferred mode {ew}x{eh}");
    if (w, h) != (ew, eh) {
        return Err(DisplayError::Check("EDID and GET_DISPLAY_INFO disagree"));
    }
    let fb = g.setup_framebuffer()?;
    if fb.len() != (w as usize) * (h as usize) * 4 {
        return Err(DisplayError::Check("framebuffer has the wrong size"));
    }
    for (i, px) in fb.chunks_exact_mut(4).enumerate() {
        let (x, y) = ((i % w as usize) as u32, (i / w as usize) as u32);
        px.copy_from_slice(&bgra(x, y, w, h));
    }
    g.flush()?;
    let cursor: Vec<u8> = (0..64 * 64)
        .flat_map(|i: u32| [0, (i % 64 * 4) as u8, 0xff, 0xff])
        .collect();
    g.setup_cursor(&cursor, 10, 10, 0, 0)?;
    g.move_cursor(w / 2, h / 2)?;
    crate::println!("display: VirtIOGpu: framebuffer drawn and flushed, cursor set and moved");
    // Dropping the driver stops its queues; our own driver resets the device next.
    drop(g);
    Ok((w, h))
}

/// Part 2: a framebuffer through our driver, then CLEAN of its backing.
fn extension(w: u32, h: u32, clean: bool) -> Result<(), DisplayError> {
    obj::ensure_started()?;
    let size = u64::from(w) * u64::from(h) * 4;
    let n = size.div_ceil(PAGE_SIZE) as usize;
    let pages = pages::alloc_many(n).ok_or(DisplayError::NoPages(size))?;
    // Draw the pattern into the pages (guest RAM is identity-mapped for ring 3).
    let mut crc = 0;
    let mut row = vec![0u8; w as usize * 4];
    for y in 0..h {
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            px.copy_from_slice(&bgra(x as u32, y, w, h));
        }
        crc = crc32c_append(crc, &row);
        let start = u64::from(y) * u64::from(w) * 4;
        for (k, chunk) in row.chunks(4).enumerate() {
            let off = start + k as u64 * 4;
            let page = pages[(off / PAGE_SIZE) as usize];
            let dst = (page + off % PAGE_SIZE) as *mut u8;
            // SAFETY: `page` is a guest page this workload owns (from the page allocator),
            // identity-mapped and writable for ring 3; a 4-byte pixel never crosses a page
            // (pixels start at multiples of 4).
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), dst, chunk.len()) };
        }
    }
    let all = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    let mut cmds = [
        Cmd::standard(rq::resource_create_2d(FB_ID, format::B8G8R8A8_UNORM, w, h)),
        Cmd::resource_attach_backing(FB_ID, &pages),
        Cmd::standard(rq::set_scanout(0, FB_ID, all)),
        Cmd::standard(rq::transfer_to_host_2d(FB_ID, all, 0)),
        Cmd::standard(rq::resource_flush(FB_ID, all)),
    ];
    obj::with_gpu(|g| g.submit(&mut cmds))??;
    check_vram(size, crc)?;
    crate::println!(
        "display: our driver: {w}x{h} framebuffer on the scanout ({} KiB of guest pages)",
        size >> 10
    );
    port::phase(phase::FB_DRAWN);
    if !clean {
        return Ok(());
    }
    obj::with_gpu(|g| g.submit_one(Cmd::clean(FB_ID)))??;
    // The CLEAN is fenced and done: the host dropped the pages, which go back to the
    // allocator without being touched.
    for pa in pages {
        pages::free(pa);
    }
    port::phase(phase::FB_CLEANED);
    obj::with_gpu(|g| g.submit_one(Cmd::standard(rq::resource_flush(FB_ID, all))))??;
    check_vram(size, crc)?;
    // Without a backing there is nothing to transfer from.
    let t = obj::with_gpu(|g| g.submit_one(Cmd::standard(rq::transfer_to_host_2d(FB_ID, all, 0))))?;
    match t {
        Err(GpuError::Device { code, .. }) if code == p::RESP_ERR_UNSPEC => {}
        _ => {
            return Err(DisplayError::Check(
                "a transfer without backing was not refused",
            ))
        }
    }
    crate::println!("display: framebuffer backing cleaned; the scanout shows the VRAM copy");
    Ok(())
}

/// The resource's VRAM copy must be the pattern.
fn check_vram(size: u64, crc: u32) -> Result<(), DisplayError> {
    let c = obj::with_gpu(|g| g.submit_one(Cmd::checksum(FB_ID, 0, size)))??;
    match c.response::<p::RespChecksum>() {
        Some(r) if r.crc32c == crc => Ok(()),
        _ => Err(DisplayError::Check(
            "the framebuffer in VRAM is not the pattern",
        )),
    }
}

/// Part 3: a memory object next to the resource, through the object API.
fn memory_object() -> Result<(), DisplayError> {
    let size = 64 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let h = obj::create(0, size as u64)?;
    obj::write_at(0, h, 0, &data)?;
    obj::migrate(0, h)?;
    obj::clean(0, h)?;
    let c = obj::checksum(0, h, 0, size as u64)?;
    obj::close(0, h)?;
    if c != crc32c(&data) {
        return Err(DisplayError::Check("memory object does not verify"));
    }
    crate::println!("display: a memory object on the same device verifies");
    Ok(())
}
