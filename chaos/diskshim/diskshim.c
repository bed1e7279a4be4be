/*
 * diskshim: an LD_PRELOAD library that makes a process's disk flushes slow, by a delay
 * the chaos harness can change while the process runs (a slow or overloaded disk).
 *
 * Delayed: fsync() and fdatasync(), each call by the current delay, on the calling
 * thread only. The delay is a real sleep (clock_nanosleep on CLOCK_MONOTONIC, to an
 * absolute deadline, resumed after a signal: the call never fails with EINTR because of
 * it) taken BEFORE the real function is called, and the real function's result and
 * errno are returned: durability is unchanged, the flush only returns later. (It
 * flushes at the end of the delay, so it may also cover writes made during it: as a
 * real flush may; a caller must not count on that, and coord does not.) Python's
 * os.fsync and os.fdatasync call these libc functions (and release the GIL around
 * them), so a coord node's journal sync thread, its term/vote file and directory
 * fsyncs, and its snapshot writes are all delayed.
 *
 * Not delayed: write()/pwrite() and everything else that only fills the page cache;
 * sync_file_range() (neither Python nor coord calls it: os has no binding), sync(),
 * syncfs(), msync(), writes to files opened O_SYNC/O_DSYNC, io_uring and aio; reads.
 * Clocks and sleeps are untouched (this library defines no clock function: it coexists
 * with chaos/clockshim in one LD_PRELOAD).
 *
 * The delay: $COORD_DISKSHIM_FILE names a file of at least 8 bytes whose first 8 hold a
 * signed 64-bit nanosecond delay in native byte order. The file is mapped shared and
 * read on every call (one atomic 8-byte load; the harness stores with one aligned
 * 8-byte store: single-copy atomic on x86-64 and aarch64), so the harness changes the
 * delay without restarting the process; a call already asleep keeps the delay it read.
 * No variable, no readable file, a file shorter than 8 bytes, or a delay <= 0: no
 * delay (the real function is called at once).
 *
 * Counters: if the file is at least 24 bytes and writable, the next two 8-byte words
 * count the calls this library intercepted (bytes 8-15) and those it delayed (16-23),
 * each raised by one atomic add per call (every process sharing the file adds to it),
 * so the harness can see that a fault took effect without timing anything. A shorter
 * or read-only file: the delay works, no counting.
 *
 * Limits: only calls through the dynamic linker are delayed (a static binary, a raw
 * syscall, or a library's internal call to its own fsync is not); calls made before
 * this library's constructor ran are not delayed; the disk itself is not slowed (other
 * processes' flushes, and writeback, run at full speed); a kill -9 of a delayed process
 * loses nothing the page cache holds (the kernel still writes it back): this slows
 * flushes, it does not lose unflushed writes as a power cut would.
 *
 * Built by scripts/bootstrap: cc -shared -fPIC -O2 -o .venv/diskshim.so diskshim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static sync_fn real_fsync;
static sync_fn real_fdatasync;
static const volatile int64_t *delay_ns; /* NULL: no delay file */
static volatile int64_t *counters;       /* NULL: no counting; else [calls, delayed] */

/* dlsym once; a second thread resolving at the same time stores the same pointer. */
static sync_fn resolve(sync_fn *slot, const char *name) {
    sync_fn fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (fn == NULL) {
        fn = (sync_fn)dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

__attribute__((constructor)) static void diskshim_init(void) {
    resolve(&real_fsync, "fsync");
    resolve(&real_fdatasync, "fdatasync");
    const char *path = getenv("COORD_DISKSHIM_FILE");
    if (path == NULL || path[0] == '\0') {
        return;
    }
    int writable = 1;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        writable = 0;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return;
        }
    }
    struct stat st;
    /* Mapping past the end of a short file would fault (SIGBUS) on the first read. */
    if (fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof(int64_t)) {
        if (writable && st.st_size >= (off_t)(3 * sizeof(int64_t))) {
            void *p = mmap(NULL, 3 * sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) {
                delay_ns = (const volatile int64_t *)p;
                counters = (volatile int64_t *)p + 1;
            }
        }
        if (delay_ns == NULL) {
            void *p = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) {
                delay_ns = (const volatile int64_t *)p;
            }
        }
    }
    close(fd); /* the mapping stays valid */
}

static int64_t current_delay_ns(void) {
    const volatile int64_t *p = delay_ns;
    return p == NULL ? 0 : __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void count(int which) {
    volatile int64_t *c = counters;
    if (c != NULL) {
        __atomic_fetch_add(&c[which], 1, __ATOMIC_RELAXED);
    }
}

/* Sleep the current delay (if any) on CLOCK_MONOTONIC, to an absolute deadline so that
 * signals (EINTR) neither cut it short nor stretch it. errno is left as it was. */
static void delay(void) {
    count(0);
    int64_t ns = current_delay_ns();
    if (ns <= 0) {
        return;
    }
    count(1);
    int saved = errno;
    struct timespec until;
    if (clock_gettime(CLOCK_MONOTONIC, &until) == 0) {
        int64_t nsec = until.tv_nsec + ns % 1000000000LL;
        until.tv_sec += (time_t)(ns / 1000000000LL + nsec / 1000000000LL);
        until.tv_nsec = (long)(nsec % 1000000000LL);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
        }
    }
    errno = saved;
}

int fsync(int fd) {
    sync_fn fn = resolve(&real_fsync, "fsync");
    if (fn == NULL) { /* no libc below us: cannot happen in a dynamically linked process */
        errno = ENOSYS;
        return -1;
    }
    delay();
    return fn(fd);
}

int fdatasync(int fd) {
    sync_fn fn = resolve(&real_fdatasync, "fdatasync");
    if (fn == NULL) {
        errno = ENOSYS;
        return -1;
    }
    delay();
    return fn(fd);
}
