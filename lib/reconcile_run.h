/*
 * reconcile_run: one reconcile run, reading both sides (DESIGN §5, issue 19).
 *
 * Reads every customer of the configured brand from Omnidesk's index endpoint
 * (GET /api/v2/customer?itemStart=N&itemLimit=99: the first page alone, as it tells itemTotal,
 * then the rest with up to 8 requests in flight, at most [omnidesk] max_in_flight; every request
 * at `rate` requests per second, honouring Retry-After, retrying transient failures with capped
 * backoff; pages taken in order, so the result is that of a read page by page) and the item
 * endpoint for customers whose index entry does not list their custom fields. The CRM table is
 * read through the source's mapping in keyset pages on `conn` with libpq's asynchronous API while
 * the index pages are in flight; once every index page is in, each CRM row is compared as
 * reconcile.c does. Index pages and CRM rows are read by reconcile_page.c's one-pass reader,
 * with json-c for whatever it leaves (the same result either way, at half the CPU). Outbox rows
 * not yet delivered make their customer `pending`. With `repair`, missing and different customers
 * get one outbox row of op 'reconcile' each, carrying the CRM's current state.
 *
 * A run that could not read every page is an error and enqueues nothing: a partial read would
 * call every customer on the unread pages missing. Blocking: it runs in a command (or a child
 * process of the daemon), never on the daemon's loop.
 */
#ifndef OMNISYNC_RECONCILE_RUN_H
#define OMNISYNC_RECONCILE_RUN_H

#include <libpq-fe.h>
#include <signal.h>

#include "config.h"
#include "errors.h"
#include "reconcile.h"

struct reconcile_progress {
    long long pages_read;
    long long pages_total; /* -1 until the first page said itemTotal */
    long long compared;    /* CRM customers compared so far */
    double seconds;        /* since the run started */
    double eta_seconds;    /* estimate of the time left, -1 when unknown */
};

struct reconcile_options {
    const struct config *cfg;        /* borrowed, with the API key loaded */
    const struct config_source *src; /* borrowed */
    double rate;                     /* API requests per second; 0 = no limit */
    int repair;                      /* enqueue repairs for missing and different customers */
    int show_data;                   /* keep values in the report */
    volatile sig_atomic_t *stop;     /* set by a signal handler: stop (OMNISYNC_ECANCELED) */
    void (*progress)(void *arg, const struct reconcile_progress *p); /* may be NULL */
    void *arg;
};

/*
 * Runs one reconcile of o->src over `conn`, filling `report` (initialised by the caller, freed by
 * the caller in every case). Returns 0, or a negative code with the reason in err: OMNISYNC_EHTTP
 * (Omnidesk could not be read: down, key refused, every retry failed), OMNISYNC_EINVAL (an answer
 * of the wrong shape, an index that never ends), OMNISYNC_EDB, OMNISYNC_ENOMEM,
 * OMNISYNC_ECANCELED. On failure nothing has been enqueued.
 */
int reconcile_run(PGconn *conn, const struct reconcile_options *o, struct reconcile_report *report,
                  char *err, size_t errlen) OMNISYNC_MUST_CHECK;

#endif
