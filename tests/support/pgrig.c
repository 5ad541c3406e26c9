/*
 * pgrig: throwaway PostgreSQL clusters for the integration tests.
 *
 * This file owns the cluster's life: initdb, pg_ctl start/stop/restart (run as the "postgres"
 * system user when we are root, since PostgreSQL refuses to run as root), and removal. The
 * server's state lives in files (postmaster.pid), never only in this process's memory, because
 * Check forks a child per test and any of them may stop or restart the server.
 *
 * Removal is guarded three ways, from cheapest to most robust: pgrig_stop (the main process at
 * exit, via atexit for the shared cluster), a fatal-signal handler in the owning process, and
 * testutil's reaper process, which acts after the owner has died in any way including SIGKILL.
 * Only the owning process (owner == getpid()) ever removes a cluster; forked test children never
 * do, or the next test would find no server.
 */
#include "pgrig.h"

#include <check.h>

#include "proc.h"
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define PG_DEFAULT_BINDIR "/usr/lib/postgresql/15/bin"
#define PG_DEFAULT_PORT 5432
#define PG_CTL_WAIT_SECONDS "60"
#define TOOL_TIMEOUT_MS 120000
#define STOP_TIMEOUT_MS 10000
#define UNIX_SOCKET_PATH_MAX 107 /* sizeof(sun_path) - 1 on Linux */
#define SQL_SHOW_MAX 400
#define LOG_TAIL_LINES 25
#define DBNAME_MAX 63

static char pg_bindir[PATH_MAX];

/* Who runs initdb and the server: ourselves, or "postgres" when we are root. */
static int pg_as_other_user;
static uid_t pg_uid;
static gid_t pg_gid;

/* ---- finding and running the PostgreSQL tools ---- */

static int has_initdb(const char *dir)
{
    char path[PATH_MAX];

    if ((size_t)snprintf(path, sizeof(path), "%s/initdb", dir) >= sizeof(path))
        return 0;
    return access(path, X_OK) == 0;
}

static int in_path(const char *name)
{
    const char *path = getenv("PATH");
    char candidate[PATH_MAX];

    while (path != NULL && *path != '\0') {
        const char *end = strchr(path, ':');
        size_t n = end != NULL ? (size_t)(end - path) : strlen(path);

        if (n > 0 &&
            (size_t)snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)n, path, name) <
                sizeof(candidate) &&
            access(candidate, X_OK) == 0)
            return 1;
        path = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

static int find_bindir(void)
{
    const char *env = getenv("PG_BINDIR");
    char *argv[] = {"pg_config", "--bindir", NULL};
    char *out = NULL;

    if (pg_bindir[0] != '\0')
        return 0;
    if (env != NULL && env[0] != '\0') {
        if (!has_initdb(env)) {
            fprintf(stderr, "pgrig: PG_BINDIR=%s has no executable initdb\n", env);
            return -1;
        }
        snprintf(pg_bindir, sizeof(pg_bindir), "%s", env);
        return 0;
    }
    if (in_path("pg_config") && proc_run(argv, NULL, 10000, &out, NULL) == 0 && out != NULL) {
        out[strcspn(out, "\r\n")] = '\0';
        if (has_initdb(out))
            snprintf(pg_bindir, sizeof(pg_bindir), "%s", out);
    }
    free(out);
    if (pg_bindir[0] == '\0' && has_initdb(PG_DEFAULT_BINDIR))
        snprintf(pg_bindir, sizeof(pg_bindir), "%s", PG_DEFAULT_BINDIR);
    if (pg_bindir[0] == '\0') {
        fprintf(stderr,
                "pgrig: PostgreSQL server binaries not found (tried pg_config --bindir and "
                "%s); install postgresql-15 or set PG_BINDIR\n",
                PG_DEFAULT_BINDIR);
        return -1;
    }
    return 0;
}

