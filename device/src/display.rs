//! The standard virtio-gpu 2D command set (virtio 1.2, 5.7.6) and the cursor queue, on the
//! same object table as the pvgpu extension.
//!
//! A 2D resource is an object with an [`ImageInfo`]: RESOURCE_CREATE_2D allocates its host copy
//! in VRAM (`stride * height` bytes, page-rounded, so `--vram` bounds it and it counts in VRAM
//! used), RESOURCE_ATTACH_BACKING gives it guest memory (placement VRAM: both copies),
//! TRANSFER_TO_HOST_2D copies a rectangle of the backing into VRAM, and the scanout shows the
//! VRAM copy. The extension's CLEAN then works on it like on any VRAM object: the backing's
//! pages are punched and forgotten (placement CLEANED), and the scanout keeps showing VRAM.
//!
//! Every command checks every guest value first and changes nothing when it fails; the error
//! codes are virtio-gpu's (see [`CommandError::response_type_2d`]).

use pvgpu_abi::protocol::{self as p, format, CtrlHdr, Rect, Wire};

use crate::commands::{entries, need, CommandEngine, CommandError, Commit, Outcome};
use crate::edid::{edid_block, EdidError, EDID_BLOCK};
use crate::guest_ram::Extent;
use crate::job::{Job, Work};
use crate::object::{ImageInfo, Object, ObjectError, Placement};
use crate::vram_alloc::AllocError;

/// Default scanout width.
pub const DEFAULT_WIDTH: u32 = 1280;
/// Default scanout height.
pub const DEFAULT_HEIGHT: u32 = 800;

/// Errors of the 2D commands (besides those they share with the extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisplayError {
    /// The scanout id is out of range.
    #[error("scanout {0} does not exist")]
    Scanout(u32),
    /// The object exists but is not a 2D resource.
    #[error("object {0} is not a 2D resource")]
    NotAResource(u32),
    /// The format is not one the spec lists.
    #[error("unsupported format {0}")]
    Format(u32),
    /// Width or height is 0, or the stride (width × 4) overflows 32 bits.
    #[error("bad resource size {width}x{height}")]
    Size {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// The resource is larger than VRAM.
    #[error("a resource of {0} bytes does not fit in VRAM")]
    TooLarge(u64),
    /// A rectangle is not inside the resource (or is empty where it must not be).
    #[error("rectangle {x},{y} {w}x{h} is not inside the {width}x{height} resource")]
    RectOutside {
        /// Left.
        x: u32,
        /// Top.
        y: u32,
        /// Width.
        w: u32,
        /// Height.
        h: u32,
        /// Resource width.
        width: u32,
        /// Resource height.
        height: u32,
    },
    /// The backing is shorter than the resource.
    #[error("backing of {have} bytes is shorter than the resource's {need}")]
    BackingTooShort {
        /// Bytes of backing.
        have: u64,
        /// Bytes of the resource.
        need: u64,
    },
    /// More backing entries than the resource has pages (plus one).
    #[error("{got} backing entries for a resource of at most {max}")]
    TooManyEntries {
        /// Entries sent.
        got: usize,
        /// Most allowed.
        max: u64,
    },
    /// The resource has no backing.
    #[error("resource {0} has no backing")]
    NoBacking(u32),
    /// The resource already has a backing.
    #[error("resource {0} already has a backing")]
    HasBacking(u32),
    /// TRANSFER_TO_HOST_2D would read past the backing.
    #[error("transfer reads up to byte {end} of a {have}-byte backing")]
    OutsideBacking {
        /// End of the last row read (saturated).
        end: u64,
        /// Bytes of backing.
        have: u64,
    },
    /// A cursor image must be a 64x64 resource.
    #[error("resource {0} is not 64x64 and cannot be a cursor")]
    NotACursor(u32),
    /// The device has no capability sets.
    #[error("no capability sets (no 3D)")]
    NoCapsets,
    /// A command on the wrong queue (cursor commands go to the cursor queue, and only they).
    #[error("command {0:#x} does not belong on this queue")]
    WrongQueue(u32),
    /// The scanout mode cannot be described by an EDID.
    #[error(transparent)]
    Mode(#[from] EdidError),
}

impl DisplayError {
    /// The virtio-gpu response type.
    pub fn response_type(&self) -> u32 {
        match self {
            DisplayError::Scanout(_) => p::RESP_ERR_INVALID_SCANOUT_ID,
            DisplayError::NotAResource(_) => p::RESP_ERR_INVALID_RESOURCE_ID,
            DisplayError::TooLarge(_) => p::RESP_ERR_OUT_OF_MEMORY,
            DisplayError::Format(_)
            | DisplayError::Size { .. }
            | DisplayError::RectOutside { .. }
            | DisplayError::OutsideBacking { .. }
            | DisplayError::TooManyEntries { .. }
            | DisplayError::NotACursor(_)
            | DisplayError::NoCapsets
            | DisplayError::Mode(_) => p::RESP_ERR_INVALID_PARAMETER,
            DisplayError::BackingTooShort { .. }
            | DisplayError::NoBacking(_)
            | DisplayError::HasBacking(_)
            | DisplayError::WrongQueue(_) => p::RESP_ERR_UNSPEC,
        }
    }
}

impl CommandError {
    /// The response type a virtio-gpu command (2D or cursor) gets for this error: only
    /// virtio-gpu's own codes, as a stock driver knows no others (QEMU's choices where the
    /// spec names none: backing problems and unknown commands are ERR_UNSPEC).
    pub fn response_type_2d(&self) -> u32 {
        match self {
            CommandError::Display(e) => e.response_type(),
            CommandError::InvalidParameter(_) => p::RESP_ERR_INVALID_PARAMETER,
            CommandError::Object(e) => match e {
                ObjectError::NoSuchObject(_) | ObjectError::ZeroId | ObjectError::Exists(_) => {
                    p::RESP_ERR_INVALID_RESOURCE_ID
                }
                ObjectError::TooMany(_) => p::RESP_ERR_OUT_OF_MEMORY,
                ObjectError::OutOfRange { .. } => p::RESP_ERR_INVALID_PARAMETER,
                ObjectError::InvalidState { .. } => p::RESP_ERR_UNSPEC,
            },
            CommandError::Alloc(AllocError::OutOfVram { .. }) => p::RESP_ERR_OUT_OF_MEMORY,
            _ => p::RESP_ERR_UNSPEC,
        }
    }
}

/// The scanout's mode; only [`DisplayMode::new`] makes one, so every mode fits an EDID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayMode {
    width: u32,
    height: u32,
}

