/*
 * test_rig: the test rig itself — the throwaway PostgreSQL cluster (pgrig), child processes
 * (proc) and polling/file helpers (testutil) that every integration test stands on.
 *
 * Cleanup is tested from the outside: the binary re-runs itself in a helper mode
 * (--child-start-cluster <how>) that starts a cluster, prints where it lives and then ends in the
 * named way; the test then checks that the directory and the postmaster are gone.
 */
#include "pgrig.h"
#include "proc.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELPER_FLAG "--child-start-cluster"

static char self_exe[PATH_MAX];

static int path_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

/* 1 while `pid` is a live (non-zombie) process whose working directory is `dir`. */
static int process_in_dir(pid_t pid, const char *dir)
{
    char link[64], target[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/%d/cwd", (int)pid);
    n = readlink(link, target, sizeof(target) - 1);
    if (n < 0)
        return 0;
    target[n] = '\0';
    return strcmp(target, dir) == 0;
}

static pid_t postmaster_pid(const char *data_dir)
{
    char path[PATH_MAX];
    char *text;
    pid_t pid;

    snprintf(path, sizeof(path), "%s/postmaster.pid", data_dir);
    text = testutil_read_file(path);
    if (text == NULL)
        return 0;
    pid = (pid_t)atol(text);
    free(text);
    return pid;
}

/* ---- pgrig ---- */

START_TEST(test_cluster_up)
{
    struct pgrig *pg = pgrig_global();
    PGconn *conn;
    char *fsync_setting;

    ck_assert_ptr_nonnull(pg);
    ck_assert(pg->dir[0] == '/');
    ck_assert_str_eq(pg->socket_dir, pg->dir);
    conn = pgrig_connect(pg, "postgres");
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT 1"), 1);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT current_setting('server_version_num')::int / "
                                           "10000"),
                     15);
    fsync_setting = pgrig_query_text(conn, "SHOW fsync");
    ck_assert_str_eq(fsync_setting, "off");
    free(fsync_setting);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT current_user = 'postgres'"), 1);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT 1 WHERE false"), LLONG_MIN);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT NULL::int"), LLONG_MIN);
    ck_assert_ptr_null(pgrig_query_text(conn, "SELECT NULL::text"));
    ck_assert_int_eq(pgrig_exec(conn, "SELEKT 1"), -1);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT no_such_column"), LLONG_MIN);
    PQfinish(conn);
}
END_TEST

START_TEST(test_databases_independent)
{
    struct pgrig *pg = pgrig_global();
    char conninfo_a[1024], conninfo_b[1024], expected[1024];
    PGconn *a, *b;
    char *found;

    ck_assert_ptr_nonnull(pg);
    ck_assert_int_eq(pgrig_createdb(pg, "rig_a", conninfo_a, sizeof(conninfo_a)), 0);
    ck_assert_int_eq(pgrig_createdb(pg, "rig_b", conninfo_b, sizeof(conninfo_b)), 0);
    snprintf(expected, sizeof(expected), "host=%s port=%d dbname=rig_a user=postgres",
             pg->socket_dir, pg->port);
    ck_assert_str_eq(conninfo_a, expected);

    a = PQconnectdb(conninfo_a);
    b = PQconnectdb(conninfo_b);
    ck_assert_int_eq(PQstatus(a), CONNECTION_OK);
    ck_assert_int_eq(PQstatus(b), CONNECTION_OK);
    ck_assert_int_eq(pgrig_exec(a, "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)"), 0);
    ck_assert_int_eq(pgrig_query_int(a, "SELECT count(*) FROM t"), 2);
    ck_assert_ptr_null(pgrig_query_text(b, "SELECT to_regclass('t')::text"));
    found = pgrig_query_text(a, "SELECT to_regclass('t')::text");
    ck_assert_str_eq(found, "t");
    free(found);
    PQfinish(b);

    /* Creating it again starts from scratch, even with a connection still open. */
    ck_assert_int_eq(pgrig_createdb(pg, "rig_a", NULL, 0), 0);
    PQfinish(a);
    a = pgrig_connect(pg, "rig_a");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(pgrig_query_text(a, "SELECT to_regclass('t')::text"));
    ck_assert_int_eq(pgrig_execf(a, "SELECT %d", 42), 0);
    PQfinish(a);
}
END_TEST

