//! The pvgpu wire protocol: the one definition that the device model and the guest driver share.
//!
//! # Framing
//!
//! pvgpu is a virtio-gpu device (device ID [`VIRTIO_ID_GPU`] = 16) on the virtio-mmio transport
//! (version 2 registers). Its memory-object commands are an extension behind the device feature
//! bit [`VIRTIO_GPU_F_PVGPU_MEM`] (bit 20, inside the device-specific range 0..=23 and not used
//! by virtio-gpu, whose bits are 0..=4). The device offers that bit, `VIRTIO_F_VERSION_1`
//! (bit 32, required: FEATURES_OK is refused without it) and `VIRTIO_RING_F_EVENT_IDX`
//! (bit 29, optional). A driver that did not accept bit 20 gets [`RESP_ERR_NOT_NEGOTIATED`]
//! for every pvgpu command.
//!
//! Every driver, whatever it negotiated, gets the standard virtio-gpu 2D device (virtio 1.2,
//! 5.7): two queues, controlq ([`CONTROLQ`], at most [`CONTROLQ_SIZE_MAX`] entries) and
//! cursorq ([`CURSORQ`], at most [`CURSORQ_SIZE_MAX`]); the config space `events_read`,
//! `events_clear`, `num_scanouts` ([`NUM_SCANOUTS`] = 1) and `num_capsets` (0);
//! [`VIRTIO_GPU_F_EDID`] (bit 1) offered; and the 2D commands (GET_DISPLAY_INFO,
//! RESOURCE_CREATE_2D in every [`format`], RESOURCE_UNREF, SET_SCANOUT, RESOURCE_FLUSH,
//! TRANSFER_TO_HOST_2D, RESOURCE_ATTACH_BACKING, RESOURCE_DETACH_BACKING, GET_EDID) on the
//! controlq, UPDATE_CURSOR and MOVE_CURSOR on the cursorq, answered with virtio-gpu's own
//! response codes. A 2D resource is an object of the same table and id space as the
//! extension's objects (its host copy is VRAM; CLEAN drops its backing).
//!
//! Every request is a descriptor chain: device-readable descriptors holding the request (which
//! may be split over several descriptors), then device-writable descriptors for the response.
//! Every request and response starts with the 24-byte [`CtrlHdr`] (virtio_gpu_ctrl_hdr).
//! VRAM is virtio shared-memory region [`SHM_ID_VRAM`] (1, "host visible", as in virtio-gpu).
//!
//! # Fences
//!
//! Any request may set [`VIRTIO_GPU_FLAG_FENCE`] in `hdr.flags`. The response then carries the
//! same flag, `fence_id`, `ctx_id` and `ring_idx`. pvgpu executes every command to completion
//! before it puts the chain on the used ring, so a used response means its fence has signalled:
//! in particular, when the response to CLEAN is used, the pages are already punched and the
//! guest may reuse them.
//!
//! # Type numbers
//!
//! Commands are `0x0a00..`, successful responses `0x1a00..` and pvgpu errors `0x1a80..`; these
//! avoid virtio-gpu's 0x01xx (2D), 0x02xx (3D), 0x03xx (cursor), 0x11xx (OK responses) and
//! 0x12xx (errors). Where virtio-gpu has a fitting error code it is reused:
//! [`RESP_ERR_UNSPEC`] (0x1200), [`RESP_ERR_OUT_OF_MEMORY`] (0x1201, used for "out of VRAM"),
//! [`RESP_ERR_INVALID_OBJECT_ID`] (0x1203, virtio-gpu's INVALID_RESOURCE_ID) and
//! [`RESP_ERR_INVALID_PARAMETER`] (0x1205).
//!
//! | type | command | request | response |
//! |---|---|---|---|
//! | 0x0a00 | NOP | [`CtrlHdr`] | [`RESP_OK_NODATA`] |
//! | 0x0a01 | GET_INFO | [`CtrlHdr`] | [`RespInfo`] |
//! | 0x0a02 | CREATE | [`ReqCreate`] | [`RESP_OK_NODATA`] |
//! | 0x0a03 | DESTROY | [`ReqObject`] | [`RESP_OK_NODATA`] |
//! | 0x0a04 | ATTACH_BACKING | [`ReqBacking`] + `nr_entries` × [`MemEntry`] | [`RESP_OK_NODATA`] |
//! | 0x0a05 | MIGRATE | [`ReqObject`] | [`RespMigrate`] |
//! | 0x0a06 | CLEAN | [`ReqObject`] | [`RESP_OK_NODATA`] |
//! | 0x0a07 | EVICT | [`ReqBacking`] + `nr_entries` × [`MemEntry`] | [`RESP_OK_NODATA`] |
//! | 0x0a08 | FILL | [`ReqFill`] | [`RESP_OK_NODATA`] |
//! | 0x0a09 | COPY | [`ReqCopy`] | [`RESP_OK_NODATA`] |
//! | 0x0a0a | CHECKSUM | [`ReqRange`] | [`RespChecksum`] |
//! | 0x0a0b | STATS | [`CtrlHdr`] | [`RespStats`] |
//! | 0x0a0c | MIGRATE_CLEAN | [`ReqObject`] | [`RespMigrate`] |
//! | 0x0a0d | READ | [`ReqTransfer`] + `nr_entries` × [`MemEntry`] | [`RESP_OK_NODATA`] |
//! | 0x0a0e | WRITE | [`ReqTransfer`] + `nr_entries` × [`MemEntry`] | [`RESP_OK_NODATA`] |
//!
//! An error response is a bare [`CtrlHdr`] whose type is one of the `RESP_ERR_*` codes. Bytes
//! of a request past its fixed part (and past its entries) are ignored. A request whose
//! response buffers are smaller than its successful response ([`response_size`]) is not run:
//! nothing is written (used length 0), and it counts as a failed command.
//!
//! # Objects and their life cycle
//!
//! Objects are named by the guest: a non-zero `u32` id, unique among live objects (as
//! virtio-gpu resource ids are). Sizes are whole pages ([`PAGE_SIZE`]).
//!
//! - CREATE: a new object of `size` bytes, placement SYSTEM, no backing yet. `flags` must be 0.
//! - ATTACH_BACKING: gives a SYSTEM object without backing its guest pages. Every entry must
//!   be page-aligned in address and length, non-empty, inside guest RAM, and the lengths must
//!   add up to exactly the object size. Entries are used in order.
//! - MIGRATE: SYSTEM (with backing) → VRAM. Allocates VRAM and copies the guest pages in. The
//!   guest pages are kept and still hold a copy.
//! - CLEAN: VRAM → CLEANED. The device punches the object's guest pages out of the host (they
//!   read as zero afterwards, and must not be touched by the guest until reused) and forgets
//!   them. The data now lives only in VRAM.
//! - MIGRATE_CLEAN: SYSTEM (with backing) → CLEANED in one step, MIGRATE and CLEAN fused.
//!   Where the host can (anonymous private guest RAM and VRAM, Linux 6.8+), the device *moves*
//!   the guest pages into the object's VRAM range (userfaultfd's UFFDIO_MOVE) instead of
//!   copying them, so the host never holds two copies; otherwise it copies and punches. The
//!   guest's rules are CLEAN's: unmap the pages first, wait for the response, then reuse the
//!   pages (they read as zero). The response is [`RespMigrate`], as for MIGRATE.
//! - EVICT: VRAM or CLEANED → SYSTEM. Copies VRAM into guest pages, then frees (and punches)
//!   the VRAM (where the host can, a new page list gets the VRAM pages moved in rather than
//!   copied; the result is the same). For a CLEANED object the request must carry a full page list (as for
//!   ATTACH_BACKING), which becomes the new backing. For a VRAM object `nr_entries` may be 0,
//!   meaning "copy back into the current backing", or carry a new list that replaces it.
//! - FILL, COPY: change VRAM data of VRAM or CLEANED objects (`offset + length` within the
//!   object; `value` of FILL is a byte, 0..=255). COPY may name the same object twice; it
//!   behaves like memmove. After FILL/COPY the VRAM copy is the authoritative one; a later
//!   EVICT writes it back to the guest pages.
//! - CHECKSUM: crc32c (Castagnoli, as [`crate::crc32c`]) of a range of the object's data,
//!   wherever it lives (guest pages for SYSTEM, VRAM otherwise).
//! - READ, WRITE: copy between a VRAM or CLEANED object's VRAM data at `offset` and the
//!   guest pages of the entries (READ: VRAM → pages, WRITE: pages → VRAM), for guests that
//!   cannot map VRAM (Linux under User-Mode Linux: `virtio_uml` has no shared-memory
//!   regions). `offset` and every entry are page-aligned; the entries must be guest RAM, and
//!   `offset` plus their total length must lie within the object. The pages are only the
//!   transfer's buffer: they are not attached to the object, and the placement does not
//!   change. After WRITE the VRAM copy is the authoritative one, as after FILL.
//! - DESTROY: any object; frees its VRAM. Its guest pages go back to the guest untouched.
//!
//! Any other transition (CLEAN of a SYSTEM object, EVICT of a SYSTEM object, MIGRATE twice,
//! any use of an unknown or destroyed id...) gets [`RESP_ERR_INVALID_STATE`] or
//! [`RESP_ERR_INVALID_OBJECT_ID`] and changes nothing. A device reset destroys all objects.
//!
//! # Encoding
//!
//! All structs are `#[repr(C)]`, made of little-endian integers, with explicit padding that
//! must be zero on send and is ignored on receive. Their sizes and offsets are pinned by tests.

