// SPDX-License-Identifier: GPL-2.0
/*
 * pvgpu objects: each one is a file descriptor (an anon inode) over a shmem file, on which
 * pread, pwrite and mmap work as on a file whatever the placement, and whose ioctls migrate,
 * clean and evict it.
 *
 * SYSTEM  the data is in the shmem pages, which the device knows (ATTACH_BACKING, or EVICT
 *         into fresh pages); the driver holds a reference on each.
 * VRAM    MIGRATE copied them to VRAM; both copies are equal. A write through mmap
 *         (page_mkwrite) first evicts the object back to SYSTEM; pwrite writes both copies.
 * CLEANED CLEAN unmapped every user mapping, had the device punch the pages out of the
 *         host and waited for that (the fence), then dropped the pages from the shmem file,
 *         so the guest frees them too. pread/pwrite go to VRAM through READ/WRITE and a
 *         bounce page; touching a mapping faults the object back into fresh shmem pages.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pvgpu.h"
#include "pvgpu_uapi.h"

/* Largest run of contiguous pages one entry describes (a page-aligned u32). */
#define PVGPU_ENTRY_MAX (1UL << 31)

static void pvgpu_obj_put_pages(struct pvgpu_obj *obj)
{
	unsigned long i;

	for (i = 0; i < obj->npages; i++) {
		if (obj->pages[i])
			put_page(obj->pages[i]);
		obj->pages[i] = NULL;
	}
}

/* Looks up (allocating zeroed if needed) every shmem page and holds a reference on it. */
static int pvgpu_obj_get_pages(struct pvgpu_obj *obj)
{
	struct address_space *mapping = obj->shmem->f_mapping;
	unsigned long i;

	for (i = 0; i < obj->npages; i++) {
		struct page *page = shmem_read_mapping_page(mapping, i);

		if (IS_ERR(page)) {
			pvgpu_obj_put_pages(obj);
			return PTR_ERR(page);
		}
		obj->pages[i] = page;
	}
	return 0;
}

/*
 * ATTACH_BACKING or EVICT with the guest-physical addresses of the held pages, contiguous
 * pages merged into one entry; or, without @with_pages, an EVICT back into the current
 * backing (nr_entries 0).
 */
static int pvgpu_obj_send_backing(struct pvgpu_obj *obj, u32 type, bool with_pages)
{
	struct pvgpu_req_backing req = {
		.hdr.type = cpu_to_le32(type),
		.object_id = cpu_to_le32(obj->id),
	};
	struct pvgpu_mem_entry *e = NULL;
	struct pvgpu_hdr resp;
	unsigned long i, n = 0;
	int ret;

	if (with_pages) {
		e = kmalloc_array(obj->npages, sizeof(*e), GFP_KERNEL | __GFP_NOWARN);
		if (!e)
			return -ENOMEM;
	}
	for (i = 0; with_pages && i < obj->npages; i++) {
		u64 addr = page_to_phys(obj->pages[i]);

		if (n && le64_to_cpu(e[n - 1].addr) + le32_to_cpu(e[n - 1].length) == addr &&
		    le32_to_cpu(e[n - 1].length) + PAGE_SIZE <= PVGPU_ENTRY_MAX) {
			le32_add_cpu(&e[n - 1].length, PAGE_SIZE);
			continue;
		}
		e[n].addr = cpu_to_le64(addr);
		e[n].length = cpu_to_le32(PAGE_SIZE);
		e[n].padding = 0;
		n++;
	}
	req.nr_entries = cpu_to_le32(n);
	ret = pvgpu_cmd(obj->dev, &req, sizeof(req), e, n * sizeof(*e), &resp,
			sizeof(resp));
	kfree(e);
	return ret;
}

/*
 * Removes every user mapping of the object's pages. Called with obj->lock held, which every
 * fault and page_mkwrite take before they lock their page (and they keep the page locked
 * until its PTE is in). Taking each page lock once first waits for faults already past
 * obj->lock, so no PTE can appear after the unmap until obj->lock is released.
 */
static void pvgpu_obj_unmap(struct pvgpu_obj *obj)
{
	unsigned long i;

	for (i = 0; i < obj->npages; i++) {
		if (obj->pages[i]) {
			lock_page(obj->pages[i]);
			unlock_page(obj->pages[i]);
		}
	}
	unmap_mapping_range(obj->shmem->f_mapping, 0, 0, 1);
}