START_TEST(test_server_stop_start)
{
    struct pgrig *pg = pgrig_global();
    PGconn *conn;
    uint64_t started;

    ck_assert_ptr_nonnull(pg);
    ck_assert_int_eq(pgrig_createdb(pg, "rig_stop", NULL, 0), 0);
    conn = pgrig_connect(pg, "rig_stop");
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_exec(conn, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"), 0);
    PQfinish(conn);

    started = testutil_now_ms();
    ck_assert_int_eq(pgrig_server_stop(pg, "fast"), 0);
    fprintf(stderr, "test_rig: pg_ctl stop -m fast took %llu ms\n",
            (unsigned long long)(testutil_now_ms() - started));
    ck_assert_int_eq(pgrig_ping(pg), 0);
    ck_assert_ptr_null(pgrig_connect(pg, "rig_stop"));

    started = testutil_now_ms();
    ck_assert_int_eq(pgrig_server_start(pg), 0);
    fprintf(stderr, "test_rig: pg_ctl start took %llu ms\n",
            (unsigned long long)(testutil_now_ms() - started));
    ck_assert_int_eq(pgrig_ping(pg), 1);
    conn = pgrig_connect(pg, "rig_stop");
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT v FROM kept"), 7);
    PQfinish(conn);
}
END_TEST

START_TEST(test_restart_immediate)
{
    struct pgrig *pg = pgrig_global();
    PGconn *conn;
    pid_t before, after;
    uint64_t started;

    ck_assert_ptr_nonnull(pg);
    ck_assert_int_eq(pgrig_createdb(pg, "rig_restart", NULL, 0), 0);
    conn = pgrig_connect(pg, "rig_restart");
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_exec(conn, "CREATE TABLE c (v int); INSERT INTO c VALUES (1)"), 0);
    before = postmaster_pid(pg->data_dir);

    started = testutil_now_ms();
    ck_assert_int_eq(pgrig_restart(pg, "immediate"), 0);
    fprintf(stderr, "test_rig: pg_ctl restart -m immediate took %llu ms\n",
            (unsigned long long)(testutil_now_ms() - started));
    after = postmaster_pid(pg->data_dir);
    ck_assert_int_ne(before, after);
    ck_assert(process_in_dir(after, pg->data_dir));

    /* The old session died with the old server; committed rows survived the crash restart. */
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT 1"), LLONG_MIN);
    PQfinish(conn);
    conn = pgrig_connect(pg, "rig_restart");
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT count(*) FROM c"), 1);
    PQfinish(conn);
}
END_TEST

START_TEST(test_global_recovers_stopped_server)
{
    struct pgrig *pg = pgrig_global();

    ck_assert_ptr_nonnull(pg);
    /* A test that stops the server and fails before starting it again must not break the next. */
    ck_assert_int_eq(pgrig_server_stop(pg, "immediate"), 0);
    ck_assert_int_eq(pgrig_ping(pg), 0);
    ck_assert_ptr_eq(pgrig_global(), pg);
    ck_assert_int_eq(pgrig_ping(pg), 1);
    /* Not the owner here: stopping the shared cluster from a test child is refused. */
    ck_assert_int_eq(pgrig_stop(pg), -1);
    ck_assert(path_exists(pg->dir));
}
END_TEST

START_TEST(test_global_recovers_killed_postmaster)
{
    struct pgrig *pg = pgrig_global();
    char pidfile[PATH_MAX];
    PGconn *conn;
    pid_t pid;

    ck_assert_ptr_nonnull(pg);
    snprintf(pidfile, sizeof(pidfile), "%s/postmaster.pid", pg->data_dir);
    pid = testutil_pidfile_process(pidfile);
    ck_assert_int_gt(pid, 1);
    /* A crash: no shutdown at all, a stale postmaster.pid stays behind. */
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert(WAIT_UNTIL(testutil_pidfile_process(pidfile) == 0, 5000));
    ck_assert(path_exists(pidfile));
    ck_assert_ptr_eq(pgrig_global(), pg);
    ck_assert_int_ne(testutil_pidfile_process(pidfile), 0);
    conn = pgrig_connect(pg, NULL);
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT 1"), 1);
    PQfinish(conn);
}
END_TEST