#[cfg(target_endian = "big")]
compile_error!("the pvgpu protocol structs are little-endian in memory");

/// virtio device ID of a GPU.
pub const VIRTIO_ID_GPU: u32 = 16;
/// Our virtio-mmio vendor ID ("PVGP" read as a little-endian u32).
pub const PVGPU_VENDOR_ID: u32 = u32::from_le_bytes(*b"PVGP");

/// virtio feature: the device complies with virtio 1.x.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// virtio feature: used_event / avail_event ring fields.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
/// Device feature bit of the pvgpu memory-object extension (device-specific range).
pub const VIRTIO_GPU_F_PVGPU_MEM: u32 = 20;

/// Index of the control queue.
pub const CONTROLQ: u16 = 0;
/// Largest control queue the device accepts (QueueNumMax).
pub const CONTROLQ_SIZE_MAX: u16 = 1024;
/// Shared-memory region id of VRAM (virtio-gpu's VIRTIO_GPU_SHM_ID_HOST_VISIBLE).
pub const SHM_ID_VRAM: u8 = 1;

/// Version of this protocol, reported by GET_INFO.
pub const PROTOCOL_VERSION: u32 = 1;
/// Page size for backing and object sizes (the guest's page size, from [`crate::layout`]).
pub use crate::layout::PAGE_SIZE;

/// Where an object's data lives: the life cycle SYSTEM → VRAM → CLEANED (and EVICT back to
/// SYSTEM). The device's object table and the guest's object API both use this one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In guest pages only (or nowhere yet, before ATTACH_BACKING). No VRAM.
    System,
    /// In VRAM, and the guest pages still hold a copy.
    Vram,
    /// Only in VRAM; the guest unmapped its pages and the host dropped them (a virtio-gpu 2D
    /// resource without a backing is CLEANED too: its host copy is VRAM).
    Cleaned,
}
/// Most entries in one ATTACH_BACKING, EVICT, READ or WRITE request.
pub const MAX_SG_ENTRIES: u32 = 65536;
/// Most live objects.
pub const MAX_OBJECTS: u32 = 1 << 18;
/// Longest request the device reads, in bytes (the largest READ or WRITE request, whose
/// fixed part is the longest of the requests with entries).
pub const MAX_REQUEST_BYTES: usize = core::mem::size_of::<ReqTransfer>()
    + MAX_SG_ENTRIES as usize * core::mem::size_of::<MemEntry>();

/// hdr.flags: the request carries a fence (`fence_id`).
pub const VIRTIO_GPU_FLAG_FENCE: u32 = 1 << 0;
/// hdr.flags: `ring_idx` is valid (virtio-gpu context rings; echoed, otherwise unused).
pub const VIRTIO_GPU_FLAG_INFO_RING_IDX: u32 = 1 << 1;

