/*
 * testutil: deadlines, temporary files, and cleanup that survives the test process's death.
 *
 * This file owns the reaper: one small process per registering process (its owner), reached
 * over a SOCK_SEQPACKET socket whose writing end is close-on-exec, so daemons and tools the owner
 * starts never hold it. The reaper watches the owner through a pidfd; when the owner has exited,
 * however it exited, or when every copy of the writing end is closed, it stops any registered
 * daemon and removes the registered paths. It must never act earlier: it never kills anything
 * while its owner lives.
 *
 * The removal and the pid-file stop are async-signal-safe so crash handlers can use them too.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_FIRST_MS 2
#define BACKOFF_MAX_MS 50
#define READ_FILE_MAX (64u * 1024 * 1024)
#define RM_MAX_DEPTH 32
#define REAPER_PATH_MAX 512
#define REAPER_MAX_ENTRIES 64
#define PIDFILE_POLL_MS 5

uint64_t testutil_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void testutil_sleep_ms(unsigned ms)
{
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ;
}

void testutil_backoff_start(struct testutil_backoff *backoff, int timeout_ms)
{
    backoff->deadline_ms = testutil_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    backoff->delay_ms = BACKOFF_FIRST_MS;
}

int testutil_backoff_sleep(struct testutil_backoff *backoff)
{
    uint64_t now = testutil_now_ms();
    uint64_t left;

    if (now >= backoff->deadline_ms)
        return 0;
    left = backoff->deadline_ms - now;
    /* Never sleep past the deadline: the caller evaluates its condition once more right there. */
    testutil_sleep_ms(left < backoff->delay_ms ? (unsigned)left : backoff->delay_ms);
    backoff->delay_ms =
        backoff->delay_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff->delay_ms * 2;
    return 1;
}

int wait_until(int (*cond)(void *arg), void *arg, int timeout_ms)
{
    struct testutil_backoff backoff;

    testutil_backoff_start(&backoff, timeout_ms);
    for (;;) {
        if (cond(arg))
            return 1;
        if (!testutil_backoff_sleep(&backoff))
            return 0;
    }
}

/* ---- removal (async-signal-safe) ---- */

static int rm_entry(int parent_fd, const char *name, unsigned depth);

static int rm_children(int dir_fd, unsigned depth)
{
    char buf[1024] __attribute__((aligned(8)));
    int rc = 0;

    for (;;) {
        ssize_t n = getdents64(dir_fd, buf, sizeof(buf));
        ssize_t off = 0;

        if (n < 0)
            return -1;
        if (n == 0)
            return rc;
        while (off < n) {
            const struct dirent64 *entry = (const struct dirent64 *)(buf + off);

            off += entry->d_reclen;
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            if (rm_entry(dir_fd, entry->d_name, depth + 1) < 0)
                rc = -1;
        }
    }
}

static int rm_entry(int parent_fd, const char *name, unsigned depth)
{
    int pass;

    if (unlinkat(parent_fd, name, 0) == 0 || errno == ENOENT)
        return 0;
    /* Linux answers EISDIR for a directory; POSIX allows EPERM. Anything else is a real error. */
    if (errno != EISDIR && errno != EPERM)
        return -1;
    if (depth >= RM_MAX_DEPTH)
        return -1;
    /* A daemon still shutting down may add a file between our scan and rmdir: rescan a few times.
     */
    for (pass = 0; pass < 4; pass++) {
        int dir_fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (dir_fd < 0)
            return errno == ENOENT ? 0 : -1;
        rm_children(dir_fd, depth);
        close(dir_fd);
        if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return 0;
        if (errno != ENOTEMPTY && errno != EEXIST)
            return -1;
    }
    return -1;
}

int testutil_rm_rf(const char *path)
{
    const char *p;

    if (path == NULL || path[0] == '\0')
        return -1;
    for (p = path; *p == '/'; p++)
        ;
    if (*p == '\0')
        return -1; /* "/" or "//": never */
    testutil_cleanup_cancel(path);
    return rm_entry(AT_FDCWD, path, 0);
}

/* ---- stopping a daemon by its pid file (async-signal-safe) ---- */