impl Default for DisplayMode {
    fn default() -> Self {
        DisplayMode {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
        }
    }
}

impl DisplayMode {
    /// A mode; both sides must fit an EDID timing (1..=4095).
    pub fn new(width: u32, height: u32) -> Result<Self, DisplayError> {
        edid_block(width, height)?;
        Ok(DisplayMode { width, height })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
}

/// What a scanout shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanoutBinding {
    /// The resource.
    pub resource_id: u32,
    /// The part of it shown.
    pub rect: Rect,
}

/// The cursor (its image resource and hot spot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// A 64x64 2D resource.
    pub resource_id: u32,
    /// Hot spot x.
    pub hot_x: u32,
    /// Hot spot y.
    pub hot_y: u32,
}

/// The display state: one scanout and the cursor.
#[derive(Debug, Clone)]
pub struct Display {
    mode: DisplayMode,
    edid: [u8; EDID_BLOCK],
    scanout: Option<ScanoutBinding>,
    cursor: Option<Cursor>,
    cursor_pos: (u32, u32),
    flushes: u64,
}

impl Display {
    /// A display of `mode`, showing nothing.
    pub fn new(mode: DisplayMode) -> Self {
        // A DisplayMode always fits (DisplayMode::new checked it).
        let edid = edid_block(mode.width, mode.height).unwrap_or([0; EDID_BLOCK]);
        Display {
            mode,
            edid,
            scanout: None,
            cursor: None,
            cursor_pos: (0, 0),
            flushes: 0,
        }
    }

    /// The scanout's mode.
    pub fn mode(&self) -> DisplayMode {
        self.mode
    }

    /// The EDID base block.
    pub fn edid(&self) -> &[u8; EDID_BLOCK] {
        &self.edid
    }

    /// What scanout 0 shows, if anything.
    pub fn scanout(&self) -> Option<ScanoutBinding> {
        self.scanout
    }

    /// The cursor, if one is set.
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// The cursor position.
    pub fn cursor_pos(&self) -> (u32, u32) {
        self.cursor_pos
    }

    /// RESOURCE_FLUSHes of the resource on the scanout so far (the VMM takes a screenshot
    /// when this changes).
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Forgets a resource that is gone (unref, destroy).
    pub(crate) fn forget(&mut self, id: u32) {
        if self.scanout.is_some_and(|s| s.resource_id == id) {
            self.scanout = None;
        }
        if self.cursor.is_some_and(|c| c.resource_id == id) {
            self.cursor = None;
        }
    }