START_TEST(test_private_cluster)
{
    struct pgrig pg;
    char dir[512];
    PGconn *conn;

    memset(&pg, 0, sizeof(pg));
    pg.port = 6543;
    ck_assert_int_eq(pgrig_start(&pg), 0);
    ck_assert_int_eq(pg.port, 6543);
    snprintf(dir, sizeof(dir), "%s", pg.dir);
    conn = pgrig_connect(&pg, NULL);
    ck_assert_ptr_nonnull(conn);
    ck_assert_int_eq(pgrig_query_int(conn, "SELECT current_setting('port')::int"), 6543);
    PQfinish(conn);
    ck_assert_int_eq(pgrig_stop(&pg), 0);
    ck_assert(!path_exists(dir));
    ck_assert_int_eq(pgrig_stop(&pg), 0); /* idempotent */
}
END_TEST

/* Runs the helper mode and returns its "<dir> <postmaster pid>" line. */
/* `dir` must hold 512 bytes. */
static void run_helper(const char *how, int expected_code, char *dir, pid_t *pid)
{
    char *argv[] = {self_exe, HELPER_FLAG, (char *)how, NULL};
    char *out = NULL, *err = NULL;
    long pid_value = 0;
    int code;

    code = proc_run(argv, NULL, 60000, &out, &err);
    ck_assert_msg(code == expected_code, "helper '%s' exited %d, expected %d; stderr:\n%s", how,
                  code, expected_code, err != NULL ? err : "");
    ck_assert_msg(out != NULL && sscanf(out, "%511s %ld", dir, &pid_value) == 2,
                  "helper printed no dir/pid: %s", out != NULL ? out : "(null)");
    *pid = (pid_t)pid_value;
    ck_assert_int_gt(*pid, 1);
    ck_assert(dir[0] == '/' && strstr(dir, "omnisync-pg-") != NULL);
    free(out);
    free(err);
}

static void assert_cluster_gone(const char *dir, pid_t pid, int timeout_ms)
{
    char data_dir[PATH_MAX];
    uint64_t started = testutil_now_ms();

    snprintf(data_dir, sizeof(data_dir), "%s/data", dir);
    ck_assert_msg(WAIT_UNTIL(!path_exists(dir) && !process_in_dir(pid, data_dir), timeout_ms),
                  "%s or postmaster %d still there after %d ms", dir, (int)pid, timeout_ms);
    fprintf(stderr, "test_rig: cluster gone %llu ms after the helper ended\n",
            (unsigned long long)(testutil_now_ms() - started));
}

START_TEST(test_cleanup_on_exit)
{
    char dir[512];
    pid_t pid;

    run_helper("exit", 0, dir, &pid);
    /* atexit in the helper removes it before the helper's exit completes. */
    ck_assert_msg(!path_exists(dir), "%s survived a normal exit", dir);
    assert_cluster_gone(dir, pid, 0);
}
END_TEST

START_TEST(test_cleanup_on_abort)
{
    char dir[512];
    pid_t pid;

    run_helper("abort", 128 + SIGABRT, dir, &pid);
    /* The signal handler cleans up synchronously, before the signal is re-raised. */
    ck_assert_msg(!path_exists(dir), "%s survived SIGABRT", dir);
    assert_cluster_gone(dir, pid, 0);
}
END_TEST

START_TEST(test_cleanup_on_sigterm)
{
    char dir[512];
    pid_t pid;

    run_helper("sigterm", 128 + SIGTERM, dir, &pid);
    ck_assert_msg(!path_exists(dir), "%s survived SIGTERM", dir);
    assert_cluster_gone(dir, pid, 0);
}
END_TEST

START_TEST(test_cleanup_on_sigkill)
{
    char dir[512];
    pid_t pid;

    /* Nothing in the process can run: the reaper does it, shortly after. */
    run_helper("sigkill", 128 + SIGKILL, dir, &pid);
    assert_cluster_gone(dir, pid, 20000);
}
END_TEST

START_TEST(test_cleanup_on_underscore_exit)
{
    char dir[512];
    pid_t pid;

    /* What Check does when an assertion fails in a test child: _exit(1), no atexit handlers. */
    run_helper("_exit", 1, dir, &pid);
    assert_cluster_gone(dir, pid, 20000);
}
END_TEST

