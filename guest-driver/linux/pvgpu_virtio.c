// SPDX-License-Identifier: GPL-2.0
/*
 * pvgpu: the virtio part. Binds to virtio-gpu devices (ID 16) that offer the pvgpu memory
 * extension (feature bit 20), sends commands on the control queue one at a time, and gives
 * user space /dev/pvgpu, whose one ioctl creates objects (see pvgpu_object.c).
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/scatterlist.h>
#include <linux/uaccess.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "pvgpu.h"
#include "pvgpu_uapi.h"

int pvgpu_resp_errno(u32 type)
{
	switch (type) {
	case PVGPU_RESP_OK_NODATA:
	case PVGPU_RESP_OK_INFO:
	case PVGPU_RESP_OK_CHECKSUM:
	case PVGPU_RESP_OK_STATS:
	case PVGPU_RESP_OK_MIGRATE:
		return 0;
	case PVGPU_RESP_ERR_OUT_OF_MEMORY:
		return -ENOSPC;
	case PVGPU_RESP_ERR_INVALID_STATE:
	case PVGPU_RESP_ERR_OUT_OF_RANGE:
	case PVGPU_RESP_ERR_INVALID_PARAMETER:
		return -EINVAL;
	case PVGPU_RESP_ERR_TOO_MANY_OBJECTS:
		return -EMFILE;
	default:
		return -EIO;
	}
}

static void pvgpu_vq_done(struct virtqueue *vq)
{
	struct pvgpu_dev *dev = vq->vdev->priv;
	unsigned int len;

	while (virtqueue_get_buf(vq, &len))
		complete(&dev->done);
}

/*
 * Sends one request (the fixed part @req, then @extra, e.g. a page list) and waits until
 * the device has used it: pvgpu runs every command to completion first, so a used CLEAN
 * means the host has punched the pages. @req and @resp may live anywhere (they go through
 * one kmalloc'd buffer, whose guest-physical address the device sees); @extra must be
 * kmalloc'd. Returns 0 or a negative errno from the response type.
 */
int pvgpu_cmd(struct pvgpu_dev *dev, const void *req, size_t req_len,
	      const void *extra, size_t extra_len, void *resp, size_t resp_len)
{
	struct scatterlist req_sg, extra_sg, resp_sg, *sgs[3];
	unsigned int out = 0;
	struct pvgpu_hdr *hdr;
	u8 *buf;
	int ret;

	if (resp_len < sizeof(*hdr))
		return -EINVAL;
	buf = kzalloc(req_len + resp_len, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, req, req_len);
	sg_init_one(&req_sg, buf, req_len);
	sgs[out++] = &req_sg;
	if (extra_len) {
		sg_init_one(&extra_sg, extra, extra_len);
		sgs[out++] = &extra_sg;
	}
	sg_init_one(&resp_sg, buf + req_len, resp_len);
	sgs[out] = &resp_sg;

	mutex_lock(&dev->cmd_lock);
	reinit_completion(&dev->done);
	ret = virtqueue_add_sgs(dev->vq, sgs, out, 1, dev, GFP_KERNEL);
	if (!ret) {
		virtqueue_kick(dev->vq);
		wait_for_completion(&dev->done);
	}
	mutex_unlock(&dev->cmd_lock);
	if (!ret) {
		memcpy(resp, buf + req_len, resp_len);
		hdr = resp;
		ret = pvgpu_resp_errno(le32_to_cpu(hdr->type));
	}
	kfree(buf);
	return ret;
}

/* A command that names one object (DESTROY, MIGRATE, CLEAN), fenced with the object id. */
int pvgpu_cmd_object(struct pvgpu_dev *dev, u32 type, u32 id)
{
	struct pvgpu_req_object req = {
		.hdr.type = cpu_to_le32(type),
		.hdr.flags = cpu_to_le32(PVGPU_FLAG_FENCE),
		.hdr.fence_id = cpu_to_le64(id),
		.object_id = cpu_to_le32(id),
	};
	struct pvgpu_resp_migrate resp;

	return pvgpu_cmd(dev, &req, sizeof(req), NULL, 0, &resp, sizeof(resp));
}