/// Command: do nothing (measures per-command overhead, or carries a fence).
pub const CMD_NOP: u32 = 0x0a00;
/// Command: device limits and features.
pub const CMD_GET_INFO: u32 = 0x0a01;
/// Command: create an object.
pub const CMD_CREATE: u32 = 0x0a02;
/// Command: destroy an object.
pub const CMD_DESTROY: u32 = 0x0a03;
/// Command: give an object its guest pages.
pub const CMD_ATTACH_BACKING: u32 = 0x0a04;
/// Command: copy an object's guest pages to VRAM.
pub const CMD_MIGRATE: u32 = 0x0a05;
/// Command: punch an object's guest pages; the data stays in VRAM only.
pub const CMD_CLEAN: u32 = 0x0a06;
/// Command: copy an object from VRAM to guest pages and free the VRAM.
pub const CMD_EVICT: u32 = 0x0a07;
/// Command: fill a range of an object's VRAM with a byte.
pub const CMD_FILL: u32 = 0x0a08;
/// Command: copy a range of VRAM between objects.
pub const CMD_COPY: u32 = 0x0a09;
/// Command: crc32c of a range of an object.
pub const CMD_CHECKSUM: u32 = 0x0a0a;
/// Command: device counters.
pub const CMD_STATS: u32 = 0x0a0b;
/// Command: MIGRATE and CLEAN in one step; the guest pages move into VRAM where the host can.
pub const CMD_MIGRATE_CLEAN: u32 = 0x0a0c;
/// Command: copy a range of an object's VRAM into guest pages.
pub const CMD_READ: u32 = 0x0a0d;
/// Command: copy guest pages into a range of an object's VRAM.
pub const CMD_WRITE: u32 = 0x0a0e;

/// Response: success, no data.
pub const RESP_OK_NODATA: u32 = 0x1a00;
/// Response: [`RespInfo`].
pub const RESP_OK_INFO: u32 = 0x1a01;
/// Response: [`RespChecksum`].
pub const RESP_OK_CHECKSUM: u32 = 0x1a02;
/// Response: [`RespStats`].
pub const RESP_OK_STATS: u32 = 0x1a03;
/// Response: [`RespMigrate`].
pub const RESP_OK_MIGRATE: u32 = 0x1a04;

/// Error (virtio-gpu's): unspecified; also a host I/O failure.
pub const RESP_ERR_UNSPEC: u32 = 0x1200;
/// Error (virtio-gpu's): out of memory; for pvgpu, not enough free VRAM.
pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
/// Error (virtio-gpu's INVALID_RESOURCE_ID): no live object has this id (or id 0).
pub const RESP_ERR_INVALID_OBJECT_ID: u32 = 0x1203;
/// Error (virtio-gpu's): a field is out of range (size, flags, fill value, counts).
pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;
/// Error: the command is not allowed in the object's placement (e.g. CLEAN of SYSTEM).
pub const RESP_ERR_INVALID_STATE: u32 = 0x1a80;
/// Error: the type number is not a known command.
pub const RESP_ERR_UNKNOWN_COMMAND: u32 = 0x1a81;
/// Error: the request is shorter than its command needs (or longer than the device reads).
pub const RESP_ERR_BAD_REQUEST: u32 = 0x1a82;
/// Error: a scatter-gather entry is unaligned, empty, overflowing or not guest RAM, or the
/// entries do not add up to the object size.
pub const RESP_ERR_BAD_BACKING: u32 = 0x1a83;
/// Error: an object with this id already exists.
pub const RESP_ERR_OBJECT_EXISTS: u32 = 0x1a84;
/// Error: [`MAX_OBJECTS`] objects are live.
pub const RESP_ERR_TOO_MANY_OBJECTS: u32 = 0x1a85;
/// Error: offset + length is outside the object.
pub const RESP_ERR_OUT_OF_RANGE: u32 = 0x1a86;
/// Error: the driver did not negotiate [`VIRTIO_GPU_F_PVGPU_MEM`].
pub const RESP_ERR_NOT_NEGOTIATED: u32 = 0x1a87;

/// Whether a response type is an error.
pub const fn is_error(resp_type: u32) -> bool {
    resp_type == RESP_ERR_UNSPEC
        || resp_type == RESP_ERR_OUT_OF_MEMORY
        || resp_type == RESP_ERR_INVALID_SCANOUT_ID
        || resp_type == RESP_ERR_INVALID_CONTEXT_ID
        || resp_type == RESP_ERR_INVALID_OBJECT_ID
        || resp_type == RESP_ERR_INVALID_PARAMETER
        || (resp_type >= 0x1a80 && resp_type <= 0x1aff)
}

/// Bytes of the successful response to command `cmd` (error responses are a bare
/// [`CtrlHdr`], which is never longer). The device does not run a command whose response
/// buffers are smaller: its effect must never go unreported.
pub const fn response_size(cmd: u32) -> usize {
    match cmd {
        CMD_GET_INFO => core::mem::size_of::<RespInfo>(),
        CMD_STATS => core::mem::size_of::<RespStats>(),
        CMD_CHECKSUM => core::mem::size_of::<RespChecksum>(),
        CMD_MIGRATE | CMD_MIGRATE_CLEAN => core::mem::size_of::<RespMigrate>(),
        CMD_GET_DISPLAY_INFO => core::mem::size_of::<RespDisplayInfo>(),
        CMD_GET_EDID => core::mem::size_of::<RespEdid>(),
        _ => core::mem::size_of::<CtrlHdr>(),
    }
}

