/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The user-space interface of the pvgpu Linux driver.
 *
 * /dev/pvgpu creates objects; each object is a file descriptor on which pread, pwrite and
 * mmap (MAP_SHARED) work as on a file, whatever the object's placement. The ioctls below
 * act on an object fd (except PVGPU_IOC_CREATE, on /dev/pvgpu).
 */
#ifndef PVGPU_UAPI_H
#define PVGPU_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Placements (as protocol.rs's Placement). */
#define PVGPU_PLACEMENT_SYSTEM 0	/* data in the guest's shmem pages only */
#define PVGPU_PLACEMENT_VRAM 1		/* in VRAM, and the shmem pages still hold a copy */
#define PVGPU_PLACEMENT_CLEANED 2	/* in VRAM only; the guest and the host freed the pages */

struct pvgpu_create {
	__u64 size;	/* in: bytes, rounded up to whole pages */
	__u32 flags;	/* in: 0 */
	__s32 fd;	/* out: the object's file descriptor (also the ioctl's return value) */
};

struct pvgpu_checksum {
	__u64 offset;	/* in */
	__u64 length;	/* in */
	__u32 crc32c;	/* out: computed by the device, wherever the data lives */
	__u32 padding;
};

struct pvgpu_stats {
	/* this object */
	__u64 size;
	__u32 id;
	__u32 placement;
	__u64 resident_bytes;	/* guest pages holding the object's data */
	/* the device (its STATS command) */
	__u64 objects_live;
	__u64 bytes_migrated;
	__u64 bytes_cleaned;
	__u64 bytes_evicted;
	__u64 vram_used;
	__u64 commands;
	__u64 errors;
};

#define PVGPU_IOC_MAGIC 0xb7
/* On /dev/pvgpu: create an object; returns its fd. */
#define PVGPU_IOC_CREATE _IOWR(PVGPU_IOC_MAGIC, 0x00, struct pvgpu_create)
/* On an object fd. MIGRATE: SYSTEM -> VRAM (EALREADY if already there). */
#define PVGPU_IOC_MIGRATE _IO(PVGPU_IOC_MAGIC, 0x01)
/* CLEAN (fenced): VRAM -> CLEANED; unmaps user mappings, waits for the device, then drops
 * the shmem pages. EINVAL from SYSTEM, EALREADY when already cleaned. */
#define PVGPU_IOC_CLEAN _IO(PVGPU_IOC_MAGIC, 0x02)
/* EVICT: VRAM or CLEANED -> SYSTEM (EALREADY in SYSTEM). */
#define PVGPU_IOC_EVICT _IO(PVGPU_IOC_MAGIC, 0x03)
/* The placement (PVGPU_PLACEMENT_*). */
#define PVGPU_IOC_PLACEMENT _IOR(PVGPU_IOC_MAGIC, 0x04, __u32)
#define PVGPU_IOC_STATS _IOR(PVGPU_IOC_MAGIC, 0x05, struct pvgpu_stats)
#define PVGPU_IOC_CHECKSUM _IOWR(PVGPU_IOC_MAGIC, 0x06, struct pvgpu_checksum)

#endif /* PVGPU_UAPI_H */
