// SPDX-License-Identifier: GPL-2.0
/*
 * pvgpu_test: init of the User-Mode Linux guest. Loads pvgpu.ko, then drives /dev/pvgpu as
 * our own kernel's workloads do:
 *   workload  fill, migrate, clean, verify by CHECKSUM and pread; touch every byte back
 *             through mmap, verify, destroy. Phase markers ("PVGPU-PHASE name") let the host
 *             read the backend's memory; with PVGPU_HANDSHAKE=1 (kernel command line) each
 *             marker waits for a line on the console before going on.
 *   pressure  more objects than VRAM holds: migrate (evicting the oldest on ENOSPC), clean,
 *             random pread/pwrite/mmap touches, every byte checked against a shadow copy.
 *   hostile   bad ioctls, bad sizes, double clean, use after close.
 * Prints "PVGPU-RESULT ok" or "PVGPU-RESULT fail: ..." and powers off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../pvgpu_uapi.h"

#define PAGE 4096UL
#define MIB (1UL << 20)

static int failures;
/* An address user space cannot touch (volatile: the compiler must not reason about it). */
static void *volatile bad_ptr = (void *)16;

static void fail(const char *fmt, ...)
{
	va_list ap;

	printf("PVGPU-FAIL ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (errno %d)\n", errno);
	fflush(stdout);
	failures++;
}

#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

static void phase(const char *name)
{
	char line[64];

	printf("PVGPU-PHASE %s\n", name);
	fflush(stdout);
	if (getenv("PVGPU_HANDSHAKE") && !fgets(line, sizeof(line), stdin))
		fail("no handshake after phase %s", name);
}

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (c & 1 ? 0x82f63b78 : 0);
		crc_table[i] = c;
	}
}