/// The name of a command type, for logs and statistics.
pub const fn command_name(cmd: u32) -> &'static str {
    match cmd {
        CMD_NOP => "nop",
        CMD_GET_INFO => "get_info",
        CMD_CREATE => "create",
        CMD_DESTROY => "destroy",
        CMD_ATTACH_BACKING => "attach_backing",
        CMD_MIGRATE => "migrate",
        CMD_CLEAN => "clean",
        CMD_EVICT => "evict",
        CMD_FILL => "fill",
        CMD_COPY => "copy",
        CMD_CHECKSUM => "checksum",
        CMD_STATS => "stats",
        CMD_MIGRATE_CLEAN => "migrate_clean",
        CMD_GET_DISPLAY_INFO => "get_display_info",
        CMD_RESOURCE_CREATE_2D => "resource_create_2d",
        CMD_RESOURCE_UNREF => "resource_unref",
        CMD_SET_SCANOUT => "set_scanout",
        CMD_RESOURCE_FLUSH => "resource_flush",
        CMD_TRANSFER_TO_HOST_2D => "transfer_to_host_2d",
        CMD_RESOURCE_ATTACH_BACKING => "resource_attach_backing",
        CMD_RESOURCE_DETACH_BACKING => "resource_detach_backing",
        CMD_GET_CAPSET_INFO => "get_capset_info",
        CMD_GET_CAPSET => "get_capset",
        CMD_GET_EDID => "get_edid",
        CMD_UPDATE_CURSOR => "update_cursor",
        CMD_MOVE_CURSOR => "move_cursor",
        CMD_READ => "read",
        CMD_WRITE => "write",
        _ => "unknown",
    }
}

/// The name of a response type, for logs and test reports.
pub const fn response_name(resp: u32) -> &'static str {
    match resp {
        RESP_OK_NODATA => "OK_NODATA",
        RESP_OK_INFO => "OK_INFO",
        RESP_OK_CHECKSUM => "OK_CHECKSUM",
        RESP_OK_STATS => "OK_STATS",
        RESP_OK_MIGRATE => "OK_MIGRATE",
        RESP_ERR_UNSPEC => "ERR_UNSPEC",
        RESP_ERR_OUT_OF_MEMORY => "ERR_OUT_OF_MEMORY",
        RESP_ERR_INVALID_OBJECT_ID => "ERR_INVALID_OBJECT_ID",
        RESP_ERR_INVALID_PARAMETER => "ERR_INVALID_PARAMETER",
        RESP_ERR_INVALID_STATE => "ERR_INVALID_STATE",
        RESP_ERR_UNKNOWN_COMMAND => "ERR_UNKNOWN_COMMAND",
        RESP_ERR_BAD_REQUEST => "ERR_BAD_REQUEST",
        RESP_ERR_BAD_BACKING => "ERR_BAD_BACKING",
        RESP_ERR_OBJECT_EXISTS => "ERR_OBJECT_EXISTS",
        RESP_ERR_TOO_MANY_OBJECTS => "ERR_TOO_MANY_OBJECTS",
        RESP_ERR_OUT_OF_RANGE => "ERR_OUT_OF_RANGE",
        RESP_ERR_NOT_NEGOTIATED => "ERR_NOT_NEGOTIATED",
        RESP_OK_NODATA_2D => "OK_NODATA (virtio-gpu)",
        RESP_OK_DISPLAY_INFO => "OK_DISPLAY_INFO",
        RESP_OK_EDID => "OK_EDID",
        RESP_ERR_INVALID_SCANOUT_ID => "ERR_INVALID_SCANOUT_ID",
        RESP_ERR_INVALID_CONTEXT_ID => "ERR_INVALID_CONTEXT_ID",
        _ => "unknown",
    }
}

/// virtio_gpu_ctrl_hdr: starts every request and response (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHdr {
    /// Command or response type.
    pub type_: u32,
    /// `VIRTIO_GPU_FLAG_*`.
    pub flags: u32,
    /// Fence id, valid with [`VIRTIO_GPU_FLAG_FENCE`].
    pub fence_id: u64,
    /// virtio-gpu context id (echoed).
    pub ctx_id: u32,
    /// Context ring index (echoed).
    pub ring_idx: u8,
    /// Zero.
    pub padding: [u8; 3],
}

impl CtrlHdr {
    /// A request header of the given type, without fence.
    pub const fn new(type_: u32) -> Self {
        CtrlHdr {
            type_,
            flags: 0,
            fence_id: 0,
            ctx_id: 0,
            ring_idx: 0,
            padding: [0; 3],
        }
    }

    /// A request header of the given type carrying fence `fence_id`.
    pub const fn fenced(type_: u32, fence_id: u64) -> Self {
        CtrlHdr {
            type_,
            flags: VIRTIO_GPU_FLAG_FENCE,
            fence_id,
            ctx_id: 0,
            ring_idx: 0,
            padding: [0; 3],
        }
    }

    /// The response header for this request: `type_`, with fence and context echoed.
    pub const fn response(&self, type_: u32) -> Self {
        let flags = self.flags & (VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
        let fenced = flags & VIRTIO_GPU_FLAG_FENCE != 0;
        CtrlHdr {
            type_,
            flags,
            fence_id: if fenced { self.fence_id } else { 0 },
            ctx_id: self.ctx_id,
            ring_idx: self.ring_idx,
            padding: [0; 3],
        }
    }
}

/// One scatter-gather entry (virtio_gpu_mem_entry): guest pages `[addr, addr + length)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemEntry {
    /// Guest-physical address, page-aligned.
    pub addr: u64,
    /// Length in bytes, a non-zero multiple of the page size.
    pub length: u32,
    /// Zero.
    pub padding: u32,
}

/// CREATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqCreate {
    /// type_ = [`CMD_CREATE`].
    pub hdr: CtrlHdr,
    /// The new object's id (non-zero, unused).
    pub object_id: u32,
    /// Must be 0.
    pub flags: u32,
    /// Size in bytes: a non-zero multiple of [`PAGE_SIZE`], at most `max_object_size`.
    pub size: u64,
}

/// DESTROY, MIGRATE, CLEAN: a request naming one object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqObject {
    /// The command.
    pub hdr: CtrlHdr,
    /// The object.
    pub object_id: u32,
    /// Zero.
    pub padding: u32,
}

/// ATTACH_BACKING and EVICT: followed by `nr_entries` [`MemEntry`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqBacking {
    /// The command.
    pub hdr: CtrlHdr,
    /// The object.
    pub object_id: u32,
    /// Number of entries that follow (at most [`MAX_SG_ENTRIES`]).
    pub nr_entries: u32,
}

/// READ and WRITE: followed by `nr_entries` [`MemEntry`]s, the guest pages to copy to or
/// from; their total length is the number of bytes transferred.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqTransfer {
    /// [`CMD_READ`] or [`CMD_WRITE`].
    pub hdr: CtrlHdr,
    /// The object (VRAM or CLEANED).
    pub object_id: u32,
    /// Number of entries that follow (at most [`MAX_SG_ENTRIES`]).
    pub nr_entries: u32,
    /// Offset in the object, page-aligned.
    pub offset: u64,
}