static int resolve_user(void)
{
    struct passwd *pw;

    if (geteuid() != 0) {
        pg_as_other_user = 0;
        return 0;
    }
    pw = getpwnam("postgres");
    if (pw == NULL) {
        fprintf(stderr, "pgrig: running as root, which PostgreSQL refuses, and there is no "
                        "\"postgres\" system user to run it as; install the postgresql package "
                        "or run the tests as an unprivileged user\n");
        return -1;
    }
    pg_as_other_user = 1;
    pg_uid = pw->pw_uid;
    pg_gid = pw->pw_gid;
    return 0;
}

static void tool_path(const char *name, char *out, size_t len)
{
    /* pg_bindir was checked to hold initdb, so the path fits; cut rather than overflow. */
    if ((size_t)snprintf(out, len, "%s/%s", pg_bindir, name) >= len)
        out[len - 1] = '\0';
}

static void print_indented(const char *text)
{
    const char *line = text;

    while (line != NULL && *line != '\0') {
        const char *end = strchr(line, '\n');
        int n = end != NULL ? (int)(end - line) : (int)strlen(line);

        fprintf(stderr, "    %.*s\n", n, line);
        line = end != NULL ? end + 1 : NULL;
    }
}

static void print_server_log_tail(const struct pgrig *pg)
{
    char path[PATH_MAX];
    char *text;
    const char *start;
    int lines = 0;

    snprintf(path, sizeof(path), "%s/server.log", pg->dir);
    text = testutil_read_file(path);
    if (text == NULL)
        return;
    start = text + strlen(text);
    while (start > text && lines <= LOG_TAIL_LINES) {
        start--;
        if (*start == '\n' && start[1] != '\0')
            lines++;
    }
    if (*start == '\n')
        start++;
    fprintf(stderr, "pgrig: last lines of %s:\n", path);
    print_indented(start);
    free(text);
}

/* Runs a PostgreSQL tool in the cluster's directory, as the cluster's user; output on failure. */
static int run_tool(const struct pgrig *pg, char *const argv[])
{
    struct proc_opts opts = {.cwd = pg->dir, .set_ids = pg_as_other_user};
    /* English, parseable tool messages whatever the test environment's locale. */
    char *env[] = {"LC_ALL=C", NULL};
    char *out = NULL, *err = NULL;
    int code;

    opts.uid = pg_uid;
    opts.gid = pg_gid;
    code = proc_run_opts(argv, env, &opts, TOOL_TIMEOUT_MS, &out, &err);
    if (code != 0) {
        char command[1024];
        size_t used = 0;
        int i;

        command[0] = '\0';
        for (i = 0; argv[i] != NULL && used < sizeof(command); i++)
            used += (size_t)snprintf(command + used, sizeof(command) - used, "%s%s",
                                     i > 0 ? " " : "", argv[i]);
        fprintf(stderr, "pgrig: %s failed (exit %d)\n", command, code);
        print_indented(out);
        print_indented(err);
    }
    free(out);
    free(err);
    return code == 0 ? 0 : -1;
}

static void pidfile_path(const struct pgrig *pg, char *out, size_t len)
{
    snprintf(out, len, "%s/postmaster.pid", pg->data_dir);
}

/* ---- where the cluster lives ---- */

/* Whether `uid`/`gid` may traverse every directory on the way to (and including) `path`. */
static int searchable_by(const char *path, uid_t uid, gid_t gid)
{
    char prefix[PATH_MAX];
    size_t i, len = strlen(path);

    if (len >= sizeof(prefix))
        return 0;
    memcpy(prefix, path, len + 1);
    for (i = 1; i <= len; i++) {
        struct stat st;
        mode_t need;

        if (prefix[i] != '/' && prefix[i] != '\0')
            continue;
        prefix[i] = '\0';
        if (stat(prefix, &st) < 0)
            return 0;
        prefix[i] = path[i];
        need = st.st_uid == uid ? S_IXUSR : st.st_gid == gid ? S_IXGRP : S_IXOTH;
        if ((st.st_mode & need) == 0)
            return 0;
    }
    return 1;
}

/*
 * The directory name goes into postgresql.conf and into conninfo strings unquoted, and the
 * socket path must fit sun_path: refuse anything that would need quoting or is too long.
 */
