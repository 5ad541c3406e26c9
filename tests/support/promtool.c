/* promtool: see promtool.h. */
#include "promtool.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int promtool_check_metrics(const char *text, size_t len, char *report, size_t reportlen)
{
    char *argv[] = {"promtool", "check", "metrics", NULL};
    posix_spawn_file_actions_t actions;
    size_t used = 0, off = 0;
    int in, out[2], rc, status;
    pid_t pid;
    ssize_t n;

    in = memfd_create("metrics", MFD_CLOEXEC);
    ck_assert_msg(in >= 0, "memfd_create: %s", strerror(errno));
    while (off < len) {
        n = write(in, text + off, len - off);
        ck_assert_msg(n > 0, "write: %s", strerror(errno));
        off += (size_t)n;
    }
    ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    rc = posix_spawnp(&pid, "promtool", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    close(in);
    ck_assert_msg(rc == 0,
                  "cannot run promtool (%s): these tests need it; install Debian's "
                  "\"prometheus\" package, which provides /usr/bin/promtool",
                  strerror(rc));
    while ((n = read(out[0], report + used, reportlen - 1 - used)) > 0)
        used += (size_t)n;
    report[used] = '\0';
    close(out[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