/// FILL: set `length` bytes at `offset` of the object's VRAM to `value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqFill {
    /// type_ = [`CMD_FILL`].
    pub hdr: CtrlHdr,
    /// The object (VRAM or CLEANED).
    pub object_id: u32,
    /// The byte value, 0..=255.
    pub value: u32,
    /// Offset in the object.
    pub offset: u64,
    /// Bytes to fill.
    pub length: u64,
}

/// COPY: `length` bytes from `src_id` at `src_offset` to `dst_id` at `dst_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqCopy {
    /// type_ = [`CMD_COPY`].
    pub hdr: CtrlHdr,
    /// Destination object (VRAM or CLEANED).
    pub dst_id: u32,
    /// Source object (VRAM or CLEANED); may equal `dst_id`.
    pub src_id: u32,
    /// Offset in the destination.
    pub dst_offset: u64,
    /// Offset in the source.
    pub src_offset: u64,
    /// Bytes to copy.
    pub length: u64,
}

/// CHECKSUM: a range of one object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqRange {
    /// type_ = [`CMD_CHECKSUM`].
    pub hdr: CtrlHdr,
    /// The object.
    pub object_id: u32,
    /// Zero.
    pub padding: u32,
    /// Offset in the object.
    pub offset: u64,
    /// Length in bytes (0 gives the crc of nothing, 0).
    pub length: u64,
}

/// Response to GET_INFO.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespInfo {
    /// type_ = [`RESP_OK_INFO`].
    pub hdr: CtrlHdr,
    /// [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// VRAM size in bytes (= shared-memory region 1 length).
    pub vram_size: u64,
    /// Largest object.
    pub max_object_size: u64,
    /// Most live objects.
    pub max_objects: u32,
    /// Most entries per backing request.
    pub max_sg_entries: u32,
    /// Page size of backing and sizes.
    pub page_size: u32,
    /// Zero.
    pub padding: u32,
}

/// Response to CHECKSUM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespChecksum {
    /// type_ = [`RESP_OK_CHECKSUM`].
    pub hdr: CtrlHdr,
    /// crc32c of the range.
    pub crc32c: u32,
    /// Zero.
    pub padding: u32,
}

/// Response to STATS: the device counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespStats {
    /// type_ = [`RESP_OK_STATS`].
    pub hdr: CtrlHdr,
    /// Live objects.
    pub objects_live: u64,
    /// Most live objects at once.
    pub objects_peak: u64,
    /// Bytes copied guest → VRAM by MIGRATE.
    pub bytes_migrated: u64,
    /// Guest bytes punched by CLEAN.
    pub bytes_cleaned: u64,
    /// Bytes copied VRAM → guest by EVICT.
    pub bytes_evicted: u64,
    /// VRAM bytes allocated to objects.
    pub vram_used: u64,
    /// Most VRAM bytes allocated at once.
    pub vram_peak: u64,
    /// VRAM size.
    pub vram_size: u64,
    /// Commands handled (including failed ones).
    pub commands: u64,
    /// Commands that got an error response.
    pub errors: u64,
}

/// Response to MIGRATE: where the object now lives in VRAM, so the guest can reach its data
/// through the VRAM window (shared-memory region 1) at `vram_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespMigrate {
    /// type_ = [`RESP_OK_MIGRATE`].
    pub hdr: CtrlHdr,
    /// Offset of the object's data from the start of VRAM.
    pub vram_offset: u64,
}

/// Plain wire structs: viewable as bytes and readable from (unaligned) bytes.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` structs made of integers and integer arrays, with no
/// implicit padding, for which every bit pattern is valid (the layout tests pin this).
pub unsafe trait Wire: Copy + Default {
    /// The struct's bytes, as sent.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: by the trait's contract Self has no padding, so all size_of bytes are
        // initialised; the slice borrows self so it cannot outlive it.
        unsafe {
            core::slice::from_raw_parts(
                self as *const Self as *const u8,
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// Reads the struct from the start of `bytes`, or `None` if they are too few.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: there are at least size_of::<Self>() readable bytes; read_unaligned has no
        // alignment requirement, and every bit pattern is a valid Self by the trait's contract.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const Self) })
    }
}

macro_rules! wire_structs {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: each listed type is #[repr(C)], integers only, no implicit padding
            // (sizes pinned in the tests below).
            unsafe impl Wire for $t {}
        )*
        crate::impl_byte_valued!($($t),*);
    };
}

wire_structs!(
    CtrlHdr,
    MemEntry,
    ReqCreate,
    ReqObject,
    ReqBacking,
    ReqTransfer,
    ReqFill,
    ReqCopy,
    ReqRange,
    RespInfo,
    RespChecksum,
    RespStats,
    RespMigrate,
);

// ---------------------------------------------------------------------------------------------
// The standard virtio-gpu 2D command set (virtio 1.2, 5.7.6), served to every driver.
// ---------------------------------------------------------------------------------------------

/// virtio-gpu feature: the device answers GET_EDID.
pub const VIRTIO_GPU_F_EDID: u32 = 1;
/// Index of the cursor queue.
pub const CURSORQ: u16 = 1;
/// Largest cursor queue the device accepts (QueueNumMax of queue 1).
pub const CURSORQ_SIZE_MAX: u16 = 64;
/// Most scanouts a virtio-gpu device may have (the size of GET_DISPLAY_INFO's table).
pub const VIRTIO_GPU_MAX_SCANOUTS: usize = 16;
/// Scanouts of this device.
pub const NUM_SCANOUTS: u32 = 1;
/// Capability sets of this device (no 3D).
pub const NUM_CAPSETS: u32 = 0;
/// Width and height of a cursor image (virtio-gpu's cursors are 64x64).
pub const CURSOR_SIZE: u32 = 64;
/// Bytes of an EDID blob in [`RespEdid`].
pub const EDID_BLOB_SIZE: usize = 1024;