/* crc32c (Castagnoli), as the device's CHECKSUM. */
static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = ~0u;

	while (n--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

static void pattern(uint8_t *buf, size_t n, uint32_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

static int create(int dev, uint64_t size)
{
	struct pvgpu_create c = { .size = size };
	int fd = ioctl(dev, PVGPU_IOC_CREATE, &c);

	if (fd >= 0 && c.fd != fd)
		fail("create returned %d but fd field %d", fd, c.fd);
	return fd;
}

static uint32_t placement(int fd)
{
	uint32_t p = 99;

	if (ioctl(fd, PVGPU_IOC_PLACEMENT, &p))
		fail("placement ioctl");
	return p;
}

static int dev_checksum(int fd, uint64_t off, uint64_t len, uint32_t *crc)
{
	struct pvgpu_checksum c = { .offset = off, .length = len };
	int r = ioctl(fd, PVGPU_IOC_CHECKSUM, &c);

	*crc = c.crc32c;
	return r;
}

static int full_pwrite(int fd, const uint8_t *buf, size_t n, off_t off)
{
	while (n) {
		ssize_t w = pwrite(fd, buf, n, off);

		if (w <= 0)
			return -1;
		buf += w;
		n -= w;
		off += w;
	}
	return 0;
}

static int full_pread(int fd, uint8_t *buf, size_t n, off_t off)
{
	while (n) {
		ssize_t r = pread(fd, buf, n, off);

		if (r <= 0)
			return -1;
		buf += r;
		n -= r;
		off += r;
	}
	return 0;
}

/*
 * Reads every byte of the object through pread and compares it with @want, through one
 * small buffer (so verifying allocates next to no guest memory: the host-memory phases stay
 * exact).
 */
static void verify_pread(int fd, const uint8_t *want, size_t size, const char *what)
{
	static uint8_t got[64 * 1024];

	for (size_t off = 0; off < size; off += sizeof(got)) {
		size_t n = size - off < sizeof(got) ? size - off : sizeof(got);

		if (full_pread(fd, got, n, off) || memcmp(got, want + off, n)) {
			fail("%s: pread does not match at %zu", what, off);
			return;
		}
	}
}

static int workload(int dev, unsigned int nobj, size_t size)
{
	int fds[64];
	uint8_t *data[64];
	uint32_t crc[64];
	uint64_t cleaned = 0;

	if (nobj > 64)
		nobj = 64;
	for (unsigned int i = 0; i < nobj; i++) {
		fds[i] = create(dev, size);
		if (fds[i] < 0) {
			fail("create %u", i);
			return -1;
		}
		data[i] = malloc(size);
		pattern(data[i], size, i + 1);
		crc[i] = crc32c(data[i], size);
		CHECK(!full_pwrite(fds[i], data[i], size, 0), "fill %u", i);
		CHECK(placement(fds[i]) == PVGPU_PLACEMENT_SYSTEM, "%u not SYSTEM", i);
	}
	phase("filled");
	for (unsigned int i = 0; i < nobj; i++) {
		uint32_t c = 0;

		CHECK(!ioctl(fds[i], PVGPU_IOC_MIGRATE), "migrate %u", i);
		CHECK(placement(fds[i]) == PVGPU_PLACEMENT_VRAM, "%u not VRAM", i);
		CHECK(!dev_checksum(fds[i], 0, size, &c) && c == crc[i],
		      "checksum %u after migrate: %08x, want %08x", i, c, crc[i]);
	}
	phase("migrated");
	for (unsigned int i = 0; i < nobj; i++) {
		CHECK(!ioctl(fds[i], PVGPU_IOC_CLEAN), "clean %u", i);
		CHECK(placement(fds[i]) == PVGPU_PLACEMENT_CLEANED, "%u not CLEANED", i);
		cleaned += size;
	}
	printf("PVGPU-CLEANED-BYTES %llu\n", (unsigned long long)cleaned);
	phase("cleaned");
	for (unsigned int i = 0; i < nobj; i++) {
		uint32_t c = 0;

		CHECK(!dev_checksum(fds[i], 0, size, &c) && c == crc[i],
		      "checksum %u after clean: %08x, want %08x", i, c, crc[i]);
		verify_pread(fds[i], data[i], size, "cleaned object");
		CHECK(placement(fds[i]) == PVGPU_PLACEMENT_CLEANED,
		      "pread brought %u back", i);
	}
	phase("verified");
	/* Touch every byte back through mmap: demand paging restores each object. */
	for (unsigned int i = 0; i < nobj; i++) {
		uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);

		if (m == MAP_FAILED) {
			fail("mmap %u", i);
			continue;
		}
		CHECK(!memcmp(m, data[i], size), "object %u through mmap differs", i);
		CHECK(placement(fds[i]) == PVGPU_PLACEMENT_SYSTEM, "%u not restored", i);
		/* And writes through the mapping are what pread and CHECKSUM see. */
		for (size_t b = 0; b < size; b += PAGE)
			m[b] ^= 0x5a, data[i][b] ^= 0x5a;
		crc[i] = crc32c(data[i], size);
		munmap(m, size);
		verify_pread(fds[i], data[i], size, "written through mmap");
		uint32_t c = 0;

		CHECK(!dev_checksum(fds[i], 0, size, &c) && c == crc[i],
		      "checksum %u after mmap writes", i);
	}
	phase("restored");
	for (unsigned int i = 0; i < nobj; i++) {
		close(fds[i]);
		free(data[i]);
	}
	phase("destroyed");
	return 0;
}

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* More objects than VRAM: every operation checked against a shadow copy. */
static void pressure(int dev, unsigned int nobj, size_t size, unsigned int rounds)
{
	int fds[128];
	uint8_t *shadow[128];
	uint8_t *buf = malloc(size);
	unsigned long migrated = 0, out_of_vram = 0, cleaned = 0;

	if (nobj > 128)
		nobj = 128;
	for (unsigned int i = 0; i < nobj; i++) {
		fds[i] = create(dev, size);
		shadow[i] = malloc(size);
		pattern(shadow[i], size, 1000 + i);
		CHECK(fds[i] >= 0 && !full_pwrite(fds[i], shadow[i], size, 0), "pressure fill %u", i);
	}
	for (unsigned int r = 0; r < rounds; r++) {
		unsigned int i = rnd() % nobj;
		uint32_t p = placement(fds[i]);
		size_t off = rnd() % size, n = 1 + rnd() % (size - off);

		/* Migrations and cleans outweigh the touches that bring objects back. */
		switch (rnd() % 8) {
		case 0:
		case 5:
		case 6:
			if (p != PVGPU_PLACEMENT_SYSTEM)
				break;
			while (ioctl(fds[i], PVGPU_IOC_MIGRATE)) {
				/* Out of VRAM: evict some other object and retry. */
				unsigned int v = rnd() % nobj;

				if (errno != ENOSPC) {
					fail("pressure migrate %u", i);
					break;
				}
				out_of_vram++;
				if (v != i)
					ioctl(fds[v], PVGPU_IOC_EVICT);
			}
			migrated++;
			break;
		case 1:
		case 7:
			if (p == PVGPU_PLACEMENT_VRAM) {
				CHECK(!ioctl(fds[i], PVGPU_IOC_CLEAN), "pressure clean %u", i);
				cleaned++;
			}
			break;
		case 2:
			pattern(buf, n, (uint32_t)rnd());
			CHECK(!full_pwrite(fds[i], buf, n, off), "pressure pwrite %u", i);
			memcpy(shadow[i] + off, buf, n);
			break;
		case 3:
			CHECK(!full_pread(fds[i], buf, n, off) && !memcmp(buf, shadow[i] + off, n),
			      "pressure pread %u at %zu+%zu", i, off, n);
			break;
		case 4: {
			uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);

			if (m == MAP_FAILED) {
				fail("pressure mmap %u", i);
				break;
			}
			CHECK(m[off] == shadow[i][off], "pressure mmap read %u at %zu", i, off);
			m[off] ^= 0xff;
			shadow[i][off] ^= 0xff;
			munmap(m, size);
			break;
		}
		}
	}
	printf("PVGPU-PRESSURE migrated %lu out-of-vram %lu cleaned %lu\n", migrated,
	       out_of_vram, cleaned);
	for (unsigned int i = 0; i < nobj; i++) {
		uint32_t c = 0;

		verify_pread(fds[i], shadow[i], size, "pressure final");
		CHECK(!dev_checksum(fds[i], 0, size, &c) && c == crc32c(shadow[i], size),
		      "pressure checksum %u", i);
		close(fds[i]);
		free(shadow[i]);
	}
	free(buf);
}