/* ---- proc ---- */

START_TEST(test_proc_run_output_and_codes)
{
    char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    char *signalled[] = {"/bin/sh", "-c", "kill -TERM $$", NULL};
    char *missing[] = {"/nonexistent/omnisync-no-such-binary", NULL};
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(proc_run(argv, NULL, 10000, &out, &err), 3);
    ck_assert_str_eq(out, "out\n");
    ck_assert_str_eq(err, "err\n");
    free(out);
    free(err);
    ck_assert_int_eq(proc_run(argv, NULL, 10000, NULL, NULL), 3);
    ck_assert_int_eq(proc_run(signalled, NULL, 10000, NULL, NULL), 128 + SIGTERM);
    ck_assert_int_eq(proc_run(missing, NULL, 10000, &out, &err), -1);
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(err);
}
END_TEST

START_TEST(test_proc_run_timeout)
{
    char *argv[] = {"/bin/sh", "-c", "echo started; exec sleep 30", NULL};
    char *out = NULL;
    uint64_t started = testutil_now_ms();
    uint64_t took;

    ck_assert_int_eq(proc_run(argv, NULL, 300, &out, NULL), -1);
    took = testutil_now_ms() - started;
    ck_assert_msg(took >= 300 && took < 3000, "timeout took %llu ms", (unsigned long long)took);
    ck_assert_str_eq(out, "started\n");
    free(out);
}
END_TEST

START_TEST(test_proc_env)
{
    char *argv[] = {"/bin/sh", "-c", "echo \"$RIG_A|$RIG_B|${RIG_GONE-unset}\"", NULL};
    char *env[] = {"RIG_A=one", "RIG_B=two", "RIG_GONE", NULL};
    char *out = NULL;

    setenv("RIG_B", "overridden", 1);
    setenv("RIG_GONE", "present", 1);
    ck_assert_int_eq(proc_run(argv, env, 10000, &out, NULL), 0);
    ck_assert_str_eq(out, "one|two|unset\n");
    free(out);
    ck_assert_int_eq(proc_run(argv, NULL, 10000, &out, NULL), 0);
    ck_assert_str_eq(out, "|overridden|present\n");
    free(out);
}
END_TEST

START_TEST(test_proc_spawn_stderr_and_stop)
{
    char *talker[] = {"/bin/sh", "-c", "sleep 0.2; echo 'ready to serve' >&2; exec sleep 30", NULL};
    char *stubborn[] = {"/bin/sh", "-c", "trap '' TERM; echo armed >&2; sleep 30; sleep 30", NULL};
    char *quitter[] = {"/bin/sh", "-c", "echo bye >&2; exit 0", NULL};
    struct proc p;
    char *text;

    ck_assert_int_eq(proc_spawn(&p, talker, NULL), 0);
    ck_assert_int_eq(proc_stderr_contains(&p, "ready"), 0);
    ck_assert_int_eq(proc_wait_stderr(&p, "ready to serve", 5000), 1);
    text = testutil_read_file(p.err_path);
    ck_assert_str_eq(text, "ready to serve\n");
    free(text);
    ck_assert_int_eq(proc_wait(&p, 50), -1);
    ck_assert_int_eq(proc_signal(&p, 0), 0);
    ck_assert_int_eq(proc_stop(&p, 5000), 128 + SIGTERM);
    ck_assert_int_eq(proc_signal(&p, SIGTERM), -1);
    proc_free(&p);
    proc_free(&p);

    /* Ignores SIGTERM: SIGKILL to the whole group after the grace period. */
    ck_assert_int_eq(proc_spawn(&p, stubborn, NULL), 0);
    ck_assert_int_eq(proc_wait_stderr(&p, "armed", 5000), 1);
    ck_assert_int_eq(proc_stop(&p, 200), 128 + SIGKILL);
    proc_free(&p);

    /* An exited child cannot produce the needle any more: no waiting for the deadline. */
    ck_assert_int_eq(proc_spawn(&p, quitter, NULL), 0);
    ck_assert_int_eq(proc_wait_stderr(&p, "never printed", 60000), 0);
    ck_assert_int_eq(proc_wait(&p, 0), 0);
    proc_free(&p);
}
END_TEST