/* CLEANED -> SYSTEM: EVICT into fresh shmem pages. Called with obj->lock held. */
static int pvgpu_obj_restore(struct pvgpu_obj *obj)
{
	int ret = pvgpu_obj_get_pages(obj);

	if (ret)
		return ret;
	ret = pvgpu_obj_send_backing(obj, PVGPU_CMD_EVICT, true);
	if (ret) {
		pvgpu_obj_put_pages(obj);
		shmem_truncate_range(file_inode(obj->shmem), 0, obj->size - 1);
		return ret;
	}
	obj->placement = PVGPU_SYSTEM;
	return 0;
}

static int pvgpu_obj_migrate(struct pvgpu_obj *obj)
{
	int ret;

	if (obj->placement != PVGPU_SYSTEM)
		return -EALREADY;
	/* Writable PTEs would let writes bypass VRAM: refault them through page_mkwrite. */
	pvgpu_obj_unmap(obj);
	ret = pvgpu_cmd_object(obj->dev, PVGPU_CMD_MIGRATE, obj->id);
	if (!ret)
		obj->placement = PVGPU_VRAM;
	return ret;
}

/* The fenced CLEAN. */
static int pvgpu_obj_clean(struct pvgpu_obj *obj)
{
	int ret;

	if (obj->placement == PVGPU_CLEANED)
		return -EALREADY;
	if (obj->placement != PVGPU_VRAM)
		return -EINVAL;
	/* 1. No user mapping may touch the pages from here on (faults wait on obj->lock). */
	pvgpu_obj_unmap(obj);
	/* 2. The device punches them and 3. the used response is the fence. */
	ret = pvgpu_cmd_object(obj->dev, PVGPU_CMD_CLEAN, obj->id);
	if (ret)
		return ret;
	obj->placement = PVGPU_CLEANED;
	/* 4. Only now the guest lets the pages go: out of the shmem file, back to the kernel. */
	pvgpu_obj_put_pages(obj);
	shmem_truncate_range(file_inode(obj->shmem), 0, obj->size - 1);
	return 0;
}

static int pvgpu_obj_evict(struct pvgpu_obj *obj)
{
	int ret;

	switch (obj->placement) {
	case PVGPU_SYSTEM:
		return -EALREADY;
	case PVGPU_CLEANED:
		return pvgpu_obj_restore(obj);
	case PVGPU_VRAM:
		/* nr_entries 0: copy back into the current backing. */
		ret = pvgpu_obj_send_backing(obj, PVGPU_CMD_EVICT, false);
		if (!ret)
			obj->placement = PVGPU_SYSTEM;
		return ret;
	}
	return -EINVAL;
}

/* READ or WRITE one page of the object's VRAM data, with @page as the guest buffer. */
static int pvgpu_obj_transfer(struct pvgpu_obj *obj, u32 type, pgoff_t idx,
			      struct page *page)
{
	struct {
		struct pvgpu_req_transfer req;
		struct pvgpu_mem_entry e;
	} __packed m = {
		.req.hdr.type = cpu_to_le32(type),
		.req.object_id = cpu_to_le32(obj->id),
		.req.nr_entries = cpu_to_le32(1),
		.req.offset = cpu_to_le64((u64)idx << PAGE_SHIFT),
		.e.addr = cpu_to_le64(page_to_phys(page)),
		.e.length = cpu_to_le32(PAGE_SIZE),
	};
	struct pvgpu_hdr resp;

	return pvgpu_cmd(obj->dev, &m, sizeof(m), NULL, 0, &resp, sizeof(resp));
}

/* Clamps [*pos, *pos + len) to the object; returns the bytes left, or a negative errno. */
static ssize_t pvgpu_obj_span(struct pvgpu_obj *obj, loff_t pos, size_t len)
{
	if (pos < 0)
		return -EINVAL;
	if (pos >= obj->size)
		return 0;
	return min_t(u64, len, obj->size - pos);
}

