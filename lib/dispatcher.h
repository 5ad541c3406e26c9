/*
 * dispatcher: claims due outbox rows and drives their delivery (DESIGN §1, §3).
 *
 * It owns the in-memory pipeline: claimed customers waiting for a request slot, customers with
 * a request in flight, the token bucket, the circuit breaker and the pause after a refused key.
 * The database stays the truth: rows are leased while held here (the lease renewed while they
 * are), and per-customer order comes from the claim query, so several processes cooperate.
 *
 * It never spends a row's attempt on what is not the row's fault: an open circuit, a 429, a
 * refused key or a shutdown release rows without counting an attempt.
 */
#ifndef OMNISYNC_DISPATCHER_H
#define OMNISYNC_DISPATCHER_H

#include <stdint.h>
#include <uv.h>

#include "breaker.h"
#include "config.h"
#include "dbloop.h"
#include "delivery.h"
#include "metrics.h"
#include "omnidesk.h"
#include "queue.h"
#include "ratelimit.h"
#include "recorder.h"

/* What health shows beside the metrics (the counters live in struct metrics). */
struct dispatcher_stats {
    double last_success_at; /* epoch seconds, 0 never */
    char last_error[256];   /* plain words, no personal data */
};

/* Finished deliveries whose memory is kept for the next ones (30 kB each, 2 MB at most): a claim
 * starts up to half a batch of deliveries at once (50 with the default batch_size). */
#define DISPATCHER_SPARE_MAX 64

struct dispatcher {
    uv_loop_t *loop;
    struct config *cfg; /* the running config: read at use, so a reload applies */
    struct dbloop *db;  /* the work connection: claims, lease renewal, the purge guard */
    struct dbloop *move_db; /* NULL, or where captured backlogs are moved (the listener's) */
    struct omnidesk *client;
    struct recorder recorder;
    struct ratelimit rate;
    struct breaker breaker;
    char process[128];

    struct queue ready; /* struct delivery claimed, waiting for a slot or a token (FIFO) */
    unsigned nready;
    struct delivery *spare[DISPATCHER_SPARE_MAX]; /* finished deliveries' memory, for reuse */
    unsigned nspare;
    unsigned nactive;            /* a request or a reservation in flight */

    uv_timer_t poll_timer;  /* fallback poll: NOTIFY can be missed while disconnected */
    uv_timer_t wake_timer;  /* rate limit, backoff and probe wake-ups */
    uv_timer_t renew_timer; /* lease renewal */
    uv_timer_t move_timer;  /* the next move apart, while another process holds the move */
    int claiming;
    int moving;       /* a move in flight on move_db (see "Moves apart") */
    int wake_pending; /* a wake-up (NOTIFY, poll, reconnect): claim while below high water */
    int poll_pending; /* a poll tick while customers waited for a slot: claim once none waits */
    int more_due;     /* rows may be due that no wake-up announces (the last claim was full or
                         left captured rows, an outcome that leaves rows due was recorded):
                         claim at the low-water mark */
    int capture_due;  /* rows may wait in omnisync.capture that no wake-up announces (a claim
                         left some, or failed): the next claim that may move looks */
    unsigned last_claim_limit;
    int passed_over;   /* the last claim passed over rows behind rows this process holds:
                          claim after each recorded outcome */
    int due_on_record; /* an outcome that leaves rows due is not recorded yet */
    uint64_t retry_ms; /* 0, or the shortest wait of a retry outcome not recorded yet */
    unsigned long long records;       /* recorder callbacks so far */
    unsigned long long claim_records; /* `records` when the last claim was sent */
    int draining;
    int auth_paused;
    unsigned auth_probes;
    int probe_in_flight;
    uint64_t auth_probe_at;
    unsigned handles_open;
    int closing; /* 1: dispatcher_close was called; 2: closed_cb has run */
    void (*drained_cb)(struct dispatcher *d);
    void (*closed_cb)(struct dispatcher *d);
    struct dispatcher_stats stats;
    struct metrics *metrics; /* optional: counters and histograms are kept when set */
};

/*
 * Sets up the dispatcher on `loop`, using `db` (the work connection), `record_db` (the
 * recorder's own connection, so a claim never waits behind a batch of outcomes), `move_db`
 * (NULL, or a connection that runs no long statements of its own, where a backlog of captured
 * rows is moved while the claims go on: see "Moves apart") and `client`; all must outlive it.
 * Claims start with dispatcher_wake(). 0 or a negative code.
 */
int dispatcher_init(struct dispatcher *d, uv_loop_t *loop, struct config *cfg, struct dbloop *db,
                    struct dbloop *record_db, struct dbloop *move_db, struct omnidesk *client,
                    const char *process) OMNISYNC_MUST_CHECK;
/* Something may be due (a NOTIFY, a poll, a reconnect): claim as soon as allowed, whenever
 * fewer customers than the high-water mark are held. */
void dispatcher_wake(struct dispatcher *d);
/* The running config changed (SIGHUP): rates, key, timeouts. A refused key is probed again. */
void dispatcher_reload(struct dispatcher *d);
/* The work connection dropped: deliveries not yet started are let go (their leases expire).
 * Not for the recorder's connection: leases are renewed on the work connection, and the
 * recorder keeps its outcomes until its own connection is back. */
void dispatcher_db_lost(struct dispatcher *d);
/* Stops claiming; deliveries finish their request in flight and release the rest; outcomes are
 * recorded; then drained_cb runs once. Requests the service aborts at its deadline come back as
 * transient failures, and their rows are released too. */
void dispatcher_drain(struct dispatcher *d, void (*drained_cb)(struct dispatcher *d));
/*
 * Stops everything (a drain first is the clean way: dispatcher_drain) and closes the timers.
 * Callbacks still owed (a claim, a purge reservation, a request, a probe) are honoured as late:
 * their deliveries are freed and their rows left to their lease. closed_cb runs once, after the
 * timers are closed and every such callback has come back, so the work connection and the
 * client must be closed too (in any order) for it to run. Calling it again is a no-op.
 */
void dispatcher_close(struct dispatcher *d, void (*closed_cb)(struct dispatcher *d));

int dispatcher_ready_api(const struct dispatcher *d); /* not refusing the key */
/* Milliseconds left of a pause the API asked for (429/503 Retry-After); 0 when none. */
uint64_t dispatcher_api_pause_ms(const struct dispatcher *d);
/* Ends such a pause now (`why`, borrowed: "SIGHUP", "omnisync resume" for the log) and wakes. */
void dispatcher_end_api_pause(struct dispatcher *d, const char *why);
unsigned dispatcher_in_flight(const struct dispatcher *d);
#define DISPATCHER_CLAIM_STATEMENT OUTBOX_CLAIM_STATEMENT
/* The statement the work connection must run after each connect (its on_connect_sql). */
int dispatcher_prepare_sql(char *out, size_t len) OMNISYNC_MUST_CHECK;
/* The lease this process takes on claimed rows. */
uint64_t dispatcher_lease_ms(const struct config *cfg);

#endif
