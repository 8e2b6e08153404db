/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The pvgpu wire protocol for the Linux driver: the same numbers and struct layouts as
 * device/abi/src/protocol.rs, which defines them. The host-side test
 * device/abi/tests/c_header.rs checks every PVGPU_* value and every PVGPU_LAYOUT() line
 * below against the Rust definition; the C compiler checks the layout lines against these
 * structs. So neither side can drift.
 */
#ifndef PVGPU_PROTOCOL_H
#define PVGPU_PROTOCOL_H

#include <linux/types.h>
#include <linux/build_bug.h>
#include <linux/stddef.h>

#define PVGPU_VIRTIO_ID_GPU 16
#define PVGPU_F_MEM 20 /* VIRTIO_GPU_F_PVGPU_MEM */
#define PVGPU_CONTROLQ 0
#define PVGPU_PAGE_SIZE 4096
#define PVGPU_MAX_SG_ENTRIES 65536
#define PVGPU_FLAG_FENCE 1

#define PVGPU_CMD_NOP 0x0a00
#define PVGPU_CMD_GET_INFO 0x0a01
#define PVGPU_CMD_CREATE 0x0a02
#define PVGPU_CMD_DESTROY 0x0a03
#define PVGPU_CMD_ATTACH_BACKING 0x0a04
#define PVGPU_CMD_MIGRATE 0x0a05
#define PVGPU_CMD_CLEAN 0x0a06
#define PVGPU_CMD_EVICT 0x0a07
#define PVGPU_CMD_FILL 0x0a08
#define PVGPU_CMD_COPY 0x0a09
#define PVGPU_CMD_CHECKSUM 0x0a0a
#define PVGPU_CMD_STATS 0x0a0b
#define PVGPU_CMD_MIGRATE_CLEAN 0x0a0c /* not used by this driver */
#define PVGPU_CMD_READ 0x0a0d
#define PVGPU_CMD_WRITE 0x0a0e

#define PVGPU_RESP_OK_NODATA 0x1a00
#define PVGPU_RESP_OK_INFO 0x1a01
#define PVGPU_RESP_OK_CHECKSUM 0x1a02
#define PVGPU_RESP_OK_STATS 0x1a03
#define PVGPU_RESP_OK_MIGRATE 0x1a04
#define PVGPU_RESP_ERR_UNSPEC 0x1200
#define PVGPU_RESP_ERR_OUT_OF_MEMORY 0x1201
#define PVGPU_RESP_ERR_INVALID_OBJECT_ID 0x1203
#define PVGPU_RESP_ERR_INVALID_PARAMETER 0x1205
#define PVGPU_RESP_ERR_INVALID_STATE 0x1a80
#define PVGPU_RESP_ERR_UNKNOWN_COMMAND 0x1a81
#define PVGPU_RESP_ERR_BAD_REQUEST 0x1a82
#define PVGPU_RESP_ERR_BAD_BACKING 0x1a83
#define PVGPU_RESP_ERR_OBJECT_EXISTS 0x1a84
#define PVGPU_RESP_ERR_TOO_MANY_OBJECTS 0x1a85
#define PVGPU_RESP_ERR_OUT_OF_RANGE 0x1a86
#define PVGPU_RESP_ERR_NOT_NEGOTIATED 0x1a87

/* virtio_gpu_ctrl_hdr */
struct pvgpu_hdr {
	__le32 type;
	__le32 flags;
	__le64 fence_id;
	__le32 ctx_id;
	__u8 ring_idx;
	__u8 padding[3];
};

struct pvgpu_mem_entry {
	__le64 addr;
	__le32 length;
	__le32 padding;
};

struct pvgpu_req_create {
	struct pvgpu_hdr hdr;
	__le32 object_id;
	__le32 flags;
	__le64 size;
};

/* DESTROY, MIGRATE, CLEAN */
struct pvgpu_req_object {
	struct pvgpu_hdr hdr;
	__le32 object_id;
	__le32 padding;
};

/* ATTACH_BACKING, EVICT; followed by nr_entries entries */
struct pvgpu_req_backing {
	struct pvgpu_hdr hdr;
	__le32 object_id;
	__le32 nr_entries;
};

/* READ, WRITE; followed by nr_entries entries */
struct pvgpu_req_transfer {
	struct pvgpu_hdr hdr;
	__le32 object_id;
	__le32 nr_entries;
	__le64 offset;
};

