/*
 * proc: spawning, waiting for and capturing child processes for tests.
 *
 * This file owns every child a test starts through it: it reaps them, kills what still runs in
 * proc_free, and makes sure the kernel kills them when the spawning process dies first
 * (PR_SET_PDEATHSIG, set after any credential change because a change clears it). Between fork
 * and exec the child only makes system calls: no allocation, no stdio, no atexit handlers, so the
 * sanitizers' state in the forked copy is never touched and LSan never runs in it.
 */
#include "proc.h"

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1u << 2)
#endif

#define CAPTURE_MAX (64u * 1024 * 1024)
#define KILL_WAIT_MS 10000

extern char **environ;

/* What the child reports through the exec pipe when it cannot run the program. */
enum child_stage { STAGE_IDS = 1, STAGE_CWD, STAGE_EXEC };

struct child_error {
    int stage;
    int err;
};

static int capture_open(void)
{
    const char *base = getenv("TMPDIR");
    char pattern[PATH_MAX];
    int fd;

    if (base == NULL || base[0] != '/')
        base = "/tmp";
    fd = open(base, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        /* No O_TMPFILE on this file system: a named file, unlinked at once, is just as nameless. */
        if ((size_t)snprintf(pattern, sizeof(pattern), "%s/omnisync-proc-XXXXXX", base) >=
            sizeof(pattern))
            return -1;
        fd = mkostemp(pattern, O_CLOEXEC);
        if (fd < 0)
            return -1;
        unlink(pattern);
    }
    if (fd < 3) {
        /* Keep clear of 0-2, which the child's dup2 calls overwrite. */
        int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);

        close(fd);
        fd = high;
    }
    return fd;
}

static size_t env_key_len(const char *entry)
{
    const char *eq = strchr(entry, '=');

    return eq != NULL ? (size_t)(eq - entry) : strlen(entry);
}

static int env_is_changed(const char *entry, char *const env[])
{
    size_t key = env_key_len(entry);
    size_t i;

    for (i = 0; env != NULL && env[i] != NULL; i++) {
        if (env_key_len(env[i]) == key && strncmp(env[i], entry, key) == 0)
            return 1;
    }
    return 0;
}

/* The pointer array is malloc'd; the strings stay the caller's and environ's. */
static char **env_merge(char *const env[])
{
    size_t n_env = 0, n_changes = 0, used = 0, i;
    char **merged;

    while (environ != NULL && environ[n_env] != NULL)
        n_env++;
    while (env != NULL && env[n_changes] != NULL)
        n_changes++;
    merged = calloc(n_env + n_changes + 1, sizeof(*merged));
    if (merged == NULL)
        return NULL;
    for (i = 0; i < n_env; i++) {
        if (!env_is_changed(environ[i], env))
            merged[used++] = environ[i];
    }
    for (i = 0; i < n_changes; i++) {
        if (strchr(env[i], '=') != NULL)
            merged[used++] = env[i];
    }
    merged[used] = NULL;
    return merged;
}

static void child_fail(int report_fd, int stage) __attribute__((noreturn));
static void child_fail(int report_fd, int stage)
{
    struct child_error error = {.stage = stage, .err = errno};

    while (write(report_fd, &error, sizeof(error)) < 0 && errno == EINTR)
        ;
    _exit(127);
}

/* Runs between fork and exec: system calls only. */
static void child_exec(char *const argv[], char *const envp[], const struct proc_opts *opts,
                       int out_fd, int err_fd, int report_fd, pid_t parent)
    __attribute__((noreturn));