static int usable_dir_name(const char *dir, const char *still_to_come)
{
    return dir[0] == '/' && strpbrk(dir, " \t\n,'\"\\") == NULL &&
           strlen(dir) + strlen(still_to_come) <= UNIX_SOCKET_PATH_MAX;
}

static const char *pick_base_dir(void)
{
    const char *tmpdir = getenv("TMPDIR");

    if (tmpdir == NULL || tmpdir[0] == '\0' || strcmp(tmpdir, "/tmp") == 0)
        return "/tmp";
    if (!usable_dir_name(tmpdir, "/omnisync-pg-XXXXXX/.s.PGSQL.65535")) {
        fprintf(stderr,
                "pgrig: TMPDIR=%s is unsuitable for a socket directory (too long or "
                "needs quoting); using /tmp\n",
                tmpdir);
        return "/tmp";
    }
    if (pg_as_other_user && !searchable_by(tmpdir, pg_uid, pg_gid)) {
        fprintf(stderr, "pgrig: TMPDIR=%s is not reachable by the postgres user; using /tmp\n",
                tmpdir);
        return "/tmp";
    }
    return tmpdir;
}

static int write_config(const struct pgrig *pg)
{
    char path[PATH_MAX];
    FILE *conf;
    int ok;

    snprintf(path, sizeof(path), "%s/postgresql.conf", pg->data_dir);
    conf = fopen(path, "ae");
    if (conf == NULL) {
        fprintf(stderr, "pgrig: opening %s: %s\n", path, strerror(errno));
        return -1;
    }
    /*
     * Durability is worthless for a cluster that lives for one test run. synchronous_commit stays
     * on: with fsync off a commit's WAL flush is only a write() to the page cache, and tests that
     * restart the server with -m immediate must find every commit they were told about.
     */
    fprintf(conf,
            "\n# pgrig: throwaway test cluster\n"
            "listen_addresses = ''\n"
            "unix_socket_directories = '%s'\n"
            "port = %d\n"
            "fsync = off\n"
            "synchronous_commit = on\n"
            "full_page_writes = off\n"
            "shared_buffers = 32MB\n"
            "huge_pages = off\n"
            "max_connections = 100\n"
            "logging_collector = off\n"
            "log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n"
            "timezone = 'UTC'\n"
            "log_timezone = 'UTC'\n",
            pg->socket_dir, pg->port);
    ok = !ferror(conf);
    if (fclose(conf) != 0 || !ok) {
        fprintf(stderr, "pgrig: writing %s failed\n", path);
        return -1;
    }
    return 0;
}

static int run_initdb(const struct pgrig *pg)
{
    /* C.UTF-8 gives byte-order collation and Unicode-aware upper()/lower(); C is the fallback. */
    locale_t c_utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t)0);
    char *locale = c_utf8 != (locale_t)0 ? "--locale=C.UTF-8" : "--locale=C";
    char initdb[PATH_MAX];
    char *argv[] = {
        initdb, "-D",        (char *)pg->data_dir, "-A", "trust", "-U", "postgres", "-E", "UTF8",
        locale, "--no-sync", "--no-instructions",  NULL};

    if (c_utf8 != (locale_t)0)
        freelocale(c_utf8);
    tool_path("initdb", initdb, sizeof(initdb));
    return run_tool(pg, argv);
}

/* ---- starting and stopping ---- */

/*
 * Removes the lock files of a postmaster that died without cleaning up (SIGKILL, OOM). PostgreSQL
 * checks them with kill(pid, 0), which also succeeds for a zombie nobody has reaped yet, and then
 * refuses to start. We only remove them after checking that no process runs in the data
 * directory (testutil_pidfile_process), so a live server's files are never touched.
 */
static void remove_stale_locks(const struct pgrig *pg)
{
    char path[PATH_MAX];

    pidfile_path(pg, path, sizeof(path));
    if (access(path, F_OK) != 0 || testutil_pidfile_process(path) != 0)
        return;
    unlink(path);
    snprintf(path, sizeof(path), "%s/.s.PGSQL.%d.lock", pg->socket_dir, pg->port);
    unlink(path);
}

