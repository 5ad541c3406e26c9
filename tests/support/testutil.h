/*
 * testutil: small helpers every test binary shares — deadlines and polling, temporary files and
 * directories, and the guarantee that what a test creates is gone when the test process ends.
 *
 * Tests never sleep and hope: they poll a condition with a short, growing delay (2 ms doubling to
 * 50 ms) until it holds or a deadline passes (wait_until, WAIT_UNTIL).
 *
 * Check runs each test in a forked child and ends a failed one with _exit(), so atexit handlers
 * are not enough to clean up. testutil_cleanup_at_exit() hands a path (and optionally a daemon's
 * pid file) to a tiny reaper process, double-forked into its own session, that waits for the
 * registering process to end — normally, by _exit, by a signal or by SIGKILL, even while forked
 * children of it still run — and then stops the daemon and removes the path. testutil_mkdtemp()
 * registers its directories this way.
 *
 * testutil_rm_rf() and testutil_kill_pidfile() are async-signal-safe, so crash handlers may call
 * them. Nothing here allocates in a forked child or runs after a credential change.
 */
#ifndef OMNISYNC_TESTUTIL_H
#define OMNISYNC_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Milliseconds on CLOCK_MONOTONIC; only differences mean anything. Async-signal-safe. */
uint64_t testutil_now_ms(void);

/* Sleeps `ms` milliseconds, resuming after signal interruptions. Async-signal-safe. */
void testutil_sleep_ms(unsigned ms);

/*
 * Polls cond(arg) — first at once, then after 2, 4, 8 ... ms, capped at 50 ms — until it returns
 * nonzero or `timeout_ms` has passed; it is evaluated one last time at the deadline. Returns 1 if
 * it became true, 0 on timeout. `arg` is passed through untouched.
 */
int wait_until(int (*cond)(void *arg), void *arg, int timeout_ms);

/* The backoff state behind WAIT_UNTIL; usable directly for hand-written polling loops. */
struct testutil_backoff {
    uint64_t deadline_ms;
    unsigned delay_ms;
};
void testutil_backoff_start(struct testutil_backoff *backoff, int timeout_ms);
/* Sleeps the next step (never past the deadline) and returns 1; returns 0 once it has passed. */
int testutil_backoff_sleep(struct testutil_backoff *backoff);

/*
 * WAIT_UNTIL(expr, timeout_ms): a statement-expression that evaluates `expr` with the same backoff
 * as wait_until() until it is true or the deadline passes, and yields 1 or 0:
 *     ck_assert_msg(WAIT_UNTIL(count_rows(c) == 5, 5000), "rows never arrived");
 */
#define WAIT_UNTIL(expr, timeout_ms)                                                               \
    __extension__({                                                                                \
        struct testutil_backoff wait_until_backoff_;                                               \
        int wait_until_ok_;                                                                        \
        testutil_backoff_start(&wait_until_backoff_, (timeout_ms));                                \
        while (!(wait_until_ok_ = !!(expr)) && testutil_backoff_sleep(&wait_until_backoff_))       \
            ;                                                                                      \
        wait_until_ok_;                                                                            \
    })

/*
 * Creates a fresh 0700 directory $TMPDIR/omnisync-test-XXXXXX (or /tmp/...) and writes its
 * canonical path into `out`. The directory is registered with testutil_cleanup_at_exit(), so it
 * disappears when the calling process ends even if the test never removes it. 0 or -1 (message
 * on stderr).
 */
int testutil_mkdtemp(char *out, size_t len);

/*
 * Writes `content` to `path` atomically (a temporary file in the same directory, then rename), so
 * a daemon that rereads the file on SIGHUP never sees half of it. The file gets exactly `mode`
 * (the umask does not apply). 0 or -1 (message on stderr).
 */
int testutil_write_file(const char *path, const char *content, mode_t mode);

/*
 * Reads a whole file (at most 64 MiB) into a NUL-terminated buffer the caller frees. NULL, with
 * errno set and no message, if it cannot be read: callers often poll for a file to appear.
 */
char *testutil_read_file(const char *path);

/*
 * Removes `path` recursively without following symlinks; a missing path is success. Also cancels
 * a testutil_cleanup_at_exit() registration of exactly this path. Refuses "" and "/". 0 or -1.
 * Async-signal-safe (no allocation, no stdio).
 */
int testutil_rm_rf(const char *path);

/*
 * When the calling process ends, however it ends, the reaper first stops the process whose pid is
 * the first line of `pidfile` (if `pidfile` is not NULL; see testutil_kill_pidfile, with `sig`)
 * and then removes `path` recursively. Registrations are per process: a forked child that
 * registers gets its own reaper. Copies both strings. 0 or -1 (message on stderr).
 */
int testutil_cleanup_at_exit(const char *path, const char *pidfile, int sig);

/* Forgets a registration of exactly `path`; unknown paths are ignored. Async-signal-safe. */
void testutil_cleanup_cancel(const char *path);

/*
 * Stops the daemon whose pid is the first line of `pidfile` (PostgreSQL's postmaster.pid, for
 * one): sends `sig`, waits up to `timeout_ms` for it to exit or to remove the pid file, then sends
 * SIGKILL and waits up to 2 s more. The pid is signalled only if that process's working directory
 * is the pid file's directory, so a stale file never gets an unrelated, recycled pid killed.
 * Returns 0 if no such process runs any more (including: no pid file), -1 if it survived.
 * Async-signal-safe.
 */
int testutil_kill_pidfile(const char *pidfile, int sig, int timeout_ms);

/*
 * The pid in the first line of `pidfile` (absolute path) if that process is alive and works in
 * the pid file's directory, else 0 — a stale file after a crash gives 0. Async-signal-safe.
 */
pid_t testutil_pidfile_process(const char *pidfile);

#endif