static size_t format_uint(char *out, unsigned long value)
{
    char digits[24];
    size_t n = 0, i;

    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    for (i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* 1 if process `pid` is alive (not a zombie) and its working directory is `dir`. */
static int pid_has_cwd(pid_t pid, const char *dir, size_t dir_len)
{
    char link[48] = "/proc/";
    char target[PATH_MAX];
    size_t n = strlen(link);
    ssize_t got;

    n += format_uint(link + n, (unsigned long)pid);
    memcpy(link + n, "/cwd", 5);
    /* An exited (zombie) process has no cwd: readlink fails, which counts as gone. */
    got = readlink(link, target, sizeof(target));
    return got >= 0 && (size_t)got == dir_len && memcmp(target, dir, dir_len) == 0;
}

static pid_t read_pidfile(const char *pidfile)
{
    char text[32];
    ssize_t got;
    long pid = 0;
    int fd, i;

    fd = open(pidfile, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    got = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (got <= 0)
        return 0;
    for (i = 0; i < got && text[i] >= '0' && text[i] <= '9' && pid < 10000000; i++)
        pid = pid * 10 + (text[i] - '0');
    return pid > 1 ? (pid_t)pid : 0;
}

static int wait_gone(pid_t pid, const char *dir, size_t dir_len, int timeout_ms)
{
    uint64_t deadline = testutil_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);

    while (pid_has_cwd(pid, dir, dir_len)) {
        if (testutil_now_ms() >= deadline)
            return -1;
        testutil_sleep_ms(PIDFILE_POLL_MS);
    }
    return 0;
}

/* The pid named by `pidfile` if it runs in the file's directory, else 0; `dir` gets that dir. */
static pid_t pidfile_process(const char *pidfile, char *dir, size_t *dir_len)
{
    size_t len;
    pid_t pid;

    if (pidfile == NULL || pidfile[0] != '/')
        return 0;
    len = strlen(pidfile);
    if (len >= PATH_MAX)
        return 0;
    *dir_len = len;
    while (*dir_len > 1 && pidfile[*dir_len - 1] != '/')
        (*dir_len)--;
    if (*dir_len > 1)
        (*dir_len)--; /* drop the slash itself */
    memcpy(dir, pidfile, *dir_len);
    dir[*dir_len] = '\0';
    pid = read_pidfile(pidfile);
    return pid != 0 && pid_has_cwd(pid, dir, *dir_len) ? pid : 0;
}

pid_t testutil_pidfile_process(const char *pidfile)
{
    char dir[PATH_MAX];
    size_t dir_len;

    return pidfile_process(pidfile, dir, &dir_len);
}

int testutil_kill_pidfile(const char *pidfile, int sig, int timeout_ms)
{
    char dir[PATH_MAX];
    size_t dir_len;
    pid_t pid;

    if (pidfile == NULL || pidfile[0] != '/')
        return -1;
    pid = pidfile_process(pidfile, dir, &dir_len);
    if (pid == 0)
        return 0; /* nothing runs there: no file, or a stale one naming someone else */
    kill(pid, sig);
    if (wait_gone(pid, dir, dir_len, timeout_ms) == 0)
        return 0;
    kill(pid, SIGKILL);
    return wait_gone(pid, dir, dir_len, 2000);
}

/* ---- the reaper ---- */

enum reaper_op { REAPER_ADD = 'A', REAPER_CANCEL = 'C' };

struct reaper_msg {
    char op;
    int sig;
    char path[REAPER_PATH_MAX];
    char pidfile[REAPER_PATH_MAX];
};

static int reaper_fd = -1;
static pid_t reaper_owner;

/* Closes every descriptor from 3 up except `keep_a` and `keep_b` (either may be -1). */
static void close_all_but(int keep_a, int keep_b)
{
    int lo = keep_a < keep_b ? keep_a : keep_b;
    int hi = keep_a < keep_b ? keep_b : keep_a;
    unsigned next = 3;

    if (lo >= 3) {
        if ((unsigned)lo > next)
            close_range(next, (unsigned)lo - 1, 0);
        next = (unsigned)lo + 1;
    }
    if (hi >= 3) {
        if ((unsigned)hi > next)
            close_range(next, (unsigned)hi - 1, 0);
        next = (unsigned)hi + 1;
    }
    close_range(next, ~0u, 0);
}

static void reaper_take(struct reaper_msg *entries, size_t *count, struct reaper_msg *msg)
{
    size_t i;

    msg->path[REAPER_PATH_MAX - 1] = '\0';
    msg->pidfile[REAPER_PATH_MAX - 1] = '\0';
    if (msg->op == REAPER_ADD && *count < REAPER_MAX_ENTRIES) {
        entries[(*count)++] = *msg;
    } else if (msg->op == REAPER_CANCEL) {
        for (i = 0; i < *count; i++) {
            if (strcmp(entries[i].path, msg->path) == 0) {
                entries[i] = entries[--(*count)];
                break;
            }
        }
    }
}

/*
 * Runs in the double-forked reaper; never returns, never runs atexit handlers or LSan.
 * `owner_fd` is a pidfd of the owner, or -1 where pidfds do not exist (then only EOF counts).
 */
static void reaper_main(int fd, int owner_fd) __attribute__((noreturn));
static void reaper_main(int fd, int owner_fd)
{
    static struct reaper_msg entries[REAPER_MAX_ENTRIES];
    struct reaper_msg msg;
    struct sigaction dfl, ign;
    sigset_t none;
    size_t count = 0;
    int devnull, sig, owner_gone = 0;

    /* Hold nothing of the owner's: not ctest's output pipes, not other reapers' sockets. */
    close_all_but(fd, owner_fd);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (devnull > 2)
            close(devnull);
    }
    if (chdir("/") < 0) {
        /* Not fatal: the reaper only uses absolute paths. */
    }
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    for (sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    /* A Ctrl-C meant for the tests must not stop their cleanup. */
    sigaction(SIGINT, &ign, NULL);
    sigaction(SIGHUP, &ign, NULL);
    sigaction(SIGQUIT, &ign, NULL);
    sigaction(SIGPIPE, &ign, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_NAME, "omnisync-reaper", 0, 0, 0);

    while (!owner_gone) {
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = owner_fd, .events = POLLIN}};
        ssize_t got;

        if (poll(pfd, owner_fd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /*
         * The owner has exited. Forked children of it (a Check test still running) may hold the
         * socket open for a long time; they do not keep the owner's files alive.
         */
        if (owner_fd >= 0 && (pfd[1].revents & POLLIN))
            owner_gone = 1;
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        got = recv(fd, &msg, sizeof(msg), MSG_DONTWAIT);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got != (ssize_t)sizeof(msg))
            break; /* EOF: every writer is gone */
        reaper_take(entries, &count, &msg);
    }
    /* What the owner sent just before it died still counts. */
    while (recv(fd, &msg, sizeof(msg), MSG_DONTWAIT) == (ssize_t)sizeof(msg))
        reaper_take(entries, &count, &msg);
    /* Newest first: a daemon registered later may live inside an older directory. */
    while (count > 0) {
        struct reaper_msg *entry = &entries[--count];

        if (entry->pidfile[0] != '\0')
            testutil_kill_pidfile(entry->pidfile, entry->sig, 10000);
        rm_entry(AT_FDCWD, entry->path, 0);
    }
    _exit(0);
}

static int reaper_start(void)
{
    int sv[2];
    int status = 0;
    int owner_fd;
    pid_t middle;

    if (reaper_fd >= 0 && reaper_owner == getpid())
        return 0;
    if (reaper_fd >= 0) {
        /* Inherited from the process we were forked from: its reaper is not ours. */
        close(reaper_fd);
        reaper_fd = -1;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        fprintf(stderr, "testutil: socketpair for the reaper: %s\n", strerror(errno));
        return -1;
    }
    /* Opened here, inherited by the reaper: no window in which our pid could be recycled. */
    owner_fd = pidfd_open(getpid(), 0);
    middle = fork();
    if (middle < 0) {
        fprintf(stderr, "testutil: fork for the reaper: %s\n", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        if (owner_fd >= 0)
            close(owner_fd);
        return -1;
    }
    if (middle == 0) {
        pid_t reaper;

        /*
         * A new session before the second fork: Check kills the test's process group when the
         * test ends, and a terminal's Ctrl-C goes to the foreground group; the reaper is in
         * neither. Its parent exits at once, so it is not in the test's process tree either.
         */
        close(sv[0]);
        setsid();
        reaper = fork();
        if (reaper == 0)
            reaper_main(sv[1], owner_fd);
        _exit(reaper < 0 ? 1 : 0);
    }
    close(sv[1]);
    if (owner_fd >= 0)
        close(owner_fd);
    while (waitpid(middle, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "testutil: could not start the reaper process\n");
        close(sv[0]);
        return -1;
    }
    reaper_fd = sv[0];
    reaper_owner = getpid();
    return 0;
}

static int reaper_send(char op, const char *path, const char *pidfile, int sig)
{
    struct reaper_msg msg;

    memset(&msg, 0, sizeof(msg));
    msg.op = op;
    msg.sig = sig;
    memcpy(msg.path, path, strlen(path) + 1);
    if (pidfile != NULL)
        memcpy(msg.pidfile, pidfile, strlen(pidfile) + 1);
    /* MSG_NOSIGNAL: a reaper that died must not take the tests down with SIGPIPE. */
    while (send(reaper_fd, &msg, sizeof(msg), MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

int testutil_cleanup_at_exit(const char *path, const char *pidfile, int sig)
{
    if (path == NULL || path[0] != '/' || strlen(path) >= REAPER_PATH_MAX ||
        (pidfile != NULL && (pidfile[0] != '/' || strlen(pidfile) >= REAPER_PATH_MAX))) {
        fprintf(stderr, "testutil: cleanup paths must be absolute and shorter than %d bytes\n",
                REAPER_PATH_MAX);
        return -1;
    }
    if (reaper_start() < 0)
        return -1;
    if (reaper_send(REAPER_ADD, path, pidfile, sig) < 0) {
        fprintf(stderr, "testutil: registering %s with the reaper: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

void testutil_cleanup_cancel(const char *path)
{
    if (reaper_fd < 0 || reaper_owner != getpid() || path == NULL ||
        strlen(path) >= REAPER_PATH_MAX)
        return;
    reaper_send(REAPER_CANCEL, path, NULL, 0);
}

/* ---- files ---- */

int testutil_mkdtemp(char *out, size_t len)
{
    const char *base = getenv("TMPDIR");
    char pattern[PATH_MAX];
    char resolved[PATH_MAX];

    if (base == NULL || base[0] != '/')
        base = "/tmp";
    if ((size_t)snprintf(pattern, sizeof(pattern), "%s/omnisync-test-XXXXXX", base) >=
        sizeof(pattern)) {
        fprintf(stderr, "testutil: TMPDIR is too long\n");
        return -1;
    }
    if (mkdtemp(pattern) == NULL) {
        fprintf(stderr, "testutil: mkdtemp %s: %s\n", pattern, strerror(errno));
        return -1;
    }
    /* Canonical, so paths compare equal to what the kernel reports (e.g. /proc/<pid>/cwd). */
    if (realpath(pattern, resolved) == NULL || strlen(resolved) >= len) {
        fprintf(stderr, "testutil: %s: cannot resolve it into the caller's buffer\n", pattern);
        rmdir(pattern);
        return -1;
    }
    if (testutil_cleanup_at_exit(resolved, NULL, 0) < 0) {
        rmdir(resolved);
        return -1;
    }
    memcpy(out, resolved, strlen(resolved) + 1);
    return 0;
}

int testutil_write_file(const char *path, const char *content, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t left = strlen(content);
    const char *p = content;
    int fd = -1;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= sizeof(tmp)) {
        fprintf(stderr, "testutil: path too long: %s\n", path);
        return -1;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "testutil: creating %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    while (left > 0) {
        ssize_t n = write(fd, p, left);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        p += n;
        left -= (size_t)n;
    }
    if (fchmod(fd, mode) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    return 0;

fail:
    fprintf(stderr, "testutil: writing %s: %s\n", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

char *testutil_read_file(const char *path)
{
    char *text = NULL;
    size_t cap = 4096, used = 0;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    text = malloc(cap);
    if (text == NULL)
        goto fail;
    for (;;) {
        ssize_t n;

        if (used + 1 == cap) {
            char *bigger;

            if (cap >= READ_FILE_MAX) {
                errno = EFBIG;
                goto fail;
            }
            bigger = realloc(text, cap * 2);
            if (bigger == NULL)
                goto fail;
            text = bigger;
            cap *= 2;
        }
        n = read(fd, text + used, cap - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    text[used] = '\0';
    return text;

fail:
    saved = errno;
    free(text);
    close(fd);
    errno = saved;
    return NULL;
}
