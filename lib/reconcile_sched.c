/*
 * reconcile_sched: the daemon's own reconcile runs. See reconcile_sched.h.
 *
 * Lifetimes follow libuv: the timer, the child's process handle and the pipe of its stdout each
 * count in `handles` until their close callback; the process handle is closed in its exit
 * callback, the pipe at EOF; the run ends (figures read, next run armed) once both happened.
 */
#include "reconcile_sched.h"

#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define REPORT_MAX (64u << 20) /* the JSON of every source's drift list */

static void handle_closed(uv_handle_t *h)
{
    struct reconcile_sched *r = h->data;
    if (--r->handles == 0 && r->closing && r->close_cb != NULL)
        r->close_cb(r);
}

static double child_rate(const struct config *cfg)
{
    return cfg->rate_per_sec > 0 ? cfg->rate_per_sec * RECONCILE_SCHED_SHARE : 0;
}

static void share_rate(struct reconcile_sched *r, int running)
{
    if (r->set_delivery_rate == NULL || r->cfg->rate_per_sec <= 0)
        return;
    r->set_delivery_rate(r->arg, running ? r->cfg->rate_per_sec - child_rate(r->cfg)
                                         : r->cfg->rate_per_sec);
}

static struct metrics_reconcile *metrics_slot(struct metrics *m, const char *source)
{
    for (size_t i = 0; i < m->nreconcile; i++) {
        if (strcmp(m->reconcile[i].source, source) == 0)
            return &m->reconcile[i];
    }
    if (m->nreconcile >= METRICS_RECONCILE_SOURCES)
        return NULL;
    struct metrics_reconcile *slot = &m->reconcile[m->nreconcile++];
    memset(slot, 0, sizeof(*slot));
    snprintf(slot->source, sizeof(slot->source), "%s", source);
    return slot;
}

/* One line of the child's output: one source's report. 0, or -1 when it is not one. */
static int take_report(struct reconcile_sched *r, const char *line)
{
    struct json_object *o = json_tokener_parse(line), *source, *counts, *v;
    int rc = -1;
    if (o == NULL || !json_object_object_get_ex(o, "source", &source) ||
        !json_object_is_type(source, json_type_string) ||
        !json_object_object_get_ex(o, "counts", &counts) ||
        !json_object_is_type(counts, json_type_object))
        goto out;
    struct metrics_reconcile *slot = metrics_slot(r->metrics, json_object_get_string(source));
    if (slot == NULL)
        goto out;
    for (int k = 0; k < METRICS_RECONCILE_KINDS; k++) {
        slot->drift[k] = json_object_object_get_ex(counts, metrics_reconcile_kinds[k], &v)
                             ? json_object_get_int64(v)
                             : 0;
    }
    /* Counts only: the drift list names primary ids, which stay out of logs. */
    log_info("reconcile run: source=%s missing=%lld different=%lld extra=%lld unsendable=%lld "
             "pending=%lld",
             slot->source, slot->drift[0], slot->drift[1], slot->drift[2], slot->drift[3],
             slot->drift[4]);
    rc = 0;
out:
    json_object_put(o);
    return rc;
}

static void arm(struct reconcile_sched *r);