int pgrig_server_start(struct pgrig *pg)
{
    char pg_ctl[PATH_MAX], log[PATH_MAX];
    char *argv[] = {pg_ctl, "-D",    pg->data_dir, "-l", log, "-w", "-t", PG_CTL_WAIT_SECONDS,
                    "-s",   "start", NULL};

    if (pg->dir[0] == '\0') {
        fprintf(stderr, "pgrig: no cluster to start\n");
        return -1;
    }
    tool_path("pg_ctl", pg_ctl, sizeof(pg_ctl));
    snprintf(log, sizeof(log), "%s/server.log", pg->dir);
    remove_stale_locks(pg);
    if (run_tool(pg, argv) < 0) {
        print_server_log_tail(pg);
        return -1;
    }
    pg->running = 1;
    return 0;
}

int pgrig_server_stop(struct pgrig *pg, const char *mode)
{
    char pg_ctl[PATH_MAX];
    char *argv[] = {pg_ctl, "-D", pg->data_dir, "-w",   "-t", PG_CTL_WAIT_SECONDS,
                    "-s",   "-m", (char *)mode, "stop", NULL};

    if (pg->dir[0] == '\0' || mode == NULL) {
        fprintf(stderr, "pgrig: no cluster or no mode to stop with\n");
        return -1;
    }
    tool_path("pg_ctl", pg_ctl, sizeof(pg_ctl));
    if (run_tool(pg, argv) < 0)
        return -1;
    pg->running = 0;
    return 0;
}

int pgrig_restart(struct pgrig *pg, const char *mode)
{
    char pg_ctl[PATH_MAX], log[PATH_MAX];
    char *argv[] = {pg_ctl, "-D", pg->data_dir, "-l",      log, "-w", "-t", PG_CTL_WAIT_SECONDS,
                    "-s",   "-m", (char *)mode, "restart", NULL};

    if (pg->dir[0] == '\0' || mode == NULL) {
        fprintf(stderr, "pgrig: no cluster or no mode to restart with\n");
        return -1;
    }
    tool_path("pg_ctl", pg_ctl, sizeof(pg_ctl));
    snprintf(log, sizeof(log), "%s/server.log", pg->dir);
    remove_stale_locks(pg);
    if (run_tool(pg, argv) < 0) {
        print_server_log_tail(pg);
        return -1;
    }
    pg->running = 1;
    return 0;
}

int pgrig_start(struct pgrig *pg)
{
    int port = pg->port > 0 && pg->port < 65536 ? pg->port : PG_DEFAULT_PORT;
    char pattern[PATH_MAX], resolved[PATH_MAX], pidfile[PATH_MAX];
    const char *base;
    size_t len;

    memset(pg, 0, sizeof(*pg));
    pg->port = port;
    pg->owner = getpid();
    if (find_bindir() < 0 || resolve_user() < 0)
        return -1;
    base = pick_base_dir();
    snprintf(pattern, sizeof(pattern), "%s/omnisync-pg-XXXXXX", base);
    if (mkdtemp(pattern) == NULL) {
        fprintf(stderr, "pgrig: mkdtemp %s: %s\n", pattern, strerror(errno));
        return -1;
    }
    /* Canonical: the reaper compares it with the postmaster's /proc/<pid>/cwd. */
    if (realpath(pattern, resolved) == NULL || !usable_dir_name(resolved, "/.s.PGSQL.65535") ||
        strlen(resolved) + sizeof("/data") > sizeof(pg->data_dir)) {
        fprintf(stderr, "pgrig: %s resolves to an unusable path\n", pattern);
        rmdir(pattern);
        return -1;
    }
    len = strlen(resolved); /* fits: checked just above */
    memcpy(pg->dir, resolved, len + 1);
    memcpy(pg->socket_dir, resolved, len + 1);
    memcpy(pg->data_dir, resolved, len);
    memcpy(pg->data_dir + len, "/data", sizeof("/data"));
    pidfile_path(pg, pidfile, sizeof(pidfile));

    /* From here on, however this process ends, the reaper stops the server and removes dir. */
    if (testutil_cleanup_at_exit(pg->dir, pidfile, SIGQUIT) < 0)
        goto fail;
    if (pg_as_other_user && chown(pg->dir, pg_uid, pg_gid) < 0) {
        fprintf(stderr, "pgrig: chown %s to postgres: %s\n", pg->dir, strerror(errno));
        goto fail;
    }
    if (run_initdb(pg) < 0 || write_config(pg) < 0 || pgrig_server_start(pg) < 0)
        goto fail;
    return 0;

fail:
    /* SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, children told to exit now. */
    testutil_kill_pidfile(pidfile, SIGQUIT, STOP_TIMEOUT_MS);
    testutil_rm_rf(pg->dir);
    memset(pg, 0, sizeof(*pg));
    return -1;
}