static void child_exec(char *const argv[], char *const envp[], const struct proc_opts *opts,
                       int out_fd, int err_fd, int report_fd, pid_t parent)
{
    struct sigaction dfl;
    sigset_t none;
    int sig, devnull;

    /* Its own group, so proc_stop and proc_free can reach anything it starts in turn. */
    setpgid(0, 0);
    /* Ignored signals and the blocked mask survive exec; the program must start clean. */
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (opts != NULL && opts->set_ids) {
        if (setgroups(0, NULL) < 0 || setgid(opts->gid) < 0 || setuid(opts->uid) < 0)
            child_fail(report_fd, STAGE_IDS);
    }
    /* After the credential change, which clears it. If the parent died already, nobody waits. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent)
        _exit(127);
    if (opts != NULL && opts->cwd != NULL && chdir(opts->cwd) < 0)
        child_fail(report_fd, STAGE_CWD);

    devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
        child_fail(report_fd, STAGE_EXEC);
    if (devnull > 2)
        close(devnull);
    /*
     * Whatever else the test process holds (Check's message file, sockets, reaper ends) must not
     * leak into the program. Close-on-exec rather than close: the report pipe is needed until the
     * exec succeeds.
     */
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
        int fd;

        for (fd = 3; fd < 4096; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (strchr(argv[0], '/') != NULL)
        execve(argv[0], argv, envp);
    else
        execvpe(argv[0], argv, envp);
    child_fail(report_fd, STAGE_EXEC);
}

static const char *stage_text(int stage)
{
    switch (stage) {
    case STAGE_IDS:
        return "cannot switch user/group for";
    case STAGE_CWD:
        return "cannot change directory for";
    default:
        return "cannot execute";
    }
}

int proc_spawn_opts(struct proc *p, char *const argv[], char *const env[],
                    const struct proc_opts *opts)
{
    struct child_error error;
    char **envp = NULL;
    int report[2] = {-1, -1};
    ssize_t got;
    pid_t parent = getpid();
    pid_t pid;

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->out_fd = -1;
    p->err_fd = -1;
    if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0') {
        fprintf(stderr, "proc: nothing to run\n");
        return -1;
    }
    p->out_fd = capture_open();
    p->err_fd = capture_open();
    if (p->out_fd < 0 || p->err_fd < 0) {
        fprintf(stderr, "proc: cannot create capture files for %s: %s\n", argv[0], strerror(errno));
        goto fail;
    }
    envp = env_merge(env);
    if (envp == NULL) {
        fprintf(stderr, "proc: out of memory\n");
        goto fail;
    }
    if (pipe2(report, O_CLOEXEC) < 0) {
        fprintf(stderr, "proc: pipe: %s\n", strerror(errno));
        goto fail;
    }
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "proc: fork for %s: %s\n", argv[0], strerror(errno));
        goto fail;
    }
    if (pid == 0)
        child_exec(argv, envp, opts, p->out_fd, p->err_fd, report[1], parent);

    /* Also from this side, so the group exists before we might signal it. */
    setpgid(pid, pid);
    close(report[1]);
    report[1] = -1;
    free(envp);
    envp = NULL;
    /* EOF means the exec succeeded (the pipe was close-on-exec); a record means it did not. */
    do {
        got = read(report[0], &error, sizeof(error));
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    report[0] = -1;
    p->pid = pid;
    if (got == (ssize_t)sizeof(error)) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        fprintf(stderr, "proc: %s %s: %s\n", stage_text(error.stage), argv[0], strerror(error.err));
        goto fail;
    }
    snprintf(p->out_path, sizeof(p->out_path), "/proc/%d/fd/%d", (int)parent, p->out_fd);
    snprintf(p->err_path, sizeof(p->err_path), "/proc/%d/fd/%d", (int)parent, p->err_fd);
    return 0;

fail:
    free(envp);
    if (report[0] >= 0)
        close(report[0]);
    if (report[1] >= 0)
        close(report[1]);
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->out_fd = -1;
    p->err_fd = -1;
    return -1;
}