    /// Back to showing nothing (device reset).
    pub(crate) fn reset(&mut self) {
        self.scanout = None;
        self.cursor = None;
        self.cursor_pos = (0, 0);
    }
}

/// A scanout's picture, as 8-bit RGB rows (alpha and padding bytes are dropped, as a monitor
/// would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanoutImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, row by row.
    pub rgb: Vec<u8>,
}

fn rect_inside(r: &Rect, img: &ImageInfo) -> Result<(), DisplayError> {
    let fits = |pos: u32, len: u32, max: u32| pos.checked_add(len).is_some_and(|e| e <= max);
    if fits(r.x, r.width, img.width) && fits(r.y, r.height, img.height) {
        Ok(())
    } else {
        Err(DisplayError::RectOutside {
            x: r.x,
            y: r.y,
            w: r.width,
            h: r.height,
            width: img.width,
            height: img.height,
        })
    }
}

/// A backing (its extents, in order) with the offset at which each extent starts, so that a
/// range is found by binary search: a transfer of many rows from a backing of many entries
/// costs O(rows × log entries), not O(rows × entries).
pub(crate) struct BackingMap<'a> {
    extents: &'a [Extent],
    starts: Vec<u64>,
}

impl<'a> BackingMap<'a> {
    pub(crate) fn new(extents: &'a [Extent]) -> Self {
        let mut at = 0u64;
        let starts = extents
            .iter()
            .map(|x| {
                let s = at;
                at = at.saturating_add(x.len);
                s
            })
            .collect();
        BackingMap { extents, starts }
    }

    /// The part `[offset, offset + len)` of the backing, as guest extents.
    pub(crate) fn range(&self, offset: u64, mut len: u64) -> Vec<Extent> {
        let mut out = Vec::new();
        let first = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let mut skip = offset.saturating_sub(self.starts.get(first).copied().unwrap_or(0));
        for x in self.extents.iter().skip(first) {
            if len == 0 {
                break;
            }
            if skip >= x.len {
                skip -= x.len;
                continue;
            }
            let n = (x.len - skip).min(len);
            out.push(Extent {
                gpa: x.gpa + skip,
                len: n,
            });
            len -= n;
            skip = 0;
        }
        out
    }
}

fn backing_len(extents: &[Extent]) -> u64 {
    extents.iter().fold(0u64, |a, x| a.saturating_add(x.len))
}

fn image_of(o: &Object) -> Result<ImageInfo, CommandError> {
    o.image
        .ok_or(CommandError::Display(DisplayError::NotAResource(o.id)))
}

