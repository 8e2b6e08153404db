/* SPDX-License-Identifier: GPL-2.0 */
/* pvgpu Linux driver: what the virtio part and the object part share. */
#ifndef PVGPU_H
#define PVGPU_H

#include <linux/miscdevice.h>
#include <linux/mutex.h>
#include <linux/completion.h>
#include <linux/kref.h>
#include <linux/types.h>

#include "pvgpu_protocol.h"

struct virtio_device;
struct virtqueue;
struct page;
struct file;

struct pvgpu_dev {
	struct virtio_device *vdev;
	struct virtqueue *vq;
	/* One command in flight at a time: the caller sleeps until its response is used. */
	struct mutex cmd_lock;
	struct completion done;
	struct miscdevice misc;
	atomic_t next_id;
	u64 max_object_size;
};

enum pvgpu_placement {
	PVGPU_SYSTEM,
	PVGPU_VRAM,
	PVGPU_CLEANED,
};

struct pvgpu_obj {
	struct kref ref;
	struct pvgpu_dev *dev;
	u32 id;
	u64 size;
	unsigned long npages;
	/* The shmem file behind the object and the pages it holds while they back it. */
	struct file *shmem;
	struct page **pages;
	/* Serialises placement changes, faults, reads and writes. */
	struct mutex lock;
	enum pvgpu_placement placement;
};

/* pvgpu_virtio.c */
int pvgpu_cmd(struct pvgpu_dev *dev, const void *req, size_t req_len,
	      const void *extra, size_t extra_len, void *resp, size_t resp_len);
int pvgpu_cmd_object(struct pvgpu_dev *dev, u32 type, u32 id);
int pvgpu_resp_errno(u32 type);

/* pvgpu_object.c */
long pvgpu_object_create(struct pvgpu_dev *dev, u64 size);

#endif /* PVGPU_H */