int proc_spawn(struct proc *p, char *const argv[], char *const env[])
{
    return proc_spawn_opts(p, argv, env, NULL);
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Reaps the child if it has exited (blocking unless WNOHANG); 1 once it is reaped. */
static int reap(struct proc *p, int options)
{
    int status;
    pid_t got;

    if (p->exited || p->pid <= 0)
        return 1;
    do {
        got = waitpid(p->pid, &status, options);
    } while (got < 0 && errno == EINTR);
    if (got == p->pid) {
        p->status = status;
        p->exited = 1;
        return 1;
    }
    if (got < 0) {
        /* Someone else reaped it (SIGCHLD ignored, or a stray wait()): it is gone either way. */
        fprintf(stderr, "proc: pid %d was reaped elsewhere: %s\n", (int)p->pid, strerror(errno));
        p->status = 255 << 8;
        p->exited = 1;
        return 1;
    }
    return 0;
}

/* Blocks until the child exits or the deadline passes, without polling when pidfds exist. */
static void sleep_until_exit(struct proc *p, int timeout_ms)
{
    struct pollfd pfd;
    int fd;

    /* The pid cannot be recycled here: the child is not reaped yet. */
    fd = pidfd_open(p->pid, 0);
    if (fd < 0) {
        testutil_sleep_ms(timeout_ms < 20 ? (unsigned)timeout_ms : 20);
        return;
    }
    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    while (poll(&pfd, 1, timeout_ms) < 0 && errno == EINTR)
        ;
    close(fd);
}

int proc_wait(struct proc *p, int timeout_ms)
{
    uint64_t deadline;

    if (p->out_path[0] == '\0')
        return -1;
    if (timeout_ms < 0) {
        reap(p, 0);
        return exit_code(p->status);
    }
    deadline = testutil_now_ms() + (uint64_t)timeout_ms;
    while (!reap(p, WNOHANG)) {
        uint64_t now = testutil_now_ms();

        if (now >= deadline)
            return -1;
        sleep_until_exit(p, (int)(deadline - now));
    }
    return exit_code(p->status);
}

int proc_signal(struct proc *p, int sig)
{
    if (p->out_path[0] == '\0' || p->exited || p->pid <= 0)
        return -1;
    return kill(p->pid, sig) == 0 ? 0 : -1;
}

/* Only while unreaped: afterwards the pid (and so the group id) may belong to someone else. */
static void kill_group(struct proc *p, int sig)
{
    if (p->exited || p->pid <= 0)
        return;
    if (kill(-p->pid, sig) < 0)
        kill(p->pid, sig);
}

int proc_stop(struct proc *p, int timeout_ms)
{
    int code;

    if (p->out_path[0] == '\0')
        return -1;
    if (p->exited)
        return exit_code(p->status);
    kill(p->pid, SIGTERM);
    code = proc_wait(p, timeout_ms);
    if (code >= 0)
        return code;
    kill_group(p, SIGKILL);
    code = proc_wait(p, KILL_WAIT_MS);
    if (code < 0)
        fprintf(stderr, "proc: pid %d survived SIGKILL for %d ms\n", (int)p->pid, KILL_WAIT_MS);
    return code;
}

static char *capture_read(int fd)
{
    struct stat st;
    size_t size, used = 0;
    char *text;

    if (fd < 0 || fstat(fd, &st) < 0)
        st.st_size = 0;
    size = (size_t)st.st_size;
    if (size > CAPTURE_MAX)
        size = CAPTURE_MAX;
    text = malloc(size + 1);
    if (text == NULL)
        return NULL;
    while (used < size) {
        ssize_t n = pread(fd, text + used, size - used, (off_t)used);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
    }
    text[used] = '\0';
    return text;
}

char *proc_stdout(struct proc *p)
{
    return capture_read(p->out_path[0] != '\0' ? p->out_fd : -1);
}

char *proc_stderr(struct proc *p)
{
    return capture_read(p->out_path[0] != '\0' ? p->err_fd : -1);
}

int proc_stderr_contains(struct proc *p, const char *needle)
{
    char *text = proc_stderr(p);
    int found = text != NULL && strstr(text, needle) != NULL;

    free(text);
    return found;
}

int proc_wait_stderr(struct proc *p, const char *needle, int timeout_ms)
{
    struct testutil_backoff backoff;

    if (p->out_path[0] == '\0')
        return 0;
    testutil_backoff_start(&backoff, timeout_ms);
    for (;;) {
        /* Reap first: once it has exited, what we read next is all there will ever be. */
        int gone = reap(p, WNOHANG);

        if (proc_stderr_contains(p, needle))
            return 1;
        if (gone || !testutil_backoff_sleep(&backoff))
            return 0;
    }
}

static void dump_lines(const char *label, const char *stream, const char *text)
{
    const char *line = text;

    while (line != NULL && *line != '\0') {
        const char *end = strchr(line, '\n');
        int n = end != NULL ? (int)(end - line) : (int)strlen(line);

        fprintf(stderr, "[%s %s] %.*s\n", label, stream, n, line);
        line = end != NULL ? end + 1 : NULL;
    }
}

void proc_dump(struct proc *p, const char *label)
{
    char *out = proc_stdout(p);
    char *err = proc_stderr(p);

    dump_lines(label, "out", out);
    dump_lines(label, "err", err);
    free(out);
    free(err);
}

void proc_free(struct proc *p)
{
    if (p->out_path[0] == '\0')
        return;
    if (!p->exited && p->pid > 0) {
        kill_group(p, SIGKILL);
        reap(p, 0);
    }
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->out_fd = -1;
    p->err_fd = -1;
}

int proc_run_opts(char *const argv[], char *const env[], const struct proc_opts *opts,
                  int timeout_ms, char **out, char **err)
{
    struct proc p;
    int code;

    if (out != NULL)
        *out = NULL;
    if (err != NULL)
        *err = NULL;
    if (proc_spawn_opts(&p, argv, env, opts) < 0)
        return -1;
    code = proc_wait(&p, timeout_ms);
    if (code < 0 && !p.exited) {
        fprintf(stderr, "proc: %s did not finish within %d ms; killed\n", argv[0], timeout_ms);
        kill_group(&p, SIGKILL);
        reap(&p, 0);
    }
    if (out != NULL)
        *out = proc_stdout(&p);
    if (err != NULL)
        *err = proc_stderr(&p);
    proc_free(&p);
    return code;
}

int proc_run(char *const argv[], char *const env[], int timeout_ms, char **out, char **err)
{
    return proc_run_opts(argv, env, NULL, timeout_ms, out, err);
}

/* The last `n` lines of the daemon's log, for failure messages (a debug log is long). */
void proc_dump_tail(struct proc *p, const char *label, int n)
{
    char *err = proc_stderr(p);
    if (err == NULL)
        return;
    size_t len = strlen(err);
    const char *start = err + len;
    for (int lines = 0; start > err && lines <= n;) {
        start--;
        if (*start == '\n' && start + 1 < err + len)
            lines++;
    }
    fprintf(stderr, "---- %s: last %d lines of its log ----\n%s\n", label, n, start);
    free(err);
}

/* How many lines of the daemon's log contain `a` (and `b`, unless NULL). */
int proc_count_lines(struct proc *p, const char *a, const char *b)
{
    char *err = proc_stderr(p);
    int n = 0;
    if (err == NULL)
        return -1;
    for (char *line = strtok(err, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL))
            n++;
    }
    free(err);
    return n;
}