#define EXPECT_ERR(call, err, what) do { \
	errno = 0; \
	if ((call) != -1 || errno != (err)) \
		fail("hostile: %s: want errno %d", what, err); \
} while (0)

static void hostile(int dev)
{
	struct pvgpu_create c = { .size = PAGE, .flags = 1 };
	uint8_t b[16] = { 0 };
	struct pvgpu_stats st;
	uint32_t crc;
	int fd;

	EXPECT_ERR(ioctl(dev, PVGPU_IOC_CREATE, &c), EINVAL, "create flags");
	c.flags = 0;
	c.size = 0;
	EXPECT_ERR(ioctl(dev, PVGPU_IOC_CREATE, &c), EINVAL, "create size 0");
	c.size = ~0ull;
	EXPECT_ERR(ioctl(dev, PVGPU_IOC_CREATE, &c), EINVAL, "create size ~0");
	c.size = 1ull << 40;
	EXPECT_ERR(ioctl(dev, PVGPU_IOC_CREATE, &c), EINVAL, "create 1 TiB");
	EXPECT_ERR(ioctl(dev, PVGPU_IOC_CREATE, bad_ptr), EFAULT, "create bad pointer");
	EXPECT_ERR(ioctl(dev, _IO(PVGPU_IOC_MAGIC, 0x7f)), ENOTTY, "unknown device ioctl");
	EXPECT_ERR(ioctl(dev, PVGPU_IOC_CLEAN), ENOTTY, "object ioctl on /dev/pvgpu");

	fd = create(dev, 3 * PAGE + 1); /* rounds up to 4 pages */
	CHECK(fd >= 0, "hostile create");
	CHECK(lseek(fd, 0, SEEK_END) == 4 * PAGE, "size rounds up to pages");
	EXPECT_ERR(ioctl(fd, _IO(PVGPU_IOC_MAGIC, 0x7f)), ENOTTY, "unknown object ioctl");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_CREATE, &c), ENOTTY, "create on an object");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_CLEAN), EINVAL, "clean of SYSTEM");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_EVICT), EALREADY, "evict of SYSTEM");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_STATS, bad_ptr), EFAULT, "stats bad pointer");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_PLACEMENT, bad_ptr), EFAULT, "placement bad pointer");
	EXPECT_ERR(dev_checksum(fd, 4 * PAGE, 1, &crc), EINVAL, "checksum past the end");
	EXPECT_ERR(dev_checksum(fd, 1, ~0ull, &crc), EINVAL, "checksum overflow");
	CHECK(pread(fd, b, sizeof(b), 4 * PAGE) == 0, "pread at end");
	EXPECT_ERR(pwrite(fd, b, sizeof(b), 4 * PAGE), ENOSPC, "pwrite at end");
	EXPECT_ERR(pread(fd, b, sizeof(b), -1), EINVAL, "pread negative offset");
	EXPECT_ERR(pread(fd, bad_ptr, sizeof(b), 0), EFAULT, "pread bad buffer");
	EXPECT_ERR(pwrite(fd, bad_ptr, sizeof(b), 0), EFAULT, "pwrite bad buffer");
	CHECK(mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "hostile: private mmap");
	CHECK(mmap(NULL, 8 * PAGE, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "hostile: mmap past the end");
	CHECK(mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 4 * PAGE) == MAP_FAILED && errno == EINVAL,
	      "hostile: mmap offset past the end");
	CHECK(!ioctl(fd, PVGPU_IOC_MIGRATE), "hostile migrate");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_MIGRATE), EALREADY, "double migrate");
	CHECK(!ioctl(fd, PVGPU_IOC_CLEAN), "hostile clean");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_CLEAN), EALREADY, "double clean");
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_MIGRATE), EALREADY, "migrate of CLEANED");
	/* A partial pwrite into a cleaned object: read-modify-write in VRAM. */
	CHECK(pwrite(fd, "pvgpu", 5, PAGE + 100) == 5, "pwrite into cleaned");
	CHECK(pread(fd, b, 5, PAGE + 100) == 5 && !memcmp(b, "pvgpu", 5), "pread it back");
	CHECK(placement(fd) == PVGPU_PLACEMENT_CLEANED, "still cleaned");

	/* Use after close: a mapping outlives its fd (as with files); the fd does not. */
	uint8_t *m = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	CHECK(m != MAP_FAILED, "hostile mmap");
	CHECK(!ioctl(fd, PVGPU_IOC_STATS, &st), "stats");
	uint64_t live = st.objects_live;

	close(fd);
	EXPECT_ERR(ioctl(fd, PVGPU_IOC_CLEAN), EBADF, "clean after close");
	EXPECT_ERR(pread(fd, b, 1, 0), EBADF, "pread after close");
	if (m != MAP_FAILED) {
		CHECK(!memcmp(m + PAGE + 100, "pvgpu", 5), "mapping after close");
		munmap(m, 4 * PAGE);
	}
	/* The last reference is gone: the device object is destroyed. */
	fd = create(dev, PAGE);
	CHECK(fd >= 0 && !ioctl(fd, PVGPU_IOC_STATS, &st), "stats after destroy");
	CHECK(st.objects_live == live, "objects live %llu, want %llu (one destroyed, one created)",
	      (unsigned long long)st.objects_live, (unsigned long long)live);
	close(fd);
}