static ssize_t pvgpu_obj_read(struct file *file, char __user *buf, size_t len,
			      loff_t *ppos)
{
	struct pvgpu_obj *obj = file->private_data;
	ssize_t span = pvgpu_obj_span(obj, *ppos, len);
	struct page *bounce;
	size_t done = 0;
	int ret = 0;

	if (span <= 0)
		return span;
	bounce = alloc_page(GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	while (done < span) {
		loff_t pos = *ppos + done;
		pgoff_t idx = pos >> PAGE_SHIFT;
		size_t off = offset_in_page(pos);
		size_t n = min_t(size_t, PAGE_SIZE - off, span - done);

		mutex_lock(&obj->lock);
		if (obj->placement == PVGPU_CLEANED)
			ret = pvgpu_obj_transfer(obj, PVGPU_CMD_READ, idx, bounce);
		else
			copy_highpage(bounce, obj->pages[idx]);
		mutex_unlock(&obj->lock);
		/* User memory is touched without obj->lock: it may be this object's mapping. */
		if (!ret && copy_to_user(buf + done, page_address(bounce) + off, n))
			ret = -EFAULT;
		if (ret)
			break;
		done += n;
	}
	__free_page(bounce);
	*ppos += done;
	return done ? done : ret;
}

static ssize_t pvgpu_obj_write(struct file *file, const char __user *buf,
			       size_t len, loff_t *ppos)
{
	struct pvgpu_obj *obj = file->private_data;
	ssize_t span = pvgpu_obj_span(obj, *ppos, len);
	struct page *data, *page;
	size_t done = 0;
	int ret = 0;

	if (span < 0)
		return span;
	if (span == 0)
		return len ? -ENOSPC : 0;
	data = alloc_page(GFP_KERNEL);
	page = alloc_page(GFP_KERNEL);
	if (!data || !page) {
		ret = -ENOMEM;
		goto out;
	}
	while (done < span) {
		loff_t pos = *ppos + done;
		pgoff_t idx = pos >> PAGE_SHIFT;
		size_t off = offset_in_page(pos);
		size_t n = min_t(size_t, PAGE_SIZE - off, span - done);

		if (copy_from_user(page_address(data), buf + done, n)) {
			ret = -EFAULT;
			break;
		}
		mutex_lock(&obj->lock);
		switch (obj->placement) {
		case PVGPU_CLEANED:
			/* Read-modify-write of the page in VRAM; the object stays cleaned. */
			if (n < PAGE_SIZE)
				ret = pvgpu_obj_transfer(obj, PVGPU_CMD_READ, idx, page);
			if (!ret) {
				memcpy(page_address(page) + off, page_address(data), n);
				ret = pvgpu_obj_transfer(obj, PVGPU_CMD_WRITE, idx, page);
			}
			break;
		case PVGPU_VRAM:
		case PVGPU_SYSTEM:
			memcpy_to_page(obj->pages[idx], off, page_address(data), n);
			set_page_dirty(obj->pages[idx]);
			/* Keep both copies equal: the shmem page is the WRITE's buffer. */
			if (obj->placement == PVGPU_VRAM)
				ret = pvgpu_obj_transfer(obj, PVGPU_CMD_WRITE, idx,
							 obj->pages[idx]);
			break;
		}
		mutex_unlock(&obj->lock);
		if (ret)
			break;
		done += n;
	}
out:
	if (data)
		__free_page(data);
	if (page)
		__free_page(page);
	*ppos += done;
	return done ? done : ret;
}

static loff_t pvgpu_obj_llseek(struct file *file, loff_t offset, int whence)
{
	struct pvgpu_obj *obj = file->private_data;

	return fixed_size_llseek(file, offset, whence, obj->size);
}

static void pvgpu_obj_free(struct kref *ref)
{
	struct pvgpu_obj *obj = container_of(ref, struct pvgpu_obj, ref);

	/* DESTROY frees the VRAM; the pages go back to the guest with the shmem file. */
	if (pvgpu_cmd_object(obj->dev, PVGPU_CMD_DESTROY, obj->id))
		pr_warn("pvgpu: destroying object %u failed\n", obj->id);
	pvgpu_obj_put_pages(obj);
	fput(obj->shmem);
	kvfree(obj->pages);
	kfree(obj);
	/* Mappings can outlive the object's fd (and so its fops' module reference). */
	module_put(THIS_MODULE);
}

static void pvgpu_vm_open(struct vm_area_struct *vma)
{
	struct pvgpu_obj *obj = vma->vm_private_data;

	kref_get(&obj->ref);
}

static void pvgpu_vm_close(struct vm_area_struct *vma)
{
	struct pvgpu_obj *obj = vma->vm_private_data;

	kref_put(&obj->ref, pvgpu_obj_free);
}

/* Demand paging: a cleaned object comes back into fresh pages on first touch. */
static vm_fault_t pvgpu_vm_fault(struct vm_fault *vmf)
{
	struct pvgpu_obj *obj = vmf->vma->vm_private_data;
	vm_fault_t ret = 0;

	if (vmf->pgoff >= obj->npages)
		return VM_FAULT_SIGBUS;
	mutex_lock(&obj->lock);
	if (obj->placement == PVGPU_CLEANED && pvgpu_obj_restore(obj))
		ret = VM_FAULT_SIGBUS;
	if (!ret) {
		vmf->page = obj->pages[vmf->pgoff];
		get_page(vmf->page);
		/* Locked until its PTE is in: see pvgpu_obj_unmap(). */
		lock_page(vmf->page);
		ret = VM_FAULT_LOCKED;
	}
	mutex_unlock(&obj->lock);
	return ret;
}

/* A write to a VRAM object through a mapping: the guest copy becomes the one that counts. */
static vm_fault_t pvgpu_vm_page_mkwrite(struct vm_fault *vmf)
{
	struct pvgpu_obj *obj = vmf->vma->vm_private_data;
	vm_fault_t ret = 0;

	mutex_lock(&obj->lock);
	if (obj->placement != PVGPU_SYSTEM && pvgpu_obj_evict(obj))
		ret = VM_FAULT_SIGBUS;
	if (!ret) {
		lock_page(vmf->page);
		if (vmf->page->mapping != obj->shmem->f_mapping) {
			/* Cleaned (truncated) since the fault: fault again. */
			unlock_page(vmf->page);
			ret = VM_FAULT_NOPAGE;
		} else {
			ret = VM_FAULT_LOCKED;
		}
	}
	mutex_unlock(&obj->lock);
	return ret;
}

static const struct vm_operations_struct pvgpu_vm_ops = {
	.open = pvgpu_vm_open,
	.close = pvgpu_vm_close,
	.fault = pvgpu_vm_fault,
	.page_mkwrite = pvgpu_vm_page_mkwrite,
};

static int pvgpu_obj_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct pvgpu_obj *obj = file->private_data;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff > obj->npages ||
	    vma_pages(vma) > obj->npages - vma->vm_pgoff)
		return -EINVAL;
	/* The mapping is the shmem file's, so unmap_mapping_range() on it reaches it. */
	vma_set_file(vma, obj->shmem);
	vma->vm_private_data = obj;
	vma->vm_ops = &pvgpu_vm_ops;
	vma->vm_flags |= VM_DONTEXPAND;
	kref_get(&obj->ref);
	return 0;
}

