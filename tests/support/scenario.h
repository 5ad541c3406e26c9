/*
 * scenario: a CRM database, the fake Omnidesk and omnisync daemons, for the integration tests.
 *
 * One scenario = one fresh database on the binary's throwaway cluster (pgrig), a CRM table
 * `public.customers`, a config and key file in a temp dir, `omnisync migrate` run, and the fake
 * started. Daemons are real `omnisync run` processes. The comparison of the fake's state with
 * the CRM table is the tests' definition of "in step".
 */
#ifndef OMNISYNC_TEST_SCENARIO_H
#define OMNISYNC_TEST_SCENARIO_H

#include <libpq-fe.h>

#include "fake.h"
#include "pgrig.h"
#include "proc.h"

#define SCENARIO_API_KEY "test-api-key-7f3a9c"

struct scenario {
    struct pgrig *pg;
    char db[64];
    char conninfo[512];
    PGconn *conn; /* superuser connection to the CRM database */
    struct fake_omnidesk fake;
    char dir[512];
    char config[600];
    char keyfile[600];
    char extra[2048]; /* config text appended after the defaults */
};

/* The CRM table every scenario uses. */
#define SCENARIO_TABLE                                                                             \
    "CREATE TABLE public.customers (customer_no text PRIMARY KEY, first_name text, "               \
    "last_name text, email text, phone text, loyalty_tier text, notes text, "                      \
    "gdpr_erase boolean NOT NULL DEFAULT false)"

/*
 * Sets everything up; `extra_config` (may be NULL) is appended to the config (later sections
 * and keys: e.g. "[delivery]\nmax_attempts = 3\n"), `faults` (may be NULL) are the fake's
 * start-up settings. 0 or -1 with a message on stderr.
 */
int scenario_setup(struct scenario *s, const char *extra_config, const char *faults);
/* Rewrites the config file with new extra text (for reload tests). */
int scenario_write_config(struct scenario *s, const char *extra_config);
/* Starts `omnisync run` and waits (deadline 15 s) until it logs that it is listening. */
int scenario_start_daemon(struct scenario *s, struct proc *p);
/* Like scenario_start_daemon without waiting for readiness. */
int scenario_spawn_daemon(struct scenario *s, struct proc *p);
/*
 * The port of the daemon's health endpoint (configured "[health] listen = 127.0.0.1:0"), read
 * from its log once it says it listens (deadline 5 s); 0 when it did not.
 */
int scenario_health_port(struct proc *p);
/* Rows not yet in a terminal state (pending or held). */
long long scenario_open_rows(struct scenario *s);
/* Waits until no row is pending; 1 when quiet, 0 at the deadline. */
int scenario_wait_quiet(struct scenario *s, int timeout_ms);
/*
 * Compares the fake's state with the CRM table: every CRM customer whose primary id is not in
 * `absent` (a NULL-terminated list, may be NULL) exists with the same names and tier and with
 * its current email and phone among its channels; no other customer exists. Returns 0 when in
 * step, else -1 with the first difference in why.
 */
int scenario_compare(struct scenario *s, const char *const *absent, char *why, size_t len);
/* Runs SQL on the CRM database, failing the test (with the statement) if it fails. */
void scenario_exec(struct scenario *s, const char *sql);
void scenario_execf(struct scenario *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Outbox rows in `status`. */
long long scenario_count_status(struct scenario *s, const char *status);
/* The outbox by status with its errors, on stderr, for failure messages. */
void scenario_dump_outbox(struct scenario *s);

/*
 * Per-customer order, from the fake's request log: for customers "<letter><1..n>", the
 * custom_tier values sent ("v<NN>") never go back in time and end at v<final>. When `creates` is
 * not NULL (n + 1 entries) it receives each customer's successful creates. Fails the test with
 * the customer, the values and the log sequence number at fault.
 */
void scenario_assert_tier_order(struct scenario *s, int n, int final, int *creates);

/* Stops the fake (asserting a clean exit) and removes the temp dir; the database stays. */
void scenario_teardown(struct scenario *s);

#endif