/// 2D command: the scanouts and their modes ([`RespDisplayInfo`]).
pub const CMD_GET_DISPLAY_INFO: u32 = 0x0100;
/// 2D command: create a resource ([`ReqResourceCreate2d`]).
pub const CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
/// 2D command: destroy a resource ([`ReqResource`]).
pub const CMD_RESOURCE_UNREF: u32 = 0x0102;
/// 2D command: show a resource on a scanout ([`ReqSetScanout`]).
pub const CMD_SET_SCANOUT: u32 = 0x0103;
/// 2D command: a rectangle of a resource changed on screen ([`ReqResourceFlush`]).
pub const CMD_RESOURCE_FLUSH: u32 = 0x0104;
/// 2D command: copy a rectangle from the guest backing to the host copy ([`ReqTransferToHost2d`]).
pub const CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
/// 2D command: give a resource guest memory ([`ReqBacking`] + entries, byte-granular).
pub const CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
/// 2D command: take a resource's guest memory away ([`ReqResource`]).
pub const CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
/// 3D capability query (not supported: `num_capsets` is 0).
pub const CMD_GET_CAPSET_INFO: u32 = 0x0108;
/// 3D capability query (not supported).
pub const CMD_GET_CAPSET: u32 = 0x0109;
/// 2D command: the EDID of a scanout ([`ReqGetEdid`] → [`RespEdid`]).
pub const CMD_GET_EDID: u32 = 0x010a;
/// Cursor queue: set the cursor image and position ([`ReqUpdateCursor`]).
pub const CMD_UPDATE_CURSOR: u32 = 0x0300;
/// Cursor queue: move the cursor ([`ReqUpdateCursor`]; only the position counts).
pub const CMD_MOVE_CURSOR: u32 = 0x0301;

/// virtio-gpu response: success, no data.
pub const RESP_OK_NODATA_2D: u32 = 0x1100;
/// virtio-gpu response: [`RespDisplayInfo`].
pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
/// virtio-gpu response: [`RespEdid`].
pub const RESP_OK_EDID: u32 = 0x1104;
/// virtio-gpu error: the scanout id is out of range.
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
/// virtio-gpu error: no resource has this id (or it is 0, or is not a 2D resource).
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = RESP_ERR_INVALID_OBJECT_ID;
/// virtio-gpu error: bad 3D context id (never sent: no 3D).
pub const RESP_ERR_INVALID_CONTEXT_ID: u32 = 0x1204;

/// Whether `cmd` is one of virtio-gpu's command types (2D, 3D or cursor), which every driver
/// may send, as opposed to the pvgpu extension's.
pub const fn is_virtio_gpu_command(cmd: u32) -> bool {
    matches!(cmd >> 8, 0x01..=0x03)
}

/// Pixel formats of RESOURCE_CREATE_2D (virtio_gpu_formats): every one the spec lists. The
/// name gives the byte order in memory (B8G8R8A8: byte 0 is blue).
pub mod format {
    /// Bytes 0..4 = B, G, R, A.
    pub const B8G8R8A8_UNORM: u32 = 1;
    /// Bytes 0..4 = B, G, R, X.
    pub const B8G8R8X8_UNORM: u32 = 2;
    /// Bytes 0..4 = A, R, G, B.
    pub const A8R8G8B8_UNORM: u32 = 3;
    /// Bytes 0..4 = X, R, G, B.
    pub const X8R8G8B8_UNORM: u32 = 4;
    /// Bytes 0..4 = R, G, B, A.
    pub const R8G8B8A8_UNORM: u32 = 67;
    /// Bytes 0..4 = X, B, G, R.
    pub const X8B8G8R8_UNORM: u32 = 68;
    /// Bytes 0..4 = A, B, G, R.
    pub const A8B8G8R8_UNORM: u32 = 121;
    /// Bytes 0..4 = R, G, B, X.
    pub const R8G8B8X8_UNORM: u32 = 134;

    /// Every format, in spec order.
    pub const ALL: [u32; 8] = [
        B8G8R8A8_UNORM,
        B8G8R8X8_UNORM,
        A8R8G8B8_UNORM,
        X8R8G8B8_UNORM,
        R8G8B8A8_UNORM,
        X8B8G8R8_UNORM,
        A8B8G8R8_UNORM,
        R8G8B8X8_UNORM,
    ];

    /// Bytes per pixel of every format.
    pub const BYTES_PER_PIXEL: u32 = 4;

    /// Byte offsets of red, green and blue within a pixel of `format`, or `None` for a
    /// format the spec does not list.
    pub const fn rgb_offsets(format: u32) -> Option<[usize; 3]> {
        match format {
            B8G8R8A8_UNORM | B8G8R8X8_UNORM => Some([2, 1, 0]),
            A8R8G8B8_UNORM | X8R8G8B8_UNORM => Some([1, 2, 3]),
            R8G8B8A8_UNORM | R8G8B8X8_UNORM => Some([0, 1, 2]),
            X8B8G8R8_UNORM | A8B8G8R8_UNORM => Some([3, 2, 1]),
            _ => None,
        }
    }
}

/// virtio_gpu_rect.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// One scanout in [`RespDisplayInfo`] (virtio_gpu_display_one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayOne {
    /// The mode: `(0, 0, width, height)`.
    pub r: Rect,
    /// 1 if the scanout is connected.
    pub enabled: u32,
    /// Zero.
    pub flags: u32,
}

/// Response to GET_DISPLAY_INFO (virtio_gpu_resp_display_info).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespDisplayInfo {
    /// type_ = [`RESP_OK_DISPLAY_INFO`].
    pub hdr: CtrlHdr,
    /// One entry per possible scanout; those past `num_scanouts` are zero.
    pub pmodes: [DisplayOne; VIRTIO_GPU_MAX_SCANOUTS],
}

/// RESOURCE_CREATE_2D (virtio_gpu_resource_create_2d).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqResourceCreate2d {
    /// type_ = [`CMD_RESOURCE_CREATE_2D`].
    pub hdr: CtrlHdr,
    /// The new resource's id (non-zero, unused; one id space with pvgpu objects).
    pub resource_id: u32,
    /// One of [`format::ALL`].
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// RESOURCE_UNREF and RESOURCE_DETACH_BACKING (virtio_gpu_resource_unref /
/// virtio_gpu_resource_detach_backing).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqResource {
    /// The command.
    pub hdr: CtrlHdr,
    /// The resource.
    pub resource_id: u32,
    /// Zero.
    pub padding: u32,
}