static int pvgpu_obj_stats(struct pvgpu_obj *obj, struct pvgpu_stats *st)
{
	struct pvgpu_hdr req = { .type = cpu_to_le32(PVGPU_CMD_STATS) };
	struct pvgpu_resp_stats resp;
	int ret;

	ret = pvgpu_cmd(obj->dev, &req, sizeof(req), NULL, 0, &resp, sizeof(resp));
	memset(st, 0, sizeof(*st));
	if (ret)
		return ret;
	st->size = obj->size;
	st->id = obj->id;
	st->placement = obj->placement;
	st->resident_bytes = obj->placement == PVGPU_CLEANED ? 0 : obj->size;
	st->objects_live = le64_to_cpu(resp.objects_live);
	st->bytes_migrated = le64_to_cpu(resp.bytes_migrated);
	st->bytes_cleaned = le64_to_cpu(resp.bytes_cleaned);
	st->bytes_evicted = le64_to_cpu(resp.bytes_evicted);
	st->vram_used = le64_to_cpu(resp.vram_used);
	st->commands = le64_to_cpu(resp.commands);
	st->errors = le64_to_cpu(resp.errors);
	return 0;
}

static int pvgpu_obj_checksum(struct pvgpu_obj *obj, struct pvgpu_checksum *c)
{
	struct pvgpu_req_range req = {
		.hdr.type = cpu_to_le32(PVGPU_CMD_CHECKSUM),
		.object_id = cpu_to_le32(obj->id),
		.offset = cpu_to_le64(c->offset),
		.length = cpu_to_le64(c->length),
	};
	struct pvgpu_resp_checksum resp;
	int ret;

	if (c->offset > obj->size || c->length > obj->size - c->offset)
		return -EINVAL;
	ret = pvgpu_cmd(obj->dev, &req, sizeof(req), NULL, 0, &resp, sizeof(resp));
	c->crc32c = ret ? 0 : le32_to_cpu(resp.crc32c);
	c->padding = 0;
	return ret;
}

