/*
 * reconcile_sched: `[reconcile] interval` in the daemon: `omnisync run` reconciles by itself.
 *
 * A reconcile run reads the whole customer list page by page and the CRM table: blocking work
 * that has no place on the daemon's loop (one thread, no worker threads). So every `interval`
 * the daemon starts `omnisync reconcile --json --rate R` as a child process (its own binary, the
 * same config file) and reads its report from a pipe: the loop only waits for the child's exit.
 * The child gets a fifth of [omnidesk] rate_per_sec and the daemon's deliveries keep the rest
 * while it runs, so a reconcile never starves live changes and the two together stay within
 * the configured rate. The child reports and never repairs: repairs are an operator's call.
 *
 * The last run's figures become metrics (omnisync_reconcile_drift{source,kind},
 * omnisync_reconcile_last_success_timestamp_seconds); the child itself records the run for
 * `omnisync status`. A failed run is logged and tried again after the next interval.
 */
#ifndef OMNISYNC_RECONCILE_SCHED_H
#define OMNISYNC_RECONCILE_SCHED_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "errors.h"
#include "metrics.h"

/* The share of [omnidesk] rate_per_sec a scheduled reconcile reads with. */
#define RECONCILE_SCHED_SHARE 0.2

struct reconcile_sched {
    uv_loop_t *loop;
    const struct config *cfg; /* borrowed: the running config, read again after a reload */
    const char *config_path;  /* borrowed, may be NULL (the default path) */
    struct metrics *metrics;  /* borrowed */
    /* Called with the rate deliveries may use: rate minus the child's share while it runs,
     * the whole rate again after. May be NULL. */
    void (*set_delivery_rate)(void *arg, double rate_per_sec);
    void *arg;

    uv_timer_t timer;
    uv_process_t process;
    uv_pipe_t out;
    char *report; /* the child's stdout, capped */
    size_t report_len;
    int report_too_big;
    int running; /* a child was started and its exit or EOF is still to come */
    int exited;  /* the child's exit callback ran */
    int64_t exit_status;
    int term_signal;
    int pipe_open;     /* out is open (closed at EOF) */
    int process_open;  /* process is open (closed in its exit callback) */
    uint64_t armed_ms; /* the interval the timer was armed with; 0 = off */
    int closing;
    unsigned handles; /* handles not yet through their close callback */
    void (*close_cb)(struct reconcile_sched *r);
};

/*
 * Prepares the schedule and, when cfg->reconcile_interval_ms > 0, arms the first run one
 * interval from now. Returns 0 (reconcile_sched_close() must then be called) or a negative code
 * (nothing to release).
 */
int reconcile_sched_init(struct reconcile_sched *r, uv_loop_t *loop, const struct config *cfg,
                         const char *config_path, struct metrics *metrics) OMNISYNC_MUST_CHECK;

/* After SIGHUP: re-arms the timer when the interval changed; re-applies the rate share. */
void reconcile_sched_reload(struct reconcile_sched *r);

/* Stops the schedule; a running child is sent SIGTERM (it stops and enqueues nothing). close_cb
 * (may be NULL) runs once every handle is closed. */
void reconcile_sched_close(struct reconcile_sched *r, void (*close_cb)(struct reconcile_sched *r));

#endif