START_TEST(test_proc_children_die_with_parent)
{
    char *sleeper[] = {"/bin/sleep", "30", NULL};
    int fds[2];
    pid_t middle, orphan = 0;
    char link[64];

    ck_assert_int_eq(pipe(fds), 0);
    middle = fork();
    ck_assert_int_ge(middle, 0);
    if (middle == 0) {
        struct proc p;

        close(fds[0]);
        if (proc_spawn(&p, sleeper, NULL) == 0 &&
            write(fds[1], &p.pid, sizeof(p.pid)) == (ssize_t)sizeof(p.pid))
            _exit(0); /* no proc_free: the kernel must kill it */
        _exit(1);
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], &orphan, sizeof(orphan)), (ssize_t)sizeof(orphan));
    close(fds[0]);
    ck_assert_int_eq(waitpid(middle, NULL, 0), middle);
    snprintf(link, sizeof(link), "/proc/%d/cwd", (int)orphan);
    /* A killed orphan may linger as a zombie of init; it has no cwd then. */
    ck_assert_msg(WAIT_UNTIL(access(link, F_OK) != 0, 5000), "pid %d outlived its parent",
                  (int)orphan);
}
END_TEST

/* ---- testutil ---- */

static int never(void *arg)
{
    (*(int *)arg)++;
    return 0;
}

static int on_fifth_call(void *arg)
{
    return ++(*(int *)arg) >= 5;
}

START_TEST(test_wait_until)
{
    int calls = 0;
    uint64_t started = testutil_now_ms();
    uint64_t took;

    ck_assert_int_eq(wait_until(never, &calls, 200), 0);
    took = testutil_now_ms() - started;
    ck_assert_msg(took >= 200 && took < 400, "timeout took %llu ms", (unsigned long long)took);
    /* 2+4+8+16+32+50+50+38: about eight sleeps, never a busy loop. */
    ck_assert_msg(calls >= 5 && calls <= 15, "%d calls", calls);

    calls = 0;
    ck_assert_int_eq(wait_until(on_fifth_call, &calls, 5000), 1);
    ck_assert_int_eq(calls, 5);
    calls = 0;
    ck_assert_int_eq(wait_until(never, &calls, 0), 0);
    ck_assert_int_eq(calls, 1);

    calls = 0;
    started = testutil_now_ms();
    ck_assert_int_eq(WAIT_UNTIL(++calls >= 3, 5000), 1);
    ck_assert_int_eq(calls, 3);
    ck_assert_int_eq(WAIT_UNTIL(0, 100), 0);
    took = testutil_now_ms() - started;
    ck_assert_msg(took >= 100 && took < 300, "WAIT_UNTIL took %llu ms", (unsigned long long)took);
}
END_TEST

START_TEST(test_files)
{
    char dir[512], path[1024], nested[1024];
    char *text;
    struct stat st;

    ck_assert_int_eq(testutil_mkdtemp(dir, sizeof(dir)), 0);
    ck_assert(strstr(dir, "omnisync-test-") != NULL);
    snprintf(path, sizeof(path), "%s/config.ini", dir);
    ck_assert_int_eq(testutil_write_file(path, "[db]\nconninfo = x\n", 0640), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640);
    text = testutil_read_file(path);
    ck_assert_str_eq(text, "[db]\nconninfo = x\n");
    free(text);
    ck_assert_int_eq(testutil_write_file(path, "", 0600), 0);
    text = testutil_read_file(path);
    ck_assert_str_eq(text, "");
    free(text);
    snprintf(path, sizeof(path), "%s/missing", dir);
    ck_assert_ptr_null(testutil_read_file(path));

    snprintf(nested, sizeof(nested), "%s/a/b/c", dir);
    snprintf(path, sizeof(path), "%s/a", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/a/b", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(mkdir(nested, 0500), 0);
    snprintf(path, sizeof(path), "%s/a/link", dir);
    ck_assert_int_eq(symlink("/etc", path), 0);
    ck_assert_int_eq(testutil_rm_rf(dir), 0);
    ck_assert(!path_exists(dir));
    ck_assert(path_exists("/etc/passwd"));
    ck_assert_int_eq(testutil_rm_rf(dir), 0);
    ck_assert_int_eq(testutil_rm_rf("/"), -1);
    ck_assert_int_eq(testutil_rm_rf(""), -1);
}
END_TEST

START_TEST(test_mkdtemp_removed_after_failed_test_child)
{
    int fds[2];
    pid_t child;
    char dir[512] = "";

    ck_assert_int_eq(pipe(fds), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        char made[512];

        close(fds[0]);
        if (testutil_mkdtemp(made, sizeof(made)) == 0)
            (void)!write(fds[1], made, sizeof(made));
        _exit(1); /* like a failed Check assertion: no atexit */
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], dir, sizeof(dir)), (ssize_t)sizeof(dir));
    close(fds[0]);
    ck_assert_int_eq(waitpid(child, NULL, 0), child);
    ck_assert_msg(WAIT_UNTIL(!path_exists(dir), 10000), "%s survived its creator", dir);
}
END_TEST