static long pvgpu_obj_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	struct pvgpu_obj *obj = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct pvgpu_checksum c;
	struct pvgpu_stats st;
	long ret;

	switch (cmd) {
	case PVGPU_IOC_MIGRATE:
	case PVGPU_IOC_CLEAN:
	case PVGPU_IOC_EVICT:
		mutex_lock(&obj->lock);
		if (cmd == PVGPU_IOC_MIGRATE)
			ret = pvgpu_obj_migrate(obj);
		else if (cmd == PVGPU_IOC_CLEAN)
			ret = pvgpu_obj_clean(obj);
		else
			ret = pvgpu_obj_evict(obj);
		mutex_unlock(&obj->lock);
		return ret;
	case PVGPU_IOC_PLACEMENT:
		return put_user((u32)READ_ONCE(obj->placement), (u32 __user *)uarg);
	case PVGPU_IOC_STATS:
		mutex_lock(&obj->lock);
		ret = pvgpu_obj_stats(obj, &st);
		mutex_unlock(&obj->lock);
		if (!ret && copy_to_user(uarg, &st, sizeof(st)))
			ret = -EFAULT;
		return ret;
	case PVGPU_IOC_CHECKSUM:
		if (copy_from_user(&c, uarg, sizeof(c)))
			return -EFAULT;
		mutex_lock(&obj->lock);
		ret = pvgpu_obj_checksum(obj, &c);
		mutex_unlock(&obj->lock);
		if (!ret && copy_to_user(uarg, &c, sizeof(c)))
			ret = -EFAULT;
		return ret;
	}
	return -ENOTTY;
}

static int pvgpu_obj_release(struct inode *inode, struct file *file)
{
	struct pvgpu_obj *obj = file->private_data;

	kref_put(&obj->ref, pvgpu_obj_free);
	return 0;
}

static const struct file_operations pvgpu_obj_fops = {
	.owner = THIS_MODULE,
	.read = pvgpu_obj_read,
	.write = pvgpu_obj_write,
	.llseek = pvgpu_obj_llseek,
	.mmap = pvgpu_obj_mmap,
	.unlocked_ioctl = pvgpu_obj_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = pvgpu_obj_release,
};

/* CREATE and ATTACH_BACKING a shmem-backed object; returns its new fd. */
long pvgpu_object_create(struct pvgpu_dev *dev, u64 size)
{
	struct pvgpu_req_create req = { .hdr.type = cpu_to_le32(PVGPU_CMD_CREATE) };
	struct pvgpu_hdr resp;
	struct pvgpu_obj *obj;
	struct file *file;
	int ret, fd;

	if (!size || size > dev->max_object_size ||
	    size > (u64)PVGPU_MAX_SG_ENTRIES * PAGE_SIZE)
		return -EINVAL;
	size = PAGE_ALIGN(size);
	obj = kzalloc(sizeof(*obj), GFP_KERNEL);
	if (!obj)
		return -ENOMEM;
	kref_init(&obj->ref);
	mutex_init(&obj->lock);
	__module_get(THIS_MODULE);
	obj->dev = dev;
	obj->size = size;
	obj->npages = size >> PAGE_SHIFT;
	obj->placement = PVGPU_SYSTEM;
	obj->id = atomic_inc_return(&dev->next_id);
	obj->pages = kvcalloc(obj->npages, sizeof(*obj->pages), GFP_KERNEL);
	if (!obj->pages) {
		ret = -ENOMEM;
		goto err_obj;
	}
	obj->shmem = shmem_file_setup("pvgpu-object", size, VM_NORESERVE);
	if (IS_ERR(obj->shmem)) {
		ret = PTR_ERR(obj->shmem);
		goto err_pages;
	}
	req.object_id = cpu_to_le32(obj->id);
	req.size = cpu_to_le64(size);
	ret = pvgpu_cmd(dev, &req, sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (ret)
		goto err_shmem;
	/* From here the device knows the object: pvgpu_obj_free() destroys it. */
	ret = pvgpu_obj_get_pages(obj);
	if (!ret)
		ret = pvgpu_obj_send_backing(obj, PVGPU_CMD_ATTACH_BACKING, true);
	if (ret)
		goto err_put;
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		ret = fd;
		goto err_put;
	}
	file = anon_inode_getfile("[pvgpu-object]", &pvgpu_obj_fops, obj, O_RDWR);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		ret = PTR_ERR(file);
		goto err_put;
	}
	file->f_mode |= FMODE_PREAD | FMODE_PWRITE | FMODE_LSEEK;
	fd_install(fd, file);
	return fd;

err_put:
	kref_put(&obj->ref, pvgpu_obj_free);
	return ret;
err_shmem:
	fput(obj->shmem);
err_pages:
	kvfree(obj->pages);
err_obj:
	kfree(obj);
	module_put(THIS_MODULE);
	return ret;
}