int pgrig_stop(struct pgrig *pg)
{
    char pidfile[PATH_MAX];
    int rc = 0;

    if (pg->dir[0] == '\0')
        return 0;
    if (pg->owner != getpid()) {
        fprintf(stderr, "pgrig: not stopping the cluster in %s: it belongs to pid %d, not %d\n",
                pg->dir, (int)pg->owner, (int)getpid());
        return -1;
    }
    pidfile_path(pg, pidfile, sizeof(pidfile));
    if (testutil_kill_pidfile(pidfile, SIGQUIT, STOP_TIMEOUT_MS) < 0) {
        fprintf(stderr, "pgrig: the server in %s did not stop\n", pg->data_dir);
        rc = -1;
    }
    if (testutil_rm_rf(pg->dir) < 0) {
        fprintf(stderr, "pgrig: could not remove %s completely\n", pg->dir);
        rc = -1;
    }
    memset(pg, 0, sizeof(*pg));
    return rc;
}

/* ---- the binary's shared cluster ---- */

enum global_state { GLOBAL_NONE, GLOBAL_UP, GLOBAL_FAILED };

static struct pgrig global;
static enum global_state global_state;
static char global_pidfile[PATH_MAX]; /* precomputed for the signal handler */
static int global_hooks_installed;

static const int fatal_signals[] = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT, SIGABRT,
                                    SIGSEGV, SIGBUS,  SIGFPE, SIGILL};
static struct sigaction previous_actions[NSIG];

static void on_fatal_signal(int sig, siginfo_t *info, void *context)
{
    int saved_errno = errno;
    int fault = sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL;

    (void)context;
    if (global.dir[0] != '\0' && global.owner == getpid()) {
        testutil_kill_pidfile(global_pidfile, SIGQUIT, 5000);
        testutil_rm_rf(global.dir);
        global.dir[0] = '\0';
    }
    sigaction(sig, &previous_actions[sig], NULL);
    /*
     * A real fault re-executes the faulting instruction on return and reaches the previous
     * handler (ASan's, or the default) with its genuine details. Anything sent (kill, raise,
     * abort) is sent again; it stays pending until we return.
     */
    if (!fault || info == NULL || info->si_code <= 0)
        raise(sig);
    errno = saved_errno;
}

static void global_at_exit(void)
{
    /* Check's test children run atexit handlers too: only the owner may stop the cluster. */
    if (global.dir[0] != '\0' && global.owner == getpid())
        pgrig_stop(&global);
}

static void install_global_hooks(void)
{
    struct sigaction action;
    size_t i;

    if (global_hooks_installed)
        return;
    global_hooks_installed = 1;
    atexit(global_at_exit);
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_fatal_signal;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    for (i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++) {
        int sig = fatal_signals[i];

        if (sigaction(sig, NULL, &previous_actions[sig]) < 0)
            continue;
        /* Someone chose to ignore it (nohup): respect that. */
        if (!(previous_actions[sig].sa_flags & SA_SIGINFO) &&
            previous_actions[sig].sa_handler == SIG_IGN)
            continue;
        sigaction(sig, &action, NULL);
    }
}

struct pgrig *pgrig_global(void)
{
    char pidfile[PATH_MAX];