/// SET_SCANOUT (virtio_gpu_set_scanout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqSetScanout {
    /// type_ = [`CMD_SET_SCANOUT`].
    pub hdr: CtrlHdr,
    /// The part of the resource to show.
    pub r: Rect,
    /// The scanout (< [`NUM_SCANOUTS`]).
    pub scanout_id: u32,
    /// The resource; 0 turns the scanout off.
    pub resource_id: u32,
}

/// RESOURCE_FLUSH (virtio_gpu_resource_flush).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqResourceFlush {
    /// type_ = [`CMD_RESOURCE_FLUSH`].
    pub hdr: CtrlHdr,
    /// The changed rectangle.
    pub r: Rect,
    /// The resource.
    pub resource_id: u32,
    /// Zero.
    pub padding: u32,
}

/// TRANSFER_TO_HOST_2D (virtio_gpu_transfer_to_host_2d).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqTransferToHost2d {
    /// type_ = [`CMD_TRANSFER_TO_HOST_2D`].
    pub hdr: CtrlHdr,
    /// The rectangle of the resource to update.
    pub r: Rect,
    /// Offset in the backing of the rectangle's first pixel; row `i` starts at
    /// `offset + i * stride` (stride = width × 4).
    pub offset: u64,
    /// The resource.
    pub resource_id: u32,
    /// Zero.
    pub padding: u32,
}

/// GET_EDID (virtio_gpu_cmd_get_edid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqGetEdid {
    /// type_ = [`CMD_GET_EDID`].
    pub hdr: CtrlHdr,
    /// The scanout.
    pub scanout: u32,
    /// Zero.
    pub padding: u32,
}

/// Response to GET_EDID (virtio_gpu_resp_edid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespEdid {
    /// type_ = [`RESP_OK_EDID`].
    pub hdr: CtrlHdr,
    /// Bytes of `edid` in use (128: one base block).
    pub size: u32,
    /// Zero.
    pub padding: u32,
    /// The EDID blob.
    pub edid: [u8; EDID_BLOB_SIZE],
}

impl Default for RespEdid {
    fn default() -> Self {
        RespEdid {
            hdr: CtrlHdr::default(),
            size: 0,
            padding: 0,
            edid: [0; EDID_BLOB_SIZE],
        }
    }
}

/// Cursor position (virtio_gpu_cursor_pos).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorPos {
    /// The scanout.
    pub scanout_id: u32,
    /// X.
    pub x: u32,
    /// Y.
    pub y: u32,
    /// Zero.
    pub padding: u32,
}

/// UPDATE_CURSOR and MOVE_CURSOR (virtio_gpu_update_cursor), on the cursor queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReqUpdateCursor {
    /// The command.
    pub hdr: CtrlHdr,
    /// Where.
    pub pos: CursorPos,
    /// The cursor image (a 64x64 2D resource); 0 hides the cursor (UPDATE_CURSOR).
    pub resource_id: u32,
    /// Hot spot x.
    pub hot_x: u32,
    /// Hot spot y.
    pub hot_y: u32,
    /// Zero.
    pub padding: u32,
}