/* ---- helper mode and runner ---- */

static int helper_main(const char *how)
{
    struct pgrig *pg = pgrig_global();

    if (pg == NULL)
        return 2;
    printf("%s %ld\n", pg->dir, (long)postmaster_pid(pg->data_dir));
    fflush(stdout);
    if (strcmp(how, "exit") == 0)
        return 0;
    if (strcmp(how, "abort") == 0)
        abort();
    if (strcmp(how, "sigterm") == 0)
        raise(SIGTERM);
    if (strcmp(how, "sigkill") == 0)
        raise(SIGKILL);
    if (strcmp(how, "_exit") == 0)
        _exit(1);
    return 3;
}

static Suite *rig_suite(void)
{
    Suite *suite = suite_create("rig");
    TCase *pg = tcase_create("pgrig");
    TCase *cleanup = tcase_create("cleanup");
    TCase *proc = tcase_create("proc");
    TCase *util = tcase_create("testutil");

    tcase_set_timeout(pg, 120);
    tcase_add_test(pg, test_cluster_up);
    tcase_add_test(pg, test_databases_independent);
    tcase_add_test(pg, test_server_stop_start);
    tcase_add_test(pg, test_restart_immediate);
    tcase_add_test(pg, test_global_recovers_stopped_server);
    tcase_add_test(pg, test_global_recovers_killed_postmaster);
    tcase_add_test(pg, test_private_cluster);
    suite_add_tcase(suite, pg);

    tcase_set_timeout(cleanup, 120);
    tcase_add_test(cleanup, test_cleanup_on_exit);
    tcase_add_test(cleanup, test_cleanup_on_abort);
    tcase_add_test(cleanup, test_cleanup_on_sigterm);
    tcase_add_test(cleanup, test_cleanup_on_sigkill);
    tcase_add_test(cleanup, test_cleanup_on_underscore_exit);
    suite_add_tcase(suite, cleanup);

    tcase_set_timeout(proc, 30);
    tcase_add_test(proc, test_proc_run_output_and_codes);
    tcase_add_test(proc, test_proc_run_timeout);
    tcase_add_test(proc, test_proc_env);
    tcase_add_test(proc, test_proc_spawn_stderr_and_stop);
    tcase_add_test(proc, test_proc_children_die_with_parent);
    suite_add_tcase(suite, proc);

    tcase_set_timeout(util, 30);
    tcase_add_test(util, test_wait_until);
    tcase_add_test(util, test_files);
    tcase_add_test(util, test_mkdtemp_removed_after_failed_test_child);
    suite_add_tcase(suite, util);
    return suite;
}

int main(int argc, char **argv)
{
    struct pgrig *pg;
    uint64_t started;
    ssize_t n;

    if (argc == 3 && strcmp(argv[1], HELPER_FLAG) == 0)
        return helper_main(argv[2]);

    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n < 0) {
        perror("test_rig: /proc/self/exe");
        return 1;
    }
    self_exe[n] = '\0';

    started = testutil_now_ms();
    pg = pgrig_global();
    if (pg == NULL)
        return 1;
    fprintf(stderr, "test_rig: cluster in %s started in %llu ms\n", pg->dir,
            (unsigned long long)(testutil_now_ms() - started));

    return pgrig_run_suite(rig_suite());
}