    if (global_state == GLOBAL_FAILED)
        return NULL;
    if (global_state == GLOBAL_UP && global.dir[0] != '\0') {
        /*
         * A Check test child: if the test binary dies (a ctest timeout kills only it), the reaper
         * removes the cluster at once; the orphaned test must not run on against nothing.
         */
        if (global.owner != getpid() && getppid() == global.owner)
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (pgrig_ping(&global))
            return &global;
        /*
         * An earlier test may have stopped it, left it mid-restart, or killed the postmaster
         * (then a stale pid file remains, which pg_ctl start handles).
         */
        pidfile_path(&global, pidfile, sizeof(pidfile));
        if (testutil_pidfile_process(pidfile) != 0) {
            if (WAIT_UNTIL(pgrig_ping(&global), 30000))
                return &global;
            fprintf(stderr, "pgrig: the shared server in %s does not answer\n", global.data_dir);
            return NULL;
        }
        return pgrig_server_start(&global) == 0 ? &global : NULL;
    }
    memset(&global, 0, sizeof(global));
    if (pgrig_start(&global) < 0) {
        global_state = GLOBAL_FAILED;
        return NULL;
    }
    pidfile_path(&global, global_pidfile, sizeof(global_pidfile));
    global_state = GLOBAL_UP;
    install_global_hooks();
    return &global;
}

/* ---- connections and SQL ---- */

/* Appends " key=value", quoting the value as libpq requires when it has to. */
static void conninfo_append(char *out, size_t len, size_t *used, const char *key, const char *value)
{
    int needs_quotes = value[0] == '\0' || strpbrk(value, " \t\n'\\") != NULL;
    const char *p;

    if (*used >= len)
        return;
    *used += (size_t)snprintf(out + *used, len - *used, "%s%s=%s", *used > 0 ? " " : "", key,
                              needs_quotes ? "'" : "");
    for (p = value; *p != '\0' && *used < len; p++) {
        if (needs_quotes && (*p == '\'' || *p == '\\'))
            *used += (size_t)snprintf(out + *used, len - *used, "\\");
        if (*used < len)
            *used += (size_t)snprintf(out + *used, len - *used, "%c", *p);
    }
    if (needs_quotes && *used < len)
        *used += (size_t)snprintf(out + *used, len - *used, "'");
}

void pgrig_conninfo(struct pgrig *pg, const char *dbname, const char *user, char *out, size_t len)
{
    char port[16];
    size_t used = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    snprintf(port, sizeof(port), "%d", pg->port);
    conninfo_append(out, len, &used, "host", pg->socket_dir);
    conninfo_append(out, len, &used, "port", port);
    conninfo_append(out, len, &used, "dbname", dbname != NULL ? dbname : "postgres");
    conninfo_append(out, len, &used, "user", user != NULL ? user : "postgres");
    if (used >= len) {
        fprintf(stderr, "pgrig: conninfo does not fit in %zu bytes\n", len);
        out[0] = '\0';
    }
}

int pgrig_ping(struct pgrig *pg)
{
    char conninfo[1200];
    size_t n;

    pgrig_conninfo(pg, "postgres", NULL, conninfo, sizeof(conninfo));
    n = strlen(conninfo);
    snprintf(conninfo + n, sizeof(conninfo) - n, " connect_timeout=5");
    return conninfo[0] != '\0' && PQping(conninfo) == PQPING_OK;
}

