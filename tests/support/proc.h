/*
 * proc: run the real binaries (omnisync, fake-omnidesk, PostgreSQL's tools) from tests.
 *
 * A spawned child gets stdin from /dev/null, stdout and stderr into capture files, its own
 * process group, and PR_SET_PDEATHSIG(SIGKILL): when the test process (or the Check child that
 * spawned it) ends, however it ends, the child is killed. The capture files are nameless
 * (O_TMPFILE, or unlinked at once), so nothing is left in /tmp even when a test dies; out_path and
 * err_path name them through /proc/<pid>/fd/<n> for as long as `struct proc` is alive.
 *
 * Spawn from the thread that will outlive the child: the parent-death signal follows the thread
 * that forked. Nothing here allocates between fork and exec.
 */
#ifndef OMNISYNC_PROC_H
#define OMNISYNC_PROC_H

#include <sys/types.h>

struct proc {
    pid_t pid;
    int status;         /* raw waitpid status, valid once exited */
    int exited;         /* 1 once the child has been reaped */
    char out_path[512]; /* "" when the struct holds no child */
    char err_path[512];
    int out_fd; /* capture files, read with pread; owned by the struct */
    int err_fd;
};

/* Extra settings for proc_spawn_opts(). */
struct proc_opts {
    const char *cwd; /* working directory of the child; NULL keeps ours */
    int set_ids;     /* nonzero: the child switches to uid/gid (needs root) before exec */
    uid_t uid;
    gid_t gid;
};

/*
 * Spawns argv[0] (a path; a bare name is looked up in PATH) with argv and the current environment
 * changed by `env`: NULL-terminated "K=V" entries add or override, a bare "K" removes K; `env`
 * may be NULL. Nothing is copied that outlives the call. 0, or -1 with a message on stderr (also
 * when the exec itself fails); on failure `p` holds nothing and proc_free(p) is a no-op.
 */
int proc_spawn(struct proc *p, char *const argv[], char *const env[]);
int proc_spawn_opts(struct proc *p, char *const argv[], char *const env[],
                    const struct proc_opts *opts);

/*
 * Waits up to timeout_ms (negative: no deadline) for the child to exit. Returns its exit code,
 * 128+signal if a signal ended it, or -1 on timeout (the child keeps running).
 */
int proc_wait(struct proc *p, int timeout_ms);

/* Sends `sig` to the child itself (not its group). 0, or -1 if it has already exited. */
int proc_signal(struct proc *p, int sig);

/* SIGTERM, then after timeout_ms SIGKILL to the child's whole group; returns as proc_wait. */
int proc_stop(struct proc *p, int timeout_ms);

/* Everything captured so far, NUL-terminated, malloc'd (caller frees); NULL only without memory. */
char *proc_stdout(struct proc *p);
char *proc_stderr(struct proc *p);

/* 1 if the captured stderr contains `needle`, else 0. */
int proc_stderr_contains(struct proc *p, const char *needle);

/*
 * Polls the captured stderr until it contains `needle` (1) or the deadline passes (0). Returns 0
 * early once the child has exited without writing it: no more output can come.
 */
int proc_wait_stderr(struct proc *p, const char *needle, int timeout_ms);

/* Writes the captured stdout and stderr to our stderr, each line prefixed with `label`. */
void proc_dump(struct proc *p, const char *label);

/* Kills the child's group if it still runs, reaps it, closes the capture files. Idempotent. */
void proc_free(struct proc *p);
/* The last `n` lines of the captured stderr, on stderr, for failure messages. */
void proc_dump_tail(struct proc *p, const char *label, int n);
/* How many lines of the captured stderr contain `a` (and `b`, unless NULL); -1 on error. */
int proc_count_lines(struct proc *p, const char *a, const char *b);

/*
 * Runs to completion with a deadline and captures the output (malloc'd into *out and *err; either
 * pointer may be NULL). Returns the exit code as proc_wait, or -1 on timeout (the child's group is
 * killed; output captured until then is still returned) or if it could not be started.
 */
int proc_run(char *const argv[], char *const env[], int timeout_ms, char **out, char **err);
int proc_run_opts(char *const argv[], char *const env[], const struct proc_opts *opts,
                  int timeout_ms, char **out, char **err);

#endif