/* Both the exit and the end of the output are in: read the figures, arm the next run. */
static void run_finished(struct reconcile_sched *r)
{
    if (!r->running || !r->exited || r->pipe_open)
        return;
    r->running = 0;
    share_rate(r, 0);
    int ok =
        r->term_signal == 0 && (r->exit_status == 0 || r->exit_status == 3) && !r->report_too_big;
    int lines = 0;
    if (ok && r->report != NULL) {
        for (char *line = strtok(r->report, "\n"); line != NULL; line = strtok(NULL, "\n")) {
            if (take_report(r, line) != 0) {
                ok = 0;
                break;
            }
            lines++;
        }
    }
    if (ok && lines > 0) {
        r->metrics->reconcile_last_success_timestamp_seconds = (double)time(NULL);
    } else if (!r->closing) {
        log_warn("reconcile run failed exit_status=%lld signal=%d; its error is logged above; "
                 "next run in %llu s",
                 (long long)r->exit_status, r->term_signal,
                 (unsigned long long)(r->cfg->reconcile_interval_ms / 1000));
    }
    free(r->report);
    r->report = NULL;
    r->report_len = 0;
    if (!r->closing)
        arm(r);
}

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct reconcile_sched *r = p->data;
    r->exited = 1;
    r->exit_status = exit_status;
    r->term_signal = term_signal;
    r->process_open = 0;
    uv_close((uv_handle_t *)p, handle_closed);
    run_finished(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void close_pipe(struct reconcile_sched *r)
{
    if (!r->pipe_open)
        return;
    r->pipe_open = 0;
    uv_close((uv_handle_t *)&r->out, handle_closed);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct reconcile_sched *r = s->data;
    if (n > 0 && !r->report_too_big) {
        if (r->report_len + (size_t)n > REPORT_MAX) {
            r->report_too_big = 1;
        } else {
            char *grown = realloc(r->report, r->report_len + (size_t)n + 1);
            if (grown == NULL) {
                r->report_too_big = 1;
            } else {
                r->report = grown;
                memcpy(r->report + r->report_len, buf->base, (size_t)n);
                r->report_len += (size_t)n;
                r->report[r->report_len] = '\0';
            }
        }
    }
    free(buf->base);
    if (n < 0) {
        close_pipe(r);
        run_finished(r);
    }
}

static void start_run(struct reconcile_sched *r)
{
    char exe[PATH_MAX];
    size_t exe_len = sizeof(exe);
    char rate[32];
    char *args[10];
    int n = 0;
    if (uv_exepath(exe, &exe_len) != 0) {
        log_error("reconcile: cannot find omnisync's own binary; no scheduled run");
        arm(r);
        return;
    }
    snprintf(rate, sizeof(rate), "%g", child_rate(r->cfg));
    args[n++] = exe;
    if (r->config_path != NULL) {
        args[n++] = "--config";
        args[n++] = (char *)r->config_path;
    }
    args[n++] = "reconcile";
    args[n++] = "--json";
    args[n++] = "--rate";
    args[n++] = rate;
    args[n] = NULL;

    uv_pipe_init(r->loop, &r->out, 0);
    r->out.data = r;
    r->handles++;
    r->pipe_open = 1;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->out},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t opts = {
        .exit_cb = on_exit_cb,
        .file = exe,
        .args = args,
        .stdio_count = 3,
        .stdio = stdio,
    };
    r->process.data = r;
    r->exited = 0;
    r->exit_status = 0;
    r->term_signal = 0;
    r->report_too_big = 0;
    int rc = uv_spawn(r->loop, &r->process, &opts);
    /* The process handle is initialised even when the spawn failed: it must be closed. */
    r->handles++;
    if (rc != 0) {
        log_error("reconcile: cannot start a run: %s; next try after the interval",
                  uv_strerror(rc));
        uv_close((uv_handle_t *)&r->process, handle_closed);
        close_pipe(r);
        arm(r);
        return;
    }
    r->process_open = 1;
    r->running = 1;
    share_rate(r, 1);
    log_info("reconcile run started pid=%d rate_per_sec=%s", r->process.pid, rate);
    uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
}

static void on_timer(uv_timer_t *t)
{
    struct reconcile_sched *r = t->data;
    if (!r->closing && !r->running)
        start_run(r);
}

static void arm(struct reconcile_sched *r)
{
    r->armed_ms = r->cfg->reconcile_interval_ms;
    uv_timer_stop(&r->timer);
    if (r->armed_ms > 0)
        uv_timer_start(&r->timer, on_timer, r->armed_ms, 0);
}

int reconcile_sched_init(struct reconcile_sched *r, uv_loop_t *loop, const struct config *cfg,
                         const char *config_path, struct metrics *metrics)
{
    memset(r, 0, sizeof(*r));
    r->loop = loop;
    r->cfg = cfg;
    r->config_path = config_path;
    r->metrics = metrics;
    int rc = uv_timer_init(loop, &r->timer);
    if (rc != 0)
        return OMNISYNC_EIO;
    r->timer.data = r;
    r->handles = 1;
    arm(r);
    return OMNISYNC_OK;
}

void reconcile_sched_reload(struct reconcile_sched *r)
{
    if (r->closing)
        return;
    if (r->running)
        share_rate(r, 1); /* the reload gave deliveries the whole rate back */
    else if (r->cfg->reconcile_interval_ms != r->armed_ms)
        arm(r);
}

void reconcile_sched_close(struct reconcile_sched *r, void (*close_cb)(struct reconcile_sched *r))
{
    if (r->closing)
        return;
    r->closing = 1;
    r->close_cb = close_cb;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, handle_closed);
    if (r->process_open)
        uv_process_kill(&r->process, SIGTERM);
}