static long pvgpu_dev_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	struct pvgpu_dev *dev = container_of(file->private_data,
					     struct pvgpu_dev, misc);
	struct pvgpu_create __user *uc = (void __user *)arg;
	struct pvgpu_create c;
	long fd;

	if (cmd != PVGPU_IOC_CREATE)
		return -ENOTTY;
	if (copy_from_user(&c, uc, sizeof(c)))
		return -EFAULT;
	if (c.flags)
		return -EINVAL;
	fd = pvgpu_object_create(dev, c.size);
	if (fd < 0)
		return fd;
	/* The fd is installed; a failed copy only loses the out field, as with pipe(2). */
	if (put_user((s32)fd, &uc->fd))
		return -EFAULT;
	return fd;
}

static const struct file_operations pvgpu_dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = pvgpu_dev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static int pvgpu_get_info(struct pvgpu_dev *dev)
{
	struct pvgpu_hdr req = { .type = cpu_to_le32(PVGPU_CMD_GET_INFO) };
	struct pvgpu_resp_info resp;
	int ret;

	ret = pvgpu_cmd(dev, &req, sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (!ret && le32_to_cpu(resp.page_size) != PAGE_SIZE)
		ret = -ENODEV;
	if (!ret)
		dev->max_object_size = le64_to_cpu(resp.max_object_size);
	return ret;
}

static int pvgpu_probe(struct virtio_device *vdev)
{
	struct pvgpu_dev *dev;
	int ret;

	if (!virtio_has_feature(vdev, PVGPU_F_MEM)) {
		dev_info(&vdev->dev, "no pvgpu memory extension, not binding\n");
		return -ENODEV;
	}
	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	dev->vdev = vdev;
	vdev->priv = dev;
	mutex_init(&dev->cmd_lock);
	init_completion(&dev->done);
	dev->vq = virtio_find_single_vq(vdev, pvgpu_vq_done, "control");
	if (IS_ERR(dev->vq)) {
		ret = PTR_ERR(dev->vq);
		goto err_free;
	}
	virtio_device_ready(vdev);
	ret = pvgpu_get_info(dev);
	if (ret)
		goto err_reset;
	dev->misc.minor = MISC_DYNAMIC_MINOR;
	dev->misc.name = "pvgpu";
	dev->misc.fops = &pvgpu_dev_fops;
	dev->misc.mode = 0666;
	ret = misc_register(&dev->misc);
	if (ret)
		goto err_reset;
	dev_info(&vdev->dev, "pvgpu: objects up to %llu bytes\n",
		 dev->max_object_size);
	return 0;

err_reset:
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
err_free:
	kfree(dev);
	return ret;
}

static void pvgpu_remove(struct virtio_device *vdev)
{
	struct pvgpu_dev *dev = vdev->priv;

	/* Object fds pin the module (fops owner), so no object outlives this. */
	misc_deregister(&dev->misc);
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	kfree(dev);
}

static const struct virtio_device_id pvgpu_id_table[] = {
	{ PVGPU_VIRTIO_ID_GPU, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static const unsigned int pvgpu_features[] = {
	PVGPU_F_MEM,
};

static struct virtio_driver pvgpu_driver = {
	.feature_table = pvgpu_features,
	.feature_table_size = ARRAY_SIZE(pvgpu_features),
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = pvgpu_id_table,
	.probe = pvgpu_probe,
	.remove = pvgpu_remove,
};

module_virtio_driver(pvgpu_driver);
MODULE_DEVICE_TABLE(virtio, pvgpu_id_table);
MODULE_DESCRIPTION("pvgpu: pageable GPU objects as files, with a cleaned call");
MODULE_LICENSE("GPL");