PGconn *pgrig_connect(struct pgrig *pg, const char *dbname)
{
    char conninfo[1200];
    size_t n;
    PGconn *conn;

    pgrig_conninfo(pg, dbname, NULL, conninfo, sizeof(conninfo));
    n = strlen(conninfo);
    snprintf(conninfo + n, sizeof(conninfo) - n,
             " connect_timeout=10 application_name=pgrig"
             " options='-c client_min_messages=warning'");
    conn = PQconnectdb(conninfo);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        conninfo[n] = '\0';
        fprintf(stderr, "pgrig: cannot connect (%s): %s", conninfo,
                conn != NULL ? PQerrorMessage(conn) : "out of memory\n");
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static void report_sql_error(PGconn *conn, const PGresult *res, const char *sql)
{
    const char *message = res != NULL ? PQresultErrorMessage(res) : "";
    size_t sql_len = strlen(sql);

    if (message == NULL || message[0] == '\0')
        message = conn != NULL ? PQerrorMessage(conn) : "no connection\n";
    fprintf(stderr, "pgrig: SQL failed: %s    in: %.*s%s\n", message, SQL_SHOW_MAX, sql,
            sql_len > SQL_SHOW_MAX ? " [...]" : "");
}

int pgrig_exec(PGconn *conn, const char *sql)
{
    PGresult *res;
    ExecStatusType status;

    if (conn == NULL) {
        report_sql_error(NULL, NULL, sql);
        return -1;
    }
    res = PQexec(conn, sql);
    status = PQresultStatus(res);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY) {
        PQclear(res);
        return 0;
    }
    report_sql_error(conn, res, sql);
    PQclear(res);
    return -1;
}

int pgrig_execf(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    char *sql = NULL;
    int n, rc;

    va_start(ap, fmt);
    n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "pgrig: out of memory formatting SQL\n");
        return -1;
    }
    rc = pgrig_exec(conn, sql);
    free(sql);
    return rc;
}

/* The first cell, or NULL (no row, NULL value, or error — errors are reported). */
static PGresult *query_first(PGconn *conn, const char *sql)
{
    PGresult *res;

    if (conn == NULL) {
        report_sql_error(NULL, NULL, sql);
        return NULL;
    }
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report_sql_error(conn, res, sql);
        PQclear(res);
        return NULL;
    }
    if (PQntuples(res) < 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return NULL;
    }
    return res;
}

long long pgrig_query_int(PGconn *conn, const char *sql)
{
    PGresult *res = query_first(conn, sql);
    const char *value;
    char *end = NULL;
    long long result;

    if (res == NULL)
        return LLONG_MIN;
    value = PQgetvalue(res, 0, 0);
    if (strcmp(value, "t") == 0) {
        result = 1;
    } else if (strcmp(value, "f") == 0) {
        result = 0;
    } else {
        errno = 0;
        result = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            /* The value itself stays out of the message: it may be test data. */
            fprintf(stderr, "pgrig: the first value of \"%.*s\" is not an integer\n", SQL_SHOW_MAX,
                    sql);
            result = LLONG_MIN;
        }
    }
    PQclear(res);
    return result;
}

char *pgrig_query_text(PGconn *conn, const char *sql)
{
    PGresult *res = query_first(conn, sql);
    char *text;

    if (res == NULL)
        return NULL;
    text = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return text;
}

int pgrig_createdb(struct pgrig *pg, const char *name, char *conninfo, size_t len)
{
    PGconn *conn;
    char *ident = NULL;
    int rc = -1;

    if (name == NULL || name[0] == '\0' || strlen(name) > DBNAME_MAX) {
        /* PostgreSQL would silently truncate a longer name, and the conninfo would not match. */
        fprintf(stderr, "pgrig: database name must be 1..%d bytes\n", DBNAME_MAX);
        return -1;
    }
    conn = pgrig_connect(pg, "postgres");
    if (conn == NULL)
        return -1;
    ident = PQescapeIdentifier(conn, name, strlen(name));
    if (ident == NULL) {
        fprintf(stderr, "pgrig: %s", PQerrorMessage(conn));
        goto done;
    }
    /* FORCE: a daemon left connected by an earlier, failed test must not block the drop. */
    if (pgrig_execf(conn, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident) < 0 ||
        pgrig_execf(conn, "CREATE DATABASE %s", ident) < 0)
        goto done;
    if (conninfo != NULL)
        pgrig_conninfo(pg, name, NULL, conninfo, len);
    rc = 0;

done:
    PQfreemem(ident);
    PQfinish(conn);
    return rc;
}

int pgrig_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    pgrig_stop(pgrig_global());
    return failed ? 1 : 0;
}