wire_structs!(
    Rect,
    DisplayOne,
    RespDisplayInfo,
    ReqResourceCreate2d,
    ReqResource,
    ReqSetScanout,
    ReqResourceFlush,
    ReqTransferToHost2d,
    ReqGetEdid,
    RespEdid,
    CursorPos,
    ReqUpdateCursor,
);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn sizes_are_pinned() {
        assert_eq!(size_of::<CtrlHdr>(), 24);
        assert_eq!(size_of::<MemEntry>(), 16);
        assert_eq!(size_of::<ReqCreate>(), 40);
        assert_eq!(size_of::<ReqObject>(), 32);
        assert_eq!(size_of::<ReqBacking>(), 32);
        assert_eq!(size_of::<ReqFill>(), 48);
        assert_eq!(size_of::<ReqCopy>(), 56);
        assert_eq!(size_of::<ReqRange>(), 48);
        assert_eq!(size_of::<RespInfo>(), 64);
        assert_eq!(size_of::<RespChecksum>(), 32);
        assert_eq!(size_of::<RespStats>(), 104);
        assert_eq!(size_of::<ReqTransfer>(), 40);
        assert_eq!(MAX_REQUEST_BYTES, 40 + 16 * 65536);
        // virtio-gpu's 2D structs, as the spec (and Linux's virtio_gpu.h) lay them out.
        assert_eq!(size_of::<Rect>(), 16);
        assert_eq!(size_of::<DisplayOne>(), 24);
        assert_eq!(size_of::<RespDisplayInfo>(), 24 + 16 * 24);
        assert_eq!(size_of::<ReqResourceCreate2d>(), 40);
        assert_eq!(size_of::<ReqResource>(), 32);
        assert_eq!(size_of::<ReqSetScanout>(), 48);
        assert_eq!(size_of::<ReqResourceFlush>(), 48);
        assert_eq!(size_of::<ReqTransferToHost2d>(), 56);
        assert_eq!(size_of::<ReqGetEdid>(), 32);
        assert_eq!(size_of::<RespEdid>(), 24 + 8 + 1024);
        assert_eq!(size_of::<CursorPos>(), 16);
        assert_eq!(size_of::<ReqUpdateCursor>(), 56);
        assert_eq!(offset_of!(ReqSetScanout, scanout_id), 40);
        assert_eq!(offset_of!(ReqTransferToHost2d, offset), 40);
        assert_eq!(offset_of!(ReqTransferToHost2d, resource_id), 48);
        assert_eq!(offset_of!(ReqUpdateCursor, resource_id), 40);
        assert_eq!(offset_of!(RespEdid, edid), 32);
    }

    #[test]
    fn offsets_are_pinned() {
        assert_eq!(offset_of!(CtrlHdr, type_), 0);
        assert_eq!(offset_of!(CtrlHdr, flags), 4);
        assert_eq!(offset_of!(CtrlHdr, fence_id), 8);
        assert_eq!(offset_of!(CtrlHdr, ctx_id), 16);
        assert_eq!(offset_of!(CtrlHdr, ring_idx), 20);
        assert_eq!(offset_of!(CtrlHdr, padding), 21);
        assert_eq!(offset_of!(MemEntry, addr), 0);
        assert_eq!(offset_of!(MemEntry, length), 8);
        assert_eq!(offset_of!(MemEntry, padding), 12);
        assert_eq!(offset_of!(ReqCreate, object_id), 24);
        assert_eq!(offset_of!(ReqCreate, flags), 28);
        assert_eq!(offset_of!(ReqCreate, size), 32);
        assert_eq!(offset_of!(ReqObject, object_id), 24);
        assert_eq!(offset_of!(ReqBacking, object_id), 24);
        assert_eq!(offset_of!(ReqBacking, nr_entries), 28);
        assert_eq!(offset_of!(ReqTransfer, object_id), 24);
        assert_eq!(offset_of!(ReqTransfer, nr_entries), 28);
        assert_eq!(offset_of!(ReqTransfer, offset), 32);
        assert_eq!(offset_of!(ReqFill, object_id), 24);
        assert_eq!(offset_of!(ReqFill, value), 28);
        assert_eq!(offset_of!(ReqFill, offset), 32);
        assert_eq!(offset_of!(ReqFill, length), 40);
        assert_eq!(offset_of!(ReqCopy, dst_id), 24);
        assert_eq!(offset_of!(ReqCopy, src_id), 28);
        assert_eq!(offset_of!(ReqCopy, dst_offset), 32);
        assert_eq!(offset_of!(ReqCopy, src_offset), 40);
        assert_eq!(offset_of!(ReqCopy, length), 48);
        assert_eq!(offset_of!(ReqRange, object_id), 24);
        assert_eq!(offset_of!(ReqRange, offset), 32);
        assert_eq!(offset_of!(ReqRange, length), 40);
        assert_eq!(offset_of!(RespInfo, protocol_version), 24);
        assert_eq!(offset_of!(RespInfo, flags), 28);
        assert_eq!(offset_of!(RespInfo, vram_size), 32);
        assert_eq!(offset_of!(RespInfo, max_object_size), 40);
        assert_eq!(offset_of!(RespInfo, max_objects), 48);
        assert_eq!(offset_of!(RespInfo, max_sg_entries), 52);
        assert_eq!(offset_of!(RespInfo, page_size), 56);
        assert_eq!(offset_of!(RespChecksum, crc32c), 24);
        assert_eq!(offset_of!(RespStats, objects_live), 24);
        assert_eq!(offset_of!(RespStats, errors), 96);
    }

    #[test]
    fn type_numbers_avoid_virtio_gpu_ranges() {
        let all = [
            CMD_NOP,
            CMD_GET_INFO,
            CMD_CREATE,
            CMD_DESTROY,
            CMD_ATTACH_BACKING,
            CMD_MIGRATE,
            CMD_CLEAN,
            CMD_EVICT,
            CMD_FILL,
            CMD_COPY,
            CMD_CHECKSUM,
            CMD_STATS,
            CMD_MIGRATE_CLEAN,
            CMD_READ,
            CMD_WRITE,
            RESP_OK_NODATA,
            RESP_OK_INFO,
            RESP_OK_CHECKSUM,
            RESP_OK_STATS,
            RESP_ERR_INVALID_STATE,
            RESP_ERR_UNKNOWN_COMMAND,
            RESP_ERR_BAD_REQUEST,
            RESP_ERR_BAD_BACKING,
            RESP_ERR_OBJECT_EXISTS,
            RESP_ERR_TOO_MANY_OBJECTS,
            RESP_ERR_OUT_OF_RANGE,
            RESP_ERR_NOT_NEGOTIATED,
        ];
        for t in all {
            assert!(
                !matches!(t >> 8, 0x01 | 0x02 | 0x03 | 0x11 | 0x12),
                "{t:#x} collides"
            );
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(is_error(RESP_ERR_INVALID_PARAMETER));
        assert!(is_error(RESP_ERR_OUT_OF_RANGE));
        assert!(!is_error(RESP_OK_STATS));
        assert_eq!(command_name(CMD_CLEAN), "clean");
        assert_eq!(command_name(0x0142), "unknown");
        assert_eq!(command_name(CMD_RESOURCE_FLUSH), "resource_flush");
        assert!(is_virtio_gpu_command(CMD_MOVE_CURSOR));
        assert!(!is_virtio_gpu_command(CMD_NOP));
        assert!(is_error(RESP_ERR_INVALID_SCANOUT_ID));
        for f in format::ALL {
            assert!(format::rgb_offsets(f).is_some());
        }
        assert_eq!(format::rgb_offsets(5), None);
        // Feature bit is in the device-specific range and clear of virtio-gpu's bits 0..=4.
        const { assert!(VIRTIO_GPU_F_PVGPU_MEM > 4 && VIRTIO_GPU_F_PVGPU_MEM < 24) };
    }

    #[test]
    fn wire_round_trip_and_fence_echo() {
        let req = ReqFill {
            hdr: CtrlHdr::fenced(CMD_FILL, 77),
            object_id: 5,
            value: 0xab,
            offset: 4096,
            length: 8192,
        };
        let bytes = req.as_bytes();
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[0..4], &CMD_FILL.to_le_bytes());
        assert_eq!(&bytes[8..16], &77u64.to_le_bytes());
        // Unaligned read.
        let mut buf = [0u8; 64];
        buf[1..49].copy_from_slice(bytes);
        assert_eq!(ReqFill::read_from(&buf[1..]), Some(req));
        assert_eq!(ReqFill::read_from(&buf[..47]), None);
        let resp = req.hdr.response(RESP_OK_NODATA);
        assert_eq!(resp.flags, VIRTIO_GPU_FLAG_FENCE);
        assert_eq!(resp.fence_id, 77);
        let unfenced = CtrlHdr {
            fence_id: 9,
            flags: 0x80,
            ..CtrlHdr::new(CMD_NOP)
        };
        let resp = unfenced.response(RESP_OK_NODATA);
        assert_eq!((resp.flags, resp.fence_id), (0, 0));
    }
}