impl CommandEngine {
    /// Runs one virtio-gpu control-queue command (2D; 3D types and cursor commands are
    /// refused here). Any driver may send these, whatever it negotiated.
    pub(crate) fn dispatch_2d(
        &mut self,
        hdr: &CtrlHdr,
        req: &[u8],
    ) -> Result<Outcome, CommandError> {
        let cmd = hdr.type_;
        let ok = || hdr.response(p::RESP_OK_NODATA_2D).as_bytes().to_vec();
        let reply = match cmd {
            p::CMD_GET_DISPLAY_INFO => Ok(self.display_info(hdr).as_bytes().to_vec()),
            p::CMD_GET_EDID => {
                let r: p::ReqGetEdid = need(cmd, req)?;
                if r.scanout >= p::NUM_SCANOUTS {
                    // QEMU answers INVALID_PARAMETER here (the spec names no code).
                    return Err(CommandError::InvalidParameter("scanout"));
                }
                let mut resp = p::RespEdid {
                    hdr: hdr.response(p::RESP_OK_EDID),
                    size: EDID_BLOCK as u32,
                    ..p::RespEdid::default()
                };
                resp.edid[..EDID_BLOCK].copy_from_slice(self.display.edid());
                Ok(resp.as_bytes().to_vec())
            }
            p::CMD_RESOURCE_CREATE_2D => {
                let r: p::ReqResourceCreate2d = need(cmd, req)?;
                self.resource_create_2d(r.resource_id, r.format, r.width, r.height)?;
                Ok(ok())
            }
            p::CMD_RESOURCE_UNREF => {
                let r: p::ReqResource = need(cmd, req)?;
                self.destroy(r.resource_id)?;
                Ok(ok())
            }
            p::CMD_RESOURCE_ATTACH_BACKING => {
                let r: p::ReqBacking = need(cmd, req)?;
                let e = entries::<p::ReqBacking>(cmd, req, r.nr_entries)?;
                self.resource_attach_backing(r.object_id, &e)?;
                Ok(ok())
            }
            p::CMD_RESOURCE_DETACH_BACKING => {
                let r: p::ReqResource = need(cmd, req)?;
                self.resource_detach_backing(r.resource_id)?;
                Ok(ok())
            }
            p::CMD_SET_SCANOUT => {
                let r: p::ReqSetScanout = need(cmd, req)?;
                self.set_scanout(r.scanout_id, r.resource_id, r.r)?;
                Ok(ok())
            }
            p::CMD_RESOURCE_FLUSH => {
                let r: p::ReqResourceFlush = need(cmd, req)?;
                self.resource_flush(r.resource_id, r.r)?;
                Ok(ok())
            }
            p::CMD_TRANSFER_TO_HOST_2D => {
                let r: p::ReqTransferToHost2d = need(cmd, req)?;
                let job = self.transfer_to_host_2d(r.resource_id, r.r, r.offset)?;
                return Ok(Outcome::Work(job, Commit::ToHost2d));
            }
            p::CMD_GET_CAPSET_INFO | p::CMD_GET_CAPSET => {
                Err(CommandError::Display(DisplayError::NoCapsets))
            }
            p::CMD_UPDATE_CURSOR | p::CMD_MOVE_CURSOR => {
                Err(CommandError::Display(DisplayError::WrongQueue(cmd)))
            }
            other => Err(CommandError::UnknownCommand(other)),
        };
        reply.map(Outcome::Reply)
    }

    /// Handles one request from the cursor queue and returns its response (the queue writes
    /// it only if the driver gave a response buffer: stock drivers give none).
    pub fn handle_cursor(&mut self, req: &[u8]) -> Vec<u8> {
        self.tick += 1;
        let Some(hdr) = CtrlHdr::read_from(req) else {
            self.stats.count_command("short", true);
            return CtrlHdr::new(p::RESP_ERR_UNSPEC).as_bytes().to_vec();
        };
        let result = self.cursor_command(&hdr, req);
        self.stats
            .count_command(p::command_name(hdr.type_), result.is_err());
        match result {
            Ok(()) => hdr.response(p::RESP_OK_NODATA_2D),
            Err(e) => {
                log::debug!("cursor command {:#x}: {e}", hdr.type_);
                hdr.response(e.response_type_2d())
            }
        }
        .as_bytes()
        .to_vec()
    }

    fn cursor_command(&mut self, hdr: &CtrlHdr, req: &[u8]) -> Result<(), CommandError> {
        let cmd = hdr.type_;
        if cmd != p::CMD_UPDATE_CURSOR && cmd != p::CMD_MOVE_CURSOR {
            return Err(CommandError::Display(DisplayError::WrongQueue(cmd)));
        }
        let r: p::ReqUpdateCursor = need(cmd, req)?;
        if r.pos.scanout_id >= p::NUM_SCANOUTS {
            return Err(DisplayError::Scanout(r.pos.scanout_id).into());
        }
        // A named resource must be a live 2D resource (MOVE names the current cursor).
        if r.resource_id != 0 {
            let o = self.objects.touch(r.resource_id, self.tick)?;
            let img = image_of(o)?;
            if cmd == p::CMD_UPDATE_CURSOR
                && (img.width != p::CURSOR_SIZE || img.height != p::CURSOR_SIZE)
            {
                return Err(DisplayError::NotACursor(r.resource_id).into());
            }
        }
        if cmd == p::CMD_UPDATE_CURSOR {
            self.display.cursor = (r.resource_id != 0).then_some(Cursor {
                resource_id: r.resource_id,
                hot_x: r.hot_x,
                hot_y: r.hot_y,
            });
        }
        self.display.cursor_pos = (r.pos.x, r.pos.y);
        Ok(())
    }

    fn display_info(&self, hdr: &CtrlHdr) -> p::RespDisplayInfo {
        let mode = self.display.mode();
        let mut resp = p::RespDisplayInfo {
            hdr: hdr.response(p::RESP_OK_DISPLAY_INFO),
            ..p::RespDisplayInfo::default()
        };
        resp.pmodes[0] = p::DisplayOne {
            r: Rect {
                x: 0,
                y: 0,
                width: mode.width,
                height: mode.height,
            },
            enabled: 1,
            flags: 0,
        };
        resp
    }