/* CHECKSUM */
struct pvgpu_req_range {
	struct pvgpu_hdr hdr;
	__le32 object_id;
	__le32 padding;
	__le64 offset;
	__le64 length;
};

struct pvgpu_resp_info {
	struct pvgpu_hdr hdr;
	__le32 protocol_version;
	__le32 flags;
	__le64 vram_size;
	__le64 max_object_size;
	__le32 max_objects;
	__le32 max_sg_entries;
	__le32 page_size;
	__le32 padding;
};

struct pvgpu_resp_checksum {
	struct pvgpu_hdr hdr;
	__le32 crc32c;
	__le32 padding;
};

struct pvgpu_resp_migrate {
	struct pvgpu_hdr hdr;
	__le64 vram_offset;
};

struct pvgpu_resp_stats {
	struct pvgpu_hdr hdr;
	__le64 objects_live;
	__le64 objects_peak;
	__le64 bytes_migrated;
	__le64 bytes_cleaned;
	__le64 bytes_evicted;
	__le64 vram_used;
	__le64 vram_peak;
	__le64 vram_size;
	__le64 commands;
	__le64 errors;
};

/* PVGPU_LAYOUT(struct, field, offset, struct size): checked here by the compiler and in
 * device/abi/tests/c_header.rs against protocol.rs. */
#define PVGPU_LAYOUT(s, f, off, size) \
	static_assert(offsetof(struct s, f) == (off) && sizeof(struct s) == (size))

PVGPU_LAYOUT(pvgpu_hdr, type, 0, 24);
PVGPU_LAYOUT(pvgpu_hdr, flags, 4, 24);
PVGPU_LAYOUT(pvgpu_hdr, fence_id, 8, 24);
PVGPU_LAYOUT(pvgpu_hdr, ctx_id, 16, 24);
PVGPU_LAYOUT(pvgpu_hdr, ring_idx, 20, 24);
PVGPU_LAYOUT(pvgpu_mem_entry, addr, 0, 16);
PVGPU_LAYOUT(pvgpu_mem_entry, length, 8, 16);
PVGPU_LAYOUT(pvgpu_req_create, object_id, 24, 40);
PVGPU_LAYOUT(pvgpu_req_create, flags, 28, 40);
PVGPU_LAYOUT(pvgpu_req_create, size, 32, 40);
PVGPU_LAYOUT(pvgpu_req_object, object_id, 24, 32);
PVGPU_LAYOUT(pvgpu_req_backing, object_id, 24, 32);
PVGPU_LAYOUT(pvgpu_req_backing, nr_entries, 28, 32);
PVGPU_LAYOUT(pvgpu_req_transfer, object_id, 24, 40);
PVGPU_LAYOUT(pvgpu_req_transfer, nr_entries, 28, 40);
PVGPU_LAYOUT(pvgpu_req_transfer, offset, 32, 40);
PVGPU_LAYOUT(pvgpu_req_range, object_id, 24, 48);
PVGPU_LAYOUT(pvgpu_req_range, offset, 32, 48);
PVGPU_LAYOUT(pvgpu_req_range, length, 40, 48);
PVGPU_LAYOUT(pvgpu_resp_info, protocol_version, 24, 64);
PVGPU_LAYOUT(pvgpu_resp_info, vram_size, 32, 64);
PVGPU_LAYOUT(pvgpu_resp_info, max_object_size, 40, 64);
PVGPU_LAYOUT(pvgpu_resp_info, max_objects, 48, 64);
PVGPU_LAYOUT(pvgpu_resp_info, max_sg_entries, 52, 64);
PVGPU_LAYOUT(pvgpu_resp_info, page_size, 56, 64);
PVGPU_LAYOUT(pvgpu_resp_checksum, crc32c, 24, 32);
PVGPU_LAYOUT(pvgpu_resp_migrate, vram_offset, 24, 32);
PVGPU_LAYOUT(pvgpu_resp_stats, objects_live, 24, 104);
PVGPU_LAYOUT(pvgpu_resp_stats, bytes_migrated, 40, 104);
PVGPU_LAYOUT(pvgpu_resp_stats, bytes_cleaned, 48, 104);
PVGPU_LAYOUT(pvgpu_resp_stats, bytes_evicted, 56, 104);
PVGPU_LAYOUT(pvgpu_resp_stats, vram_used, 64, 104);
PVGPU_LAYOUT(pvgpu_resp_stats, errors, 96, 104);

#endif /* PVGPU_PROTOCOL_H */