static void setup(void)
{
	int fd;

	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	fd = open("/dev/console", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
}

static int load_module(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -1;
	r = syscall(SYS_finit_module, fd, "", 0);
	close(fd);
	return r;
}

static unsigned long env_num(const char *name, unsigned long dflt)
{
	const char *v = getenv(name);

	return v ? strtoul(v, NULL, 0) : dflt;
}

int main(void)
{
	int dev = -1;

	if (getpid() == 1)
		setup();
	crc_init();
	if (load_module("/pvgpu.ko") && errno != EEXIST)
		fail("loading /pvgpu.ko");
	for (int i = 0; i < 100 && dev < 0; i++) {
		dev = open("/dev/pvgpu", O_RDWR | O_CLOEXEC);
		if (dev < 0)
			usleep(10000);
	}
	if (dev < 0) {
		fail("no /dev/pvgpu (is the device attached?)");
	} else {
		unsigned long objs = env_num("PVGPU_OBJECTS", 8);
		unsigned long mib = env_num("PVGPU_MIB", 32);

		printf("PVGPU-RUN workload %lu objects, %lu MiB\n", objs, mib);
		workload(dev, objs, (mib * MIB / objs + PAGE - 1) & ~(PAGE - 1));
		printf("PVGPU-RUN pressure\n");
		pressure(dev, env_num("PVGPU_PRESSURE_OBJECTS", 24), 1 * MIB,
			 env_num("PVGPU_PRESSURE_ROUNDS", 2000));
		printf("PVGPU-RUN hostile\n");
		hostile(dev);
	}
	if (failures)
		printf("PVGPU-RESULT fail: %d failures\n", failures);
	else
		printf("PVGPU-RESULT ok\n");
	fflush(stdout);
	if (getpid() == 1) {
		sync();
		reboot(RB_POWER_OFF);
	}
	return failures ? 1 : 0;
}