    fn resource_create_2d(
        &mut self,
        id: u32,
        fmt: u32,
        width: u32,
        height: u32,
    ) -> Result<(), CommandError> {
        self.objects.check_new(id)?;
        if format::rgb_offsets(fmt).is_none() {
            return Err(DisplayError::Format(fmt).into());
        }
        let stride = width
            .checked_mul(format::BYTES_PER_PIXEL)
            .filter(|_| width != 0 && height != 0)
            .ok_or(DisplayError::Size { width, height })?;
        // Cannot overflow: both factors are below 2^32.
        let bytes = u64::from(stride) * u64::from(height);
        let size = bytes
            .checked_next_multiple_of(p::PAGE_SIZE)
            .filter(|&s| s <= self.vram.size())
            .ok_or(DisplayError::TooLarge(bytes))?;
        let off = self.alloc.alloc(size, p::PAGE_SIZE)?;
        let image = ImageInfo {
            format: fmt,
            width,
            height,
            stride,
        };
        if let Err(e) = self.objects.create_image(id, size, image, off, self.tick) {
            self.free_vram(off, size);
            return Err(e.into());
        }
        self.stats.objects_created += 1;
        Ok(())
    }

    fn resource_attach_backing(
        &mut self,
        id: u32,
        entries: &[p::MemEntry],
    ) -> Result<(), CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        let img = image_of(o)?;
        if o.backing.is_some() {
            return Err(DisplayError::HasBacking(id).into());
        }
        // Byte-granular entries could otherwise make the host keep one record per guest byte;
        // a real driver sends at most one entry per page (plus one for a partial page).
        let max_entries = o.size / p::PAGE_SIZE + 1;
        if entries.len() as u64 > max_entries {
            return Err(DisplayError::TooManyEntries {
                got: entries.len(),
                max: max_entries,
            }
            .into());
        }
        let mut extents: Vec<Extent> = Vec::with_capacity(entries.len());
        for e in entries {
            let x = self.ram.check_bytes(e.addr, u64::from(e.length))?;
            match extents.last_mut() {
                Some(last) if last.gpa + last.len == x.gpa => last.len += x.len,
                _ => extents.push(x),
            }
        }
        let have = backing_len(&extents);
        let need = u64::from(img.stride) * u64::from(img.height);
        if have < need {
            return Err(DisplayError::BackingTooShort { have, need }.into());
        }
        self.check_unshared(id, &extents)?;
        self.backing.insert(id, &extents);
        let o = self.objects.touch(id, self.tick)?;
        o.backing = Some(extents);
        o.placement = Placement::Vram;
        Ok(())
    }

    fn resource_detach_backing(&mut self, id: u32) -> Result<(), CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        image_of(o)?;
        let Some(old) = o.backing.take() else {
            return Err(DisplayError::NoBacking(id).into());
        };
        // VRAM keeps the host copy; the guest gets its memory back untouched.
        o.placement = Placement::Cleaned;
        self.backing.remove(&old);
        Ok(())
    }

    fn set_scanout(&mut self, scanout: u32, id: u32, r: Rect) -> Result<(), CommandError> {
        if scanout >= p::NUM_SCANOUTS {
            return Err(DisplayError::Scanout(scanout).into());
        }
        if id == 0 {
            self.display.scanout = None;
            return Ok(());
        }
        let o = self.objects.touch(id, self.tick)?;
        let img = image_of(o)?;
        rect_inside(&r, &img)?;
        if r.width == 0 || r.height == 0 {
            return Err(CommandError::InvalidParameter("empty scanout rectangle"));
        }
        self.display.scanout = Some(ScanoutBinding {
            resource_id: id,
            rect: r,
        });
        Ok(())
    }

    fn resource_flush(&mut self, id: u32, r: Rect) -> Result<(), CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        let img = image_of(o)?;
        rect_inside(&r, &img)?;
        self.stats.flushes += 1;
        if self.display.scanout.is_some_and(|s| s.resource_id == id) {
            self.display.flushes += 1;
        }
        Ok(())
    }

    /// Checks a TRANSFER_TO_HOST_2D; the job copies the rectangle's rows, a slice at a time
    /// (a resource may be as large as VRAM, so one transfer may be gigabytes).
    fn transfer_to_host_2d(&mut self, id: u32, r: Rect, offset: u64) -> Result<Job, CommandError> {
        let o = self.objects.touch(id, self.tick)?;
        let img = image_of(o)?;
        rect_inside(&r, &img)?;
        let Some(backing) = o.backing.as_deref() else {
            return Err(DisplayError::NoBacking(id).into());
        };
        let base = o.vram_offset.unwrap_or_default();
        if r.width == 0 || r.height == 0 {
            let nothing = Work::ToVram {
                extents: Vec::new(),
                vram: base,
            };
            return Ok(Job::new(nothing, 0));
        }
        let stride = u64::from(img.stride);
        let row = u64::from(r.width) * u64::from(format::BYTES_PER_PIXEL);
        let have = backing_len(backing);
        // Last byte read: offset + (height - 1) * stride + row.
        let end = u64::from(r.height - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(row))
            .and_then(|v| v.checked_add(offset));
        match end {
            Some(end) if end <= have => {}
            _ => {
                return Err(DisplayError::OutsideBacking {
                    end: end.unwrap_or(u64::MAX),
                    have,
                }
                .into())
            }
        }
        // Inside the resource, so inside its VRAM allocation.
        let dst = base + u64::from(r.y) * stride + u64::from(r.x) * 4;
        let len = row * u64::from(r.height);
        let work = if row == stride {
            // Whole rows: one contiguous run.
            Work::ToVram {
                extents: BackingMap::new(backing).range(offset, len),
                vram: dst,
            }
        } else {
            Work::Rows {
                extents: backing.to_vec(),
                src: offset,
                vram: dst,
                stride,
                row,
            }
        };
        Ok(Job::new(work, len))
    }

    /// The display state.
    pub fn display(&self) -> &Display {
        &self.display
    }

    /// What the scanout shows now (from the resource's VRAM copy), or `None` if it is off.
    pub fn scanout_image(&self) -> Option<ScanoutImage> {
        let s = self.display.scanout?;
        let o = self.objects.get(s.resource_id).ok()?;
        let img = o.image?;
        let base = o.vram_offset?;
        let [ri, gi, bi] = format::rgb_offsets(img.format)?;
        let (w, h) = (s.rect.width, s.rect.height);
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        let mut line = vec![0u8; w as usize * 4];
        for y in s.rect.y..s.rect.y + h {
            let at = base + u64::from(y) * u64::from(img.stride) + u64::from(s.rect.x) * 4;
            self.vram.read(at, &mut line).ok()?;
            for px in line.chunks_exact(4) {
                rgb.extend_from_slice(&[px[ri], px[gi], px[bi]]);
            }
        }
        Some(ScanoutImage {
            width: w,
            height: h,
            rgb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_ranges_cut_across_runs() {
        let x = |gpa, len| Extent { gpa, len };
        let b = [x(0x1000, 10), x(0x5000, 20), x(0x9000, 4)];
        let m = BackingMap::new(&b);
        assert_eq!(m.range(5, 10), vec![x(0x1005, 5), x(0x5000, 5)]);
        assert_eq!(m.range(12, 3), vec![x(0x5002, 3)]);
        assert_eq!(m.range(0, 10), vec![x(0x1000, 10)]);
        assert_eq!(m.range(10, 20), vec![x(0x5000, 20)]);
        assert_eq!(m.range(29, 5), vec![x(0x5013, 1), x(0x9000, 4)]);
        assert_eq!(m.range(30, 2), vec![x(0x9000, 2)]);
        assert!(m.range(34, 1).is_empty());
        assert_eq!(backing_len(&b), 34);
    }

    #[test]
    fn rectangles_are_checked_without_overflow() {
        let img = ImageInfo {
            format: format::B8G8R8A8_UNORM,
            width: 100,
            height: 50,
            stride: 400,
        };
        let r = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert!(rect_inside(&r(0, 0, 100, 50), &img).is_ok());
        assert!(rect_inside(&r(99, 49, 1, 1), &img).is_ok());
        assert!(rect_inside(&r(1, 0, 100, 50), &img).is_err());
        assert!(rect_inside(&r(u32::MAX, 0, 2, 1), &img).is_err());
        assert!(rect_inside(&r(0, 1, 1, u32::MAX), &img).is_err());
    }

    #[test]
    fn modes_must_fit_an_edid() {
        assert!(DisplayMode::new(1280, 800).is_ok());
        assert!(DisplayMode::new(0, 800).is_err());
        assert!(DisplayMode::new(4096, 800).is_err());
        assert_eq!(DisplayMode::default().width(), 1280);
    }
}
