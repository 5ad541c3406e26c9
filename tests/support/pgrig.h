/*
 * pgrig: a throwaway PostgreSQL 15 cluster for one test binary.
 *
 * The cluster lives in $TMPDIR/omnisync-pg-XXXXXX (or /tmp): data in <dir>/data, the server log
 * in <dir>/server.log, and the Unix socket in <dir> itself; it listens on no TCP address. It is
 * tuned for tests (fsync, full_page_writes off; 32MB shared_buffers) and uses trust
 * authentication with the superuser "postgres". As root it runs as the system user "postgres".
 *
 * One cluster is shared by all tests of a binary (pgrig_global); each test creates its own
 * database (pgrig_createdb with a unique name). Check runs tests in forked children: state that
 * matters lives in files, so a test may stop, start or restart the server, and only the process
 * that started the cluster ever removes it. It is removed when that process exits normally, on
 * SIGINT/SIGTERM/SIGHUP/SIGABRT/SIGSEGV/SIGBUS/SIGFPE/SIGILL, and — through testutil's reaper —
 * even after SIGKILL.
 *
 * Binaries: $PG_BINDIR, else `pg_config --bindir`, else /usr/lib/postgresql/15/bin.
 */
#ifndef OMNISYNC_PGRIG_H
#define OMNISYNC_PGRIG_H

#include <stddef.h>
#include <sys/types.h>

#include <libpq-fe.h>

struct pgrig {
    char dir[512];        /* canonical temp dir; "" when no cluster */
    char socket_dir[512]; /* == dir */
    char data_dir[512];   /* dir/data */
    int port;             /* names the socket file .s.PGSQL.<port>; 0 before start means 5432 */
    pid_t owner;          /* the process that started it: the only one that removes it */
    int running;          /* as far as this process knows; the server's truth is postmaster.pid */
};

/*
 * Creates and starts a fresh cluster. Zero `pg` first; set pg->port to choose the socket's port
 * number. 0, or -1 with a message on stderr (and nothing left behind).
 */
int pgrig_start(struct pgrig *pg);

/*
 * Stops the server immediately and removes the whole directory. Only in the owning process
 * (elsewhere it refuses with a message and returns -1); a no-op once stopped. 0 or -1.
 */
int pgrig_stop(struct pgrig *pg);

/* pg_ctl stop -m <mode> ("smart", "fast", "immediate"); the data stays. 0 or -1. */
int pgrig_server_stop(struct pgrig *pg, const char *mode);

/* pg_ctl start again after pgrig_server_stop; returns once it accepts connections. 0 or -1. */
int pgrig_server_start(struct pgrig *pg);

/* pg_ctl restart -m <mode>; returns once it accepts connections again. 0 or -1. */
int pgrig_restart(struct pgrig *pg, const char *mode);

/*
 * The binary's shared cluster, started on the first call (call it in main before
 * srunner_run_all, so the main process owns it). Later calls, also from Check children, make
 * sure the server is up again (a failed test may have left it stopped), and tie a Check test
 * child's life to the binary's (PR_SET_PDEATHSIG): killing the binary, as a ctest timeout does,
 * must not leave a test running on. NULL on failure.
 */
struct pgrig *pgrig_global(void);

struct Suite;

/* Runs every test of `s` (Check's suite), frees it, stops the shared cluster whatever the
 * outcome and returns the binary's exit code: 0 when all passed, 1 otherwise. */
int pgrig_run_suite(struct Suite *s);

/*
 * Creates database `name` (at most 63 bytes), dropping it first (WITH (FORCE)) if it exists, and
 * writes its conninfo "host=<socket_dir> port=N dbname=<name> user=postgres" into `conninfo`
 * (may be NULL). 0 or -1 with a message.
 */
int pgrig_createdb(struct pgrig *pg, const char *name, char *conninfo, size_t len);

/* Writes the conninfo for `dbname` and `user` (NULL: "postgres") into `out` ("" if too small). */
void pgrig_conninfo(struct pgrig *pg, const char *dbname, const char *user, char *out, size_t len);

/* 1 if the server accepts connections right now, else 0. Quiet. */
int pgrig_ping(struct pgrig *pg);

/*
 * Connects to `dbname` (NULL: "postgres") as the superuser, application_name "pgrig", NOTICEs
 * suppressed. The caller PQfinish()es it. NULL, with a message, on failure.
 */
PGconn *pgrig_connect(struct pgrig *pg, const char *dbname);

/*
 * Runs `sql` (one or more statements). 0, or -1 after printing the server's message and the SQL
 * (truncated) to stderr.
 */
int pgrig_exec(PGconn *conn, const char *sql);
int pgrig_execf(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The first column of the first row as an integer (booleans give 1/0). LLONG_MIN on error (with
 * a message), when there is no row, or when the value is NULL (quietly: tests poll for rows).
 */
long long pgrig_query_int(PGconn *conn, const char *sql);

/* The first column of the first row, malloc'd (caller frees); NULL on error, no row, or NULL. */
char *pgrig_query_text(PGconn *conn, const char *sql);

#endif
