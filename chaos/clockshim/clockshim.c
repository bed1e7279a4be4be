/*
 * clockshim: an LD_PRELOAD library that shifts a process's wall clock, and only that,
 * by an offset the chaos harness can change while the process runs.
 *
 * Shifted: clock_gettime(CLOCK_REALTIME) and clock_gettime(CLOCK_REALTIME_COARSE),
 * gettimeofday(), time(). Untouched: every other clock (CLOCK_MONOTONIC, _RAW,
 * _COARSE, CLOCK_BOOTTIME, CPU clocks), and clock_nanosleep()/nanosleep(), which is
 * why Python's time.sleep() (a CLOCK_MONOTONIC clock_nanosleep) keeps working where
 * libfaketime 0.9.10, which also fakes monotonic clocks and sleeps, breaks it.
 *
 * The offset: $COORD_CLOCKSHIM_FILE names a file of at least 8 bytes whose first 8
 * hold a signed 64-bit nanosecond offset in native byte order. The file is mapped
 * shared and read on every call, so the harness changes the offset by storing a new
 * value (one aligned 8-byte store: single-copy atomic on x86-64 and aarch64) without
 * restarting the process. No variable, no readable file, or a file shorter than
 * 8 bytes: offset 0 (the real clock).
 *
 * Limits: only calls through the dynamic linker are shifted (a static binary, a raw
 * syscall, or code that reads the vDSO itself sees the real clock); calls made before
 * this library's constructor ran (other libraries' constructors) see the real clock;
 * file timestamps (stat, utime) and kernel timers on CLOCK_REALTIME (timerfd,
 * clock_nanosleep with TIMER_ABSTIME on CLOCK_REALTIME) are not shifted.
 *
 * Built by scripts/bootstrap: cc -shared -fPIC -O2 -o .venv/clockshim.so clockshim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime;
static const volatile int64_t *offset_ns; /* NULL: no offset file */

static void resolve(void) {
    if (real_clock_gettime == NULL) {
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    }
}

__attribute__((constructor)) static void clockshim_init(void) {
    resolve();
    const char *path = getenv("COORD_CLOCKSHIM_FILE");
    if (path == NULL || path[0] == '\0') {
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    struct stat st;
    /* Mapping past the end of a short file would fault (SIGBUS) on the first read. */
    if (fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof(int64_t)) {
        void *p = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            offset_ns = (const volatile int64_t *)p;
        }
    }
    close(fd); /* the mapping stays valid */
}

static int64_t current_offset_ns(void) {
    const volatile int64_t *p = offset_ns;
    return p == NULL ? 0 : __atomic_load_n(p, __ATOMIC_RELAXED);
}

static int is_wall_clock(clockid_t id) {
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE;
}

/* ts += ns, keeping 0 <= tv_nsec < 1e9. */
static void shift(struct timespec *ts, int64_t ns) {
    int64_t sec = ns / 1000000000LL;
    int64_t nsec = ts->tv_nsec + ns % 1000000000LL;
    if (nsec < 0) {
        nsec += 1000000000LL;
        sec -= 1;
    } else if (nsec >= 1000000000LL) {
        nsec -= 1000000000LL;
        sec += 1;
    }
    ts->tv_sec += (time_t)sec;
    ts->tv_nsec = (long)nsec;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    resolve();
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && is_wall_clock(id)) { /* rc 0: ts was written */
        shift(ts, current_offset_ns());
    }
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz; /* obsolete; glibc ignores it too */
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) { /* tv is declared non-null, as in glibc */
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = (suseconds_t)(ts.tv_nsec / 1000);
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return (time_t)-1;
    }
    if (out != NULL) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
