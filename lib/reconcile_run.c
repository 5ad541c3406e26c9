/*
 * reconcile_run: one run over the API and the database. See reconcile_run.h.
 *
 * It never logs or prints a value it read (names, emails, phones): errors name the page, the
 * customer's Omnidesk id or the field. The API key goes only into the apiKey header.
 */
#include "reconcile_run.h"

#include <curl/curl.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "operator.h"
#include "ratelimit.h"
#include "reconcile_page.h"

#define BODY_MAX (8u << 20) /* one index page of 99 customers is far below this */
#define CRM_PAGE "1000"     /* CRM rows per keyset page */
#define REPAIR_BATCH 500    /* customers per repair transaction */
#define MAX_TRIES 6         /* attempts per request before the run gives up */
#define RETRY_AFTER_CAP_MS 120000

#define INDEX_WINDOW 8 /* index pages in flight at most (and at most max_in_flight) */
#define POLL_MS 100    /* longest wait in the concurrent read: a stop is seen this soon */
#define MAP_SLICE 64   /* CRM rows mapped between two looks at the index answers */
#define RETRY 1        /* classify(): the attempt failed in a way worth another */

/* One transfer: an easy handle and what its answer brought. */
struct xfer {
    CURL *easy;
    char *body;
    size_t body_len;
    int body_too_big;
    long long retry_after_ms;
};

struct reader {
    const struct reconcile_options *o;
    struct xfer x; /* the one-at-a-time requests: the first index page, items */
    struct curl_slist *headers;
    char base[1024];
    struct ratelimit rl;
    struct timespec started;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct xfer *rd = arg;
    size_t n = size * nmemb;
    if (rd->body_len + n > BODY_MAX) {
        rd->body_too_big = 1;
        return 0; /* aborts the transfer: a page this big is not an index page */
    }
    char *grown = realloc(rd->body, rd->body_len + n + 1);
    if (grown == NULL)
        return 0;
    rd->body = grown;
    memcpy(rd->body + rd->body_len, ptr, n);
    rd->body_len += n;
    rd->body[rd->body_len] = '\0';
    return n;
}

/* Retry-After: delay-seconds or an HTTP-date. */
static size_t on_header(char *line, size_t size, size_t nitems, void *arg)
{
    struct xfer *rd = arg;
    size_t n = size * nitems;
    if (n > 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
        char value[128];
        size_t len = n - 12 < sizeof(value) - 1 ? n - 12 : sizeof(value) - 1;
        memcpy(value, line + 12, len);
        value[len] = '\0';
        char *v = value;
        while (*v == ' ' || *v == '\t')
            v++;
        v[strcspn(v, "\r\n")] = '\0';
        if (isdigit((unsigned char)*v)) {
            long long s = atoll(v);
            rd->retry_after_ms = s > RETRY_AFTER_CAP_MS / 1000 ? RETRY_AFTER_CAP_MS : s * 1000;
        } else {
            time_t when = curl_getdate(v, NULL);
            if (when > 0) {
                long long ms = ((long long)when - (long long)time(NULL)) * 1000;
                rd->retry_after_ms = ms < 0 ? 0 : ms > RETRY_AFTER_CAP_MS ? RETRY_AFTER_CAP_MS : ms;
            }
        }
    }
    return n;
}

/* An easy handle with the reader's headers, limits and callbacks into `x`. 0 or -1. */
static int xfer_init(const struct reader *rd, struct xfer *x)
{
    memset(x, 0, sizeof(*x));
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        return -1;
    long timeout_ms = (long)rd->o->cfg->timeout_ms;
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, rd->headers);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? timeout_ms : 5000L);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x->easy, CURLOPT_USERAGENT, "omnisync/" OMNISYNC_VERSION " reconcile");
    return 0;
}

static void xfer_free(struct xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    free(x->body);
    memset(x, 0, sizeof(*x));
}

/* Readies `x` for an attempt at `url`. */
static void xfer_reset(struct xfer *x, const char *url)
{
    x->body_len = 0;
    x->body_too_big = 0;
    x->retry_after_ms = -1;
    curl_easy_setopt(x->easy, CURLOPT_URL, url);
}

static int reader_init(struct reader *rd, const struct reconcile_options *o, char *err,
                       size_t errlen)
{
    memset(rd, 0, sizeof(*rd));
    rd->o = o;
    clock_gettime(CLOCK_MONOTONIC, &rd->started);
    snprintf(rd->base, sizeof(rd->base), "%s", o->cfg->base_url ? o->cfg->base_url : "");
    size_t len = strlen(rd->base);
    while (len > 0 && rd->base[len - 1] == '/')
        rd->base[--len] = '\0';
    char *key_header = NULL;
    if (o->cfg->api_key == NULL || asprintf(&key_header, "apiKey: %s", o->cfg->api_key) < 0) {
        snprintf(err, errlen, "no API key loaded");
        return OMNISYNC_ECONFIG;
    }
    rd->headers = curl_slist_append(NULL, key_header);
    explicit_bzero(key_header, strlen(key_header));
    free(key_header);
    struct curl_slist *h =
        rd->headers ? curl_slist_append(rd->headers, "Accept: application/json") : NULL;
    if (h == NULL) {
        snprintf(err, errlen, "libcurl could not be set up");
        return OMNISYNC_EHTTP;
    }
    rd->headers = h;
    if (xfer_init(rd, &rd->x) != 0) {
        snprintf(err, errlen, "libcurl could not be set up");
        return OMNISYNC_EHTTP;
    }
    /* The daemon's bucket: bursts of up to `rate` requests, so a page that took longer than its
     * share of a second (or a late wake-up) is made up for, not lost. */
    ratelimit_init(&rd->rl, o->rate, 0, mono_ms());
    return OMNISYNC_OK;
}

static void reader_free(struct reader *rd)
{
    xfer_free(&rd->x);
    if (rd->headers) {
        /* The key lives in the first header: wipe it before it is freed. */
        explicit_bzero(rd->headers->data, strlen(rd->headers->data));
        curl_slist_free_all(rd->headers);
    }
    memset(rd, 0, sizeof(*rd));
}

/* The API's message of an error body, made printable and short; "" when there is none. */
static void api_message(const char *body, char *out, size_t outlen)
{
    out[0] = '\0';
    struct json_object *root = body ? json_tokener_parse(body) : NULL, *m;
    const char *text = NULL;
    if (root != NULL && json_object_is_type(root, json_type_object) &&
        json_object_object_get_ex(root, "message", &m) && json_object_is_type(m, json_type_string))
        text = json_object_get_string(m);
    size_t j = 0;
    for (const char *p = text ? text : ""; *p && j + 1 < outlen && j < 160; p++)
        out[j++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
    out[j] = '\0';
    json_object_put(root);
}

/*
 * An index page's answer. reconcile_page_parse reads it straight into customers (`fast`), or,
 * when it leaves the text to json-c, `root` holds the parse that reconcile_page_check and
 * reconcile_remote_parse then judge: the same outcome, the same error, at a fraction of the cost.
 */
struct index_answer {
    long long start;       /* the itemStart asked */
    long long first_total; /* the first page's itemTotal, -1 for the first page */
    int ready;             /* answered: fast or root holds it */
    int is_fast;
    struct reconcile_page_items fast;
    struct json_object *root;
};

static void index_answer_clear(struct index_answer *a)
{
    reconcile_page_items_free(&a->fast);
    json_object_put(a->root);
    a->root = NULL;
    a->ready = a->is_fast = 0;
}

/*
 * What one finished attempt of `x` (curl's code `cc`) amounts to: 0 with *out the parsed JSON
 * (or, for an index page, `page` when not NULL, *out NULL and the page in page->fast when
 * reconcile_page_parse could read it); OMNISYNC_ENOTFOUND on 404; RETRY with `reason` set for a
 * transient failure (transport, timeout, 408, 425, 429, 5xx, a 2xx that is not JSON); otherwise
 * an error with err set.
 */
static int classify(struct xfer *x, CURLcode cc, const char *what, struct index_answer *page,
                    struct json_object **out, char *reason, size_t reasonlen, char *err,
                    size_t errlen)
{
    long status = 0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    *out = NULL;
    if (x->body_too_big) {
        snprintf(err, errlen, "%s: the answer is larger than %u bytes", what, BODY_MAX);
        return OMNISYNC_EINVAL;
    }
    if (cc != CURLE_OK) {
        snprintf(reason, reasonlen, "%s", curl_easy_strerror(cc));
    } else if (status == 401 || status == 403) {
        snprintf(err, errlen,
                 "%s: Omnidesk refused the API key (HTTP %ld); fix the key or its "
                 "CUSTOMER_READ permission and run reconcile again",
                 what, status);
        return OMNISYNC_EHTTP;
    } else if (status == 404) {
        return OMNISYNC_ENOTFOUND;
    } else if (status >= 200 && status < 300) {
        if (page != NULL && x->body_len > 0 &&
            reconcile_page_parse(x->body, x->body_len, page->start, RECONCILE_PAGE_LIMIT,
                                 page->first_total, &page->fast) == 0) {
            page->is_fast = 1;
            return OMNISYNC_OK;
        }
        struct json_object *root = x->body_len ? json_tokener_parse(x->body) : NULL;
        if (root != NULL) {
            *out = root;
            return OMNISYNC_OK;
        }
        snprintf(reason, reasonlen, "HTTP %ld with a body that is not JSON", status);
    } else if (status == 408 || status == 425 || status == 429 || status >= 500 || status < 200) {
        char msg[200];
        api_message(x->body_len ? x->body : NULL, msg, sizeof(msg));
        snprintf(reason, reasonlen, "HTTP %ld%s%s", status, msg[0] ? ": " : "", msg);
    } else {
        char msg[200];
        api_message(x->body_len ? x->body : NULL, msg, sizeof(msg));
        snprintf(err, errlen, "%s: HTTP %ld%s%s", what, status, msg[0] ? ": " : "", msg);
        return OMNISYNC_EHTTP;
    }
    return RETRY;
}

/* A request's retry state: attempts made and the backoff before the next. */
struct tries {
    int attempt;
    uint64_t backoff;
};

static void tries_init(const struct reader *rd, struct tries *t)
{
    t->attempt = 1;
    t->backoff = (uint64_t)rd->o->cfg->backoff_initial_ms;
}

/*
 * After a transient failure (`reason`) of attempt t->attempt with `retry_after_ms` (-1 = none):
 * OMNISYNC_EHTTP with err set when that was the last attempt; otherwise 0, having paused the
 * whole reader (a Retry-After is about the key, not one request) for the backoff or the
 * Retry-After, whichever is longer.
 */
static int tries_next(struct reader *rd, struct tries *t, const char *what, const char *reason,
                      long long retry_after_ms, char *err, size_t errlen)
{
    uint64_t backoff_max = (uint64_t)rd->o->cfg->backoff_max_ms;
    if (backoff_max > 30000)
        backoff_max = 30000; /* a reader that waits a quarter of an hour helps nobody */
    if (t->attempt >= MAX_TRIES) {
        snprintf(err, errlen, "%s: Omnidesk could not be read after %d attempts (last: %s)", what,
                 t->attempt, reason);
        return OMNISYNC_EHTTP;
    }
    uint64_t wait = t->backoff;
    if (retry_after_ms >= 0 && (uint64_t)retry_after_ms > wait)
        wait = (uint64_t)retry_after_ms;
    log_debug("reconcile: %s failed (%s); retry %d in %llu ms", what, reason, t->attempt,
              (unsigned long long)wait);
    ratelimit_pause_until(&rd->rl, mono_ms() + wait);
    t->backoff = t->backoff * 2 > backoff_max ? backoff_max : t->backoff * 2;
    t->attempt++;
    return OMNISYNC_OK;
}

/*
 * GETs base + path, one request at a time. 0 with *out the parsed JSON (an index page: see
 * classify); OMNISYNC_ENOTFOUND on 404; otherwise an error with err set: transient failures are
 * retried up to MAX_TRIES times with backoff and Retry-After first.
 */
static int http_get_json(struct reader *rd, const char *path, const char *what,
                         struct index_answer *page, struct json_object **out, char *err,
                         size_t errlen)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", rd->base, path);
    struct tries t;
    tries_init(rd, &t);
    *out = NULL;
    for (;;) {
        if (rd->o->stop != NULL && *rd->o->stop) {
            snprintf(err, errlen, "interrupted");
            return OMNISYNC_ECANCELED;
        }
        for (uint64_t now = mono_ms(); !ratelimit_take(&rd->rl, now); now = mono_ms())
            nap_ms(ratelimit_wait_ms(&rd->rl, now) + 1);
        xfer_reset(&rd->x, url);
        CURLcode cc = curl_easy_perform(rd->x.easy);
        char reason[256];
        int rc = classify(&rd->x, cc, what, page, out, reason, sizeof(reason), err, errlen);
        if (rc != RETRY)
            return rc;
        rc = tries_next(rd, &t, what, reason, rd->x.retry_after_ms, err, errlen);
        if (rc != 0)
            return rc;
    }
}

/* ---- Omnidesk's side ---- */

struct remotes {
    struct reconcile_remote *v;
    size_t n, cap;
};

static void remotes_free(struct remotes *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        reconcile_remote_free(&rs->v[i]);
    free(rs->v);
    memset(rs, 0, sizeof(*rs));
}

/* The brand a customer is keyed under: the outbox's convention, 0 = the configured brand. */
static long long key_brand(const struct config *cfg, long long brand)
{
    return brand == 0 || brand == cfg->brand_id ? 0 : brand;
}

static int remote_cmp(const void *a, const void *b)
{
    const struct reconcile_remote *x = a, *y = b;
    if (x->brand_id != y->brand_id)
        return x->brand_id < y->brand_id ? -1 : 1;
    return strcmp(x->primary_id, y->primary_id);
}

static struct reconcile_remote *remotes_find(struct remotes *rs, long long brand, const char *pid)
{
    struct reconcile_remote key = {.brand_id = brand, .primary_id = (char *)pid};
    if (rs->n == 0)
        return NULL;
    return bsearch(&key, rs->v, rs->n, sizeof(rs->v[0]), remote_cmp);
}

static void report_progress(struct reader *rd, long long pages, long long total_pages,
                            long long compared, long long crm_estimate)
{
    if (rd->o->progress == NULL)
        return;
    struct reconcile_progress p = {pages, total_pages, compared, seconds_since(&rd->started), -1};
    /* The pages are most of the time; the CRM side is a few seconds at most. */
    if (total_pages > 0 && pages > 0 && pages < total_pages)
        p.eta_seconds = p.seconds / (double)pages * (double)(total_pages - pages);
    else if (crm_estimate > 0 && compared > 0 && compared < crm_estimate)
        p.eta_seconds = 0;
    rd->o->progress(rd->o->arg, &p);
}

static void index_what(char *what, size_t len, long long start)
{
    snprintf(what, len, "index page at itemStart=%lld", start);
}

/* Adds `r` (taken: moved into rs or freed) to rs when it is omnisync's. */
static int keep_remote(struct reader *rd, struct remotes *rs, struct reconcile_remote *r, char *err,
                       size_t errlen)
{
    const struct config *cfg = rd->o->cfg;
    if (r->primary_id == NULL ||
        (rd->o->src->brand_id_column == NULL && key_brand(cfg, r->brand_id) != 0)) {
        reconcile_remote_free(r); /* not omnisync's: no external id, another brand */
        return OMNISYNC_OK;
    }
    r->brand_id = key_brand(cfg, r->brand_id);
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 1024;
        struct reconcile_remote *grown = realloc(rs->v, cap * sizeof(*grown));
        if (grown == NULL) {
            reconcile_remote_free(r);
            snprintf(err, errlen, "out of memory");
            return OMNISYNC_ENOMEM;
        }
        rs->v = grown;
        rs->cap = cap;
    }
    rs->v[rs->n++] = *r;
    memset(r, 0, sizeof(*r));
    return OMNISYNC_OK;
}

/*
 * Checks the index page `a` (its answer cleared here) against the request and *total (-1 before
 * the first page, which sets it) and adds its customers that are omnisync's to rs. A page that
 * reconcile_page_parse read has passed those checks against a->first_total, which is *total.
 */
static int take_page(struct reader *rd, struct index_answer *a, long long *total,
                     struct remotes *rs, char *err, size_t errlen)
{
    int rc = OMNISYNC_OK;
    long long item_total;
    if (a->is_fast) {
        item_total = a->fast.item_total;
        for (size_t i = 0; rc == 0 && i < a->fast.n; i++)
            rc = keep_remote(rd, rs, &a->fast.v[i], err, errlen);
    } else {
        char what[96];
        index_what(what, sizeof(what), a->start);
        struct reconcile_page page;
        rc = reconcile_page_check(a->root, a->start, RECONCILE_PAGE_LIMIT, *total, &page, err,
                                  errlen);
        item_total = page.item_total;
        for (size_t i = 0; rc == 0 && i < page.nitems; i++) {
            struct reconcile_remote r;
            rc = reconcile_remote_parse(json_object_array_get_idx(page.items, i), &r, err, errlen);
            if (rc != 0) {
                char detail[256];
                snprintf(detail, sizeof(detail), "%s", err);
                snprintf(err, errlen, "%s: %s", what, detail);
                break;
            }
            rc = keep_remote(rd, rs, &r, err, errlen);
        }
    }
    index_answer_clear(a);
    if (rc == 0 && *total < 0)
        *total = item_total;
    return rc;
}

/* ---- the CRM's pages, read while the index pages are ---- */

/*
 * A CRM row mapped as a delivery would send it, kept for the comparison: what
 * reconcile_compare, reconcile_needs_item and reconcile_values read of its plan, moved out of
 * the plan (the rest of the plan and the row's JSON are freed at once).
 */
struct mapped_row {
    char *key; /* the CRM's primary id */
    long long brand;
    enum mapping_kind kind; /* MAPPING_UPSERT or MAPPING_INVALID: the others are not compared */
    char *firstname, *lastname, *email, *telephone;
    struct mapping_custom *custom; /* ncustom; each value malloc'd, each param the source's */
    size_t ncustom;
    unsigned owned_params; /* bit i: custom[i].param is a copy (not one of the source's) */
    char *error, *log_error; /* MAPPING_INVALID */
};
_Static_assert(CONFIG_MAX_CUSTOM <= 32, "owned_params has a bit per custom field");

static void mapped_row_free(struct mapped_row *m)
{
    free(m->key);
    free(m->firstname);
    free(m->lastname);
    free(m->email);
    free(m->telephone);
    for (size_t i = 0; i < m->ncustom; i++) {
        if (m->owned_params & (1u << i))
            free((char *)m->custom[i].param);
        free(m->custom[i].value);
    }
    free(m->custom);
    free(m->error);
    free(m->log_error);
    memset(m, 0, sizeof(*m));
}

/*
 * The CRM table in keyset pages of CRM_PAGE rows, with libpq's asynchronous API on the run's
 * connection (idle while the index is read): the next page's query is sent as soon as the one
 * before it has answered, and crm_step takes what has arrived without waiting, between index
 * answers. The comparison needs every index page first, but mapping a row does not: while the
 * index answers are awaited, crm_map maps the rows that are in (a slice at a time) into
 * struct mapped_row, the few strings the comparison reads, and frees each page once its rows
 * are mapped; the comparison after the last index page is then a lookup per row.
 */
struct crm {
    PGconn *conn;
    const char *sql;
    char *last;       /* the last key of the newest page */
    PGresult *answer; /* the page that answered, before its query has ended */
    int busy;         /* a query is in flight */
    int done;         /* the last page is in */
    PGresult **pages;
    size_t npages, cap;
    long long rows;
    /* The rows are mapped as soon as they are in, while the index pages are in flight (mapping
     * needs no index page; comparing needs them all): page `map_page`, row `map_next` next. */
    struct mapped_row *mapped;
    size_t nmapped, mapped_cap;
    size_t map_page;
    int map_next;
    int map_rc; /* the first row that could not be mapped: mapping stops there */
    char map_err[512];
};

static int crm_send(struct crm *c, char *err, size_t errlen)
{
    const char *params[] = {c->last, CRM_PAGE};
    if (!PQsendQueryParams(c->conn, c->sql, 2, NULL, params, NULL, NULL, 0)) {
        db_error_message(c->conn, NULL, err, errlen);
        return OMNISYNC_EDB;
    }
    c->busy = 1;
    return OMNISYNC_OK;
}

/* Starts the read: the first page's query. */
static int crm_start(struct crm *c, PGconn *conn, const char *sql, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->conn = conn;
    c->sql = sql;
    return crm_send(c, err, errlen);
}

/* A page whose query has ended: kept, and the next one asked for unless it was the last. */
static int crm_take(struct crm *c, PGresult *page, char *err, size_t errlen)
{
    int rows = PQntuples(page);
    if (rows == 0) {
        PQclear(page);
        c->done = 1;
        return OMNISYNC_OK;
    }
    if (c->npages == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        PGresult **grown = realloc(c->pages, cap * sizeof(*grown));
        if (grown == NULL) {
            PQclear(page);
            snprintf(err, errlen, "out of memory");
            return OMNISYNC_ENOMEM;
        }
        c->pages = grown;
        c->cap = cap;
    }
    c->pages[c->npages++] = page;
    c->rows += rows;
    if (rows < atoi(CRM_PAGE)) {
        c->done = 1;
        return OMNISYNC_OK;
    }
    free(c->last);
    c->last = strdup(PQgetvalue(page, rows - 1, 0));
    if (c->last == NULL) {
        snprintf(err, errlen, "out of memory");
        return OMNISYNC_ENOMEM;
    }
    return crm_send(c, err, errlen);
}

/*
 * Takes the answers that have arrived (wait = 0: never blocks) or waits for the query in flight
 * to end (wait = 1). 0 (c->done once the last page is in), or an error with err set.
 */
static int crm_step(struct crm *c, int wait, char *err, size_t errlen)
{
    while (c->busy) {
        if (!wait) {
            if (!PQconsumeInput(c->conn)) {
                db_error_message(c->conn, NULL, err, errlen);
                return OMNISYNC_EDB;
            }
            if (PQisBusy(c->conn))
                return OMNISYNC_OK;
        }
        PGresult *res = PQgetResult(c->conn);
        if (res != NULL) {
            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                db_error_message(c->conn, res, err, errlen);
                PQclear(res);
                return OMNISYNC_EDB; /* crm_free drains what is left */
            }
            PQclear(c->answer); /* one result per query: a second cannot happen */
            c->answer = res;
            continue;
        }
        c->busy = 0;
        PGresult *page = c->answer;
        c->answer = NULL;
        if (page == NULL) {
            db_error_message(c->conn, NULL, err, errlen);
            return OMNISYNC_EDB;
        }
        int rc = crm_take(c, page, err, errlen);
        if (rc != 0)
            return rc;
    }
    return OMNISYNC_OK;
}

/* The socket to wait on while a query is in flight, else -1. */
static int crm_socket(const struct crm *c)
{
    return c != NULL && c->busy ? PQsocket(c->conn) : -1;
}

/* Frees the pages; a query still in flight (an error, an interrupt) is cancelled and its
 * results drained, so the connection can serve the next statement. */
static void crm_free(struct crm *c)
{
    if (c->busy) {
        PGcancel *cancel = PQgetCancel(c->conn);
        char ignored[256];
        if (cancel != NULL && !PQcancel(cancel, ignored, sizeof(ignored))) {
            /* the query then runs to its end; draining waits for it */
        }
        PQfreeCancel(cancel);
        PGresult *res;
        while ((res = PQgetResult(c->conn)) != NULL)
            PQclear(res);
        c->busy = 0;
    }
    PQclear(c->answer);
    for (size_t i = 0; i < c->npages; i++)
        PQclear(c->pages[i]);
    free(c->pages);
    free(c->last);
    for (size_t i = 0; i < c->nmapped; i++)
        mapped_row_free(&c->mapped[i]);
    free(c->mapped);
    memset(c, 0, sizeof(*c));
}

/* A copy of `s` (NULL stays NULL); sets *failed when out of memory. */
static char *copy_or_null(const char *s, int *failed)
{
    char *copy = s ? strdup(s) : NULL;
    if (s != NULL && copy == NULL)
        *failed = 1;
    return copy;
}

/*
 * Maps one CRM row (its key, mapped columns as JSON text, outbox brand) as a delivery would send
 * it: the row as one full-state change, through mapping and validation (and so through any name
 * normalisation the source configures). Appends it to c->mapped unless it is flagged for erasure
 * (omnisync would purge it, not send it: it is not compared).
 */
static int map_row(struct crm *c, const struct reconcile_options *o, const char *key,
                   const char *data, size_t data_len, long long brand, char *err, size_t errlen)
{
    struct json_object *new_data = NULL;
    if (reconcile_row_parse(data, data_len, &new_data) != 0)
        new_data = json_tokener_parse(data);
    if (new_data == NULL) {
        snprintf(err, errlen, "CRM row %s: its mapped columns are not JSON", key);
        return OMNISYNC_EDB;
    }
    struct mapping_row row = {.id = 0, .op = "reconcile", .old_data = NULL, .new_data = new_data};
    struct mapping_plan plan;
    size_t planned = 0;
    int n = mapping_plan_rows(o->cfg, o->src, &row, 1, &plan, &planned);
    if (n < 0) {
        json_object_put(new_data);
        snprintf(err, errlen, "out of memory");
        return OMNISYNC_ENOMEM;
    }
    int failed = 0;
    if (plan.kind == MAPPING_UPSERT || plan.kind == MAPPING_INVALID) {
        if (c->nmapped == c->mapped_cap) {
            size_t cap = c->mapped_cap ? c->mapped_cap * 2 : 1024;
            struct mapped_row *grown = realloc(c->mapped, cap * sizeof(*grown));
            if (grown == NULL)
                failed = 1;
            else {
                c->mapped = grown;
                c->mapped_cap = cap;
            }
        }
        if (!failed) {
            struct mapped_row *m = &c->mapped[c->nmapped++];
            memset(m, 0, sizeof(*m));
            m->key = copy_or_null(key, &failed);
            m->brand = brand;
            m->kind = plan.kind;
            /* The plan's own copies move (its custom fields' names point into the row). */
            m->firstname = plan.firstname;
            m->lastname = plan.lastname;
            m->email = plan.email;
            m->telephone = plan.telephone;
            plan.firstname = plan.lastname = plan.email = plan.telephone = NULL;
            if (plan.ncustom > 0 &&
                (m->custom = calloc(plan.ncustom, sizeof(*m->custom))) == NULL)
                failed = 1;
            for (size_t i = 0; m->custom != NULL && i < plan.ncustom; i++) {
                /* The name is one of the source's custom parameters (the read's JSON is built
                 * from them): shared, not copied per row. */
                for (size_t j = 0; j < o->src->ncustom && m->custom[i].param == NULL; j++)
                    if (strcmp(o->src->custom[j].param, plan.custom[i].param) == 0)
                        m->custom[i].param = o->src->custom[j].param;
                if (m->custom[i].param == NULL) {
                    m->custom[i].param = copy_or_null(plan.custom[i].param, &failed);
                    m->owned_params |= 1u << i;
                }
                m->custom[i].value = plan.custom[i].value;
                plan.custom[i].value = NULL;
                m->ncustom = i + 1;
            }
            if (plan.kind == MAPPING_INVALID) {
                m->error = copy_or_null(plan.error, &failed);
                m->log_error = copy_or_null(plan.log_error, &failed);
            }
        }
    }
    mapping_plan_free(&plan);
    json_object_put(new_data);
    if (failed) {
        snprintf(err, errlen, "out of memory");
        return OMNISYNC_ENOMEM;
    }
    return OMNISYNC_OK;
}

/*
 * Maps up to `budget` of the CRM rows that are in and not mapped yet (each page freed once its
 * rows are); 1 when rows that are in remain, else 0. The first row that cannot be mapped stops
 * the mapping: c->map_rc and c->map_err hold its error, which the comparison returns after the
 * rows before it, as a comparison row by row would have.
 */
static int crm_map(struct crm *c, const struct reconcile_options *o, long budget)
{
    while (c->map_rc == 0 && c->map_page < c->npages) {
        PGresult *res = c->pages[c->map_page];
        int rows = PQntuples(res);
        for (; c->map_next < rows; c->map_next++) {
            if (budget-- <= 0)
                return 1;
            int i = c->map_next;
            c->map_rc = map_row(c, o, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                (size_t)PQgetlength(res, i, 1), atoll(PQgetvalue(res, i, 2)),
                                c->map_err, sizeof(c->map_err));
            if (c->map_rc != 0)
                return 0;
        }
        PQclear(res); /* mapped: its memory is not needed any more */
        c->pages[c->map_page++] = NULL;
        c->map_next = 0;
    }
    return 0;
}

/* One index page request of the concurrent read. */
struct slot {
    struct xfer x;
    long long page; /* -1: free */
    int running;    /* added to the multi handle */
    struct tries t;
    char url[1200];
    char what[96];
};

static struct slot *slot_of(struct slot *slots, long long n, CURL *easy)
{
    for (long long i = 0; i < n; i++) {
        if (slots[i].x.easy == easy)
            return &slots[i];
    }
    return NULL;
}

/*
 * Reads index pages 1 .. max_pages - 1 (the first told itemTotal, so their itemStart offsets are
 * known) with up to INDEX_WINDOW (and [omnidesk] max_in_flight) requests in flight, each attempt
 * taking a token from the reader's bucket, as one at a time would: with several in flight the
 * rate, not the latency, sets the pace. Answers are taken in page order, so the customers, the
 * checks and the first error are those of a read one page after another; after a failed page no
 * later page is requested, and the run's error is the first failed page's.
 */
static int read_rest(struct reader *rd, struct remotes *rs, struct reconcile_report *report,
                     long long *total, long long max_pages, struct crm *crm, char *err,
                     size_t errlen)
{
    long long window =
        rd->o->cfg->max_in_flight < INDEX_WINDOW ? rd->o->cfg->max_in_flight : INDEX_WINDOW;
    if (window > max_pages - 1)
        window = max_pages - 1;
    if (window < 1)
        window = 1;
    struct slot *slots = calloc((size_t)window, sizeof(*slots));
    struct index_answer *done = calloc((size_t)max_pages, sizeof(*done));
    CURLM *multi = curl_multi_init();
    long long next = 1, processed = 1, failed = max_pages; /* failed: the first page that did */
    int rc = OMNISYNC_OK, failed_rc = OMNISYNC_OK;
    char failed_err[512] = "";
    if (slots == NULL || done == NULL || multi == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = OMNISYNC_ENOMEM;
        goto out;
    }
    for (long long i = 0; i < window; i++) {
        slots[i].page = -1;
        if (xfer_init(rd, &slots[i].x) != 0) {
            snprintf(err, errlen, "libcurl could not be set up");
            rc = OMNISYNC_EHTTP;
            goto out;
        }
    }
    while (processed < max_pages) {
        if (rd->o->stop != NULL && *rd->o->stop) {
            snprintf(err, errlen, "interrupted");
            rc = OMNISYNC_ECANCELED;
            break;
        }
        while (processed < failed && processed < max_pages && done[processed].ready) {
            rc = take_page(rd, &done[processed], total, rs, err, errlen);
            if (rc != 0)
                break;
            report->pages++;
            report_progress(rd, report->pages, max_pages, 0, 0);
            processed++;
        }
        if (rc != 0)
            break;
        if (processed == failed) {
            rc = failed_rc;
            snprintf(err, errlen, "%s", failed_err);
            break;
        }
        if (processed >= max_pages)
            break;
        /* Start what the window and the bucket allow. */
        uint64_t now = mono_ms();
        long wait_ms = POLL_MS;
        for (long long i = 0; i < window; i++) {
            struct slot *sl = &slots[i];
            if (sl->running)
                continue;
            if (sl->page < 0) {
                if (next >= failed)
                    continue;
                sl->page = next++;
                tries_init(rd, &sl->t);
                long long start = sl->page * RECONCILE_PAGE_LIMIT;
                snprintf(sl->url, sizeof(sl->url), "%s/api/v2/customer?itemStart=%lld&itemLimit=%d",
                         rd->base, start, RECONCILE_PAGE_LIMIT);
                index_what(sl->what, sizeof(sl->what), start);
            }
            if (!ratelimit_take(&rd->rl, now)) {
                uint64_t w = ratelimit_wait_ms(&rd->rl, now) + 1;
                if (w < (uint64_t)wait_ms)
                    wait_ms = (long)w;
                break;
            }
            xfer_reset(&sl->x, sl->url);
            CURLMcode mc = curl_multi_add_handle(multi, sl->x.easy);
            if (mc != CURLM_OK) {
                ratelimit_refund(&rd->rl);
                snprintf(err, errlen, "libcurl could not start a request: %s",
                         curl_multi_strerror(mc));
                rc = OMNISYNC_EHTTP;
                break;
            }
            sl->running = 1;
        }
        if (rc != 0)
            break;
        /* The CRM's answers, between the index's: never waiting for them. */
        if (crm != NULL && (rc = crm_step(crm, 0, err, errlen)) != 0)
            break;
        int still = 0;
        CURLMcode mc = curl_multi_perform(multi, &still);
        if (mc != CURLM_OK) {
            snprintf(err, errlen, "libcurl: %s", curl_multi_strerror(mc));
            rc = OMNISYNC_EHTTP;
            break;
        }
        int finished = 0, left = 0;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURLcode cc = msg->data.result;
            struct slot *sl = slot_of(slots, window, msg->easy_handle);
            if (sl == NULL)
                continue; /* not one of ours: cannot happen */
            curl_multi_remove_handle(multi, sl->x.easy);
            sl->running = 0;
            finished = 1;
            char reason[256], e[512] = "";
            struct index_answer *a = &done[sl->page];
            a->start = sl->page * RECONCILE_PAGE_LIMIT;
            a->first_total = *total;
            int r =
                classify(&sl->x, cc, sl->what, a, &a->root, reason, sizeof(reason), e, sizeof(e));
            if (r == RETRY) {
                r = tries_next(rd, &sl->t, sl->what, reason, sl->x.retry_after_ms, e, sizeof(e));
                if (r == 0)
                    continue; /* the same page again when the pause and the bucket allow */
            } else if (r == OMNISYNC_ENOTFOUND) {
                snprintf(e, sizeof(e), "%s: HTTP 404 (is base_url right?)", sl->what);
                r = OMNISYNC_EHTTP;
            }
            if (r == 0) {
                a->ready = 1;
            } else if (sl->page < failed) {
                failed = sl->page;
                failed_rc = r;
                snprintf(failed_err, sizeof(failed_err), "%s", e);
            }
            sl->page = -1;
        }
        /* Pages after a failed one are not needed: the run ends with the failure. */
        for (long long i = 0; i < window; i++) {
            if (slots[i].page > failed) {
                if (slots[i].running)
                    curl_multi_remove_handle(multi, slots[i].x.easy);
                slots[i].running = 0;
                slots[i].page = -1;
            }
        }
        /* Nothing answered: map CRM rows that are in, a slice at a time so an answer that
         * arrives meanwhile waits at most a slice, and wait only when there are none. */
        if (!finished && crm != NULL && crm_map(crm, rd->o, MAP_SLICE))
            continue;
        if (!finished) {
            struct curl_waitfd db = {crm_socket(crm), CURL_WAIT_POLLIN, 0};
            mc = curl_multi_poll(multi, db.fd >= 0 ? &db : NULL, db.fd >= 0 ? 1 : 0, (int)wait_ms,
                                 NULL);
            if (mc != CURLM_OK) {
                snprintf(err, errlen, "libcurl: %s", curl_multi_strerror(mc));
                rc = OMNISYNC_EHTTP;
                break;
            }
        }
    }
out:
    for (long long i = 0; slots != NULL && i < window; i++) {
        if (slots[i].running)
            curl_multi_remove_handle(multi, slots[i].x.easy);
        xfer_free(&slots[i].x);
    }
    for (long long i = 0; done != NULL && i < max_pages; i++)
        index_answer_clear(&done[i]);
    free(slots);
    free(done);
    if (multi != NULL)
        curl_multi_cleanup(multi);
    return rc;
}

/* Reads every index page into rs, keeping the customers that are omnisync's: the first alone
 * (it tells itemTotal), then the rest concurrently. */
static int read_index(struct reader *rd, struct remotes *rs, struct reconcile_report *report,
                      struct crm *crm, char *err, size_t errlen)
{
    long long total = -1;
    char path[128], what[96];
    snprintf(path, sizeof(path), "/api/v2/customer?itemStart=0&itemLimit=%d", RECONCILE_PAGE_LIMIT);
    index_what(what, sizeof(what), 0);
    struct index_answer first = {.start = 0, .first_total = -1};
    int rc = http_get_json(rd, path, what, &first, &first.root, err, errlen);
    if (rc == OMNISYNC_ENOTFOUND) {
        snprintf(err, errlen, "%s: HTTP 404 (is base_url right?)", what);
        rc = OMNISYNC_EHTTP;
    }
    if (rc == 0)
        rc = take_page(rd, &first, &total, rs, err, errlen);
    index_answer_clear(&first);
    if (rc != 0)
        return rc;
    /* itemTotal fixes how many pages there can be: one more means it never ends. */
    long long max_pages = (total + RECONCILE_PAGE_LIMIT - 1) / RECONCILE_PAGE_LIMIT;
    report->pages++;
    report_progress(rd, report->pages, max_pages, 0, 0);
    if (max_pages > 1)
        rc = read_rest(rd, rs, report, &total, max_pages, crm, err, errlen);
    if (rc != 0)
        return rc;
    if (rs->n > 0) /* qsort and bsearch want an array, even of nothing */
        qsort(rs->v, rs->n, sizeof(rs->v[0]), remote_cmp);
    report->omnidesk_customers = (long long)rs->n;
    return OMNISYNC_OK;
}

/* Replaces what `r` knows of custom fields (and names, channels) with the item endpoint's. */
static int read_item(struct reader *rd, struct reconcile_remote *r, int *gone, char *err,
                     size_t errlen)
{
    char path[128], what[96];
    long long brand = r->brand_id ? r->brand_id : rd->o->cfg->brand_id;
    snprintf(path, sizeof(path), "/api/v2/customer/%lld?brandID=%lld", r->id, brand);
    snprintf(what, sizeof(what), "customer %lld", r->id);
    struct json_object *root = NULL, *customer = NULL;
    *gone = 0;
    int rc = http_get_json(rd, path, what, NULL, &root, err, errlen);
    if (rc == OMNISYNC_ENOTFOUND) {
        *gone = 1; /* deleted between the index and now */
        return OMNISYNC_OK;
    }
    if (rc != 0)
        return rc;
    if (!json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "customer", &customer))
        customer = root; /* the customer at the top level */
    struct reconcile_remote fresh;
    rc = reconcile_remote_parse(customer, &fresh, err, errlen);
    if (rc == 0) {
        fresh.brand_id = r->brand_id;
        fresh.seen = r->seen;
        free(fresh.primary_id);
        fresh.primary_id = r->primary_id; /* the key the array is sorted by stays */
        r->primary_id = NULL;
        reconcile_remote_free(r);
        *r = fresh;
        /* An item that does not list custom fields has none set. */
        r->custom_known = 1;
    } else {
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", err);
        snprintf(err, errlen, "%s: %s", what, detail);
    }
    json_object_put(root);
    return rc;
}

/* ---- the CRM's side ---- */

static void forget_channel(struct reconcile_entry *e, const char *type, const char *value)
{
    char *key = NULL;
    for (int i = 0; i < 2; i++) {
        if (e->forget_channels[i] == NULL) {
            if (asprintf(&key, "%s:%s", type, value) >= 0)
                e->forget_channels[i] = key;
            return;
        }
    }
}

/* Compares one mapped CRM row with Omnidesk's side. */
static int compare_row(struct reader *rd, struct remotes *rs, const struct mapped_row *m,
                       struct reconcile_report *report, char *err, size_t errlen)
{
    const struct reconcile_options *o = rd->o;
    const char *key = m->key;
    /* The parts of the row's plan the comparison reads (see struct mapped_row). */
    struct mapping_plan plan = {.kind = m->kind,
                                .firstname = m->firstname,
                                .lastname = m->lastname,
                                .email = m->email,
                                .telephone = m->telephone,
                                .ncustom = m->ncustom};
    for (size_t i = 0; i < m->ncustom; i++)
        plan.custom[i] = m->custom[i];
    if (m->kind == MAPPING_INVALID) {
        snprintf(plan.error, sizeof(plan.error), "%s", m->error ? m->error : "");
        snprintf(plan.log_error, sizeof(plan.log_error), "%s", m->log_error ? m->log_error : "");
    }
    int rc = OMNISYNC_OK;
    report->crm_customers++;
    long long want_brand = key_brand(o->cfg, m->brand);
    struct reconcile_remote *remote = remotes_find(rs, want_brand, key);
    if (remote != NULL && remote->seen)
        remote = NULL; /* two CRM rows with one key cannot both match */
    if (remote != NULL && plan.kind == MAPPING_UPSERT && reconcile_needs_item(&plan, remote)) {
        int gone = 0;
        rc = read_item(rd, remote, &gone, err, errlen);
        report->items++;
        if (rc != 0)
            return rc;
        if (gone) {
            remote->seen = 1; /* not extra either: it is gone */
            remote = NULL;
        }
    }
    if (remote != NULL)
        remote->seen = 1;
    struct reconcile_diff diff;
    enum reconcile_kind kind = reconcile_compare(&plan, remote, &diff);
    if (kind == RECONCILE_IN_STEP) {
        report->in_step++;
        return OMNISYNC_OK;
    }
    rc = reconcile_report_add(report, key, m->brand, &diff,
                              o->show_data ? reconcile_values(&plan, remote, &diff) : NULL);
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    struct reconcile_entry *e = &report->entries[report->nentries - 1];
    e->forget_created = kind == RECONCILE_MISSING;
    for (size_t i = 0; i < diff.nfields; i++) {
        if (strcmp(diff.fields[i], "email") == 0)
            forget_channel(e, "email", plan.email);
        else if (strcmp(diff.fields[i], "telephone") == 0)
            forget_channel(e, "telephone", plan.telephone);
    }
    return OMNISYNC_OK;
}

/* Reads the CRM pages still to come, then compares every CRM row with Omnidesk's side (complete
 * now: a row's customer may be on any index page). */
static int compare_crm(struct reader *rd, struct crm *crm, struct remotes *rs,
                       struct reconcile_report *report, long long pages_total, char *err,
                       size_t errlen)
{
    int rc = OMNISYNC_OK;
    while (rc == 0 && !crm->done) {
        if (rd->o->stop != NULL && *rd->o->stop) {
            snprintf(err, errlen, "interrupted");
            return OMNISYNC_ECANCELED;
        }
        rc = crm_step(crm, 1, err, errlen);
    }
    /* The rows not mapped while the index was read, a page at a time. */
    while (rc == 0 && crm_map(crm, rd->o, atoi(CRM_PAGE))) {
        if (rd->o->stop != NULL && *rd->o->stop) {
            snprintf(err, errlen, "interrupted");
            return OMNISYNC_ECANCELED;
        }
    }
    for (size_t i = 0; rc == 0 && i < crm->nmapped; i++) {
        if (i % atoi(CRM_PAGE) == 0 && rd->o->stop != NULL && *rd->o->stop) {
            snprintf(err, errlen, "interrupted");
            return OMNISYNC_ECANCELED;
        }
        rc = compare_row(rd, rs, &crm->mapped[i], report, err, errlen);
        mapped_row_free(&crm->mapped[i]); /* compared: its memory is not needed any more */
        if (rc == 0 && ((i + 1) % atoi(CRM_PAGE) == 0 || i + 1 == crm->nmapped))
            report_progress(rd, report->pages, pages_total, report->crm_customers, 0);
    }
    if (rc == 0 && crm->map_rc != 0) {
        snprintf(err, errlen, "%s", crm->map_err);
        rc = crm->map_rc;
    }
    return rc;
}

/* Customers of Omnidesk that no CRM row matched. */
static int add_extra(struct reader *rd, struct remotes *rs, struct reconcile_report *report)
{
    for (size_t i = 0; i < rs->n; i++) {
        const struct reconcile_remote *r = &rs->v[i];
        if (r->seen)
            continue;
        struct reconcile_diff diff = {.kind = RECONCILE_EXTRA};
        struct json_object *values = NULL;
        if (rd->o->show_data) {
            struct mapping_plan none = {.kind = MAPPING_NOTHING};
            values = reconcile_values(&none, r, &diff);
        }
        if (reconcile_report_add(report, r->primary_id, r->brand_id, &diff, values) != 0)
            return OMNISYNC_ENOMEM;
    }
    return OMNISYNC_OK;
}

/* ---- the outbox ---- */

struct open_key {
    long long brand;
    char *primary_id;
};

static int open_key_cmp(const void *a, const void *b)
{
    const struct open_key *x = a, *y = b;
    if (x->brand != y->brand)
        return x->brand < y->brand ? -1 : 1;
    return strcmp(x->primary_id, y->primary_id);
}

/* Customers with rows not yet delivered are `pending`: delivery is on its way. Read after both
 * sides, so a change made during the run counts too. */
static int mark_pending(PGconn *conn, const char *source, struct reconcile_report *report,
                        char *err, size_t errlen)
{
    PGresult *res = NULL;
    int rc = operator_open_customers(conn, source, &res, err, errlen);
    if (rc != 0)
        return rc;
    int n = PQntuples(res);
    struct open_key *keys = n ? calloc((size_t)n, sizeof(*keys)) : NULL;
    if (n > 0 && keys == NULL) {
        PQclear(res);
        return OMNISYNC_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        keys[i].brand = atoll(PQgetvalue(res, i, 0));
        keys[i].primary_id = PQgetvalue(res, i, 1);
    }
    if (n > 0)
        qsort(keys, (size_t)n, sizeof(*keys), open_key_cmp);
    for (size_t i = 0; i < report->nentries && n > 0; i++) {
        struct open_key k = {report->entries[i].brand_id, report->entries[i].primary_id};
        if (bsearch(&k, keys, (size_t)n, sizeof(*keys), open_key_cmp) != NULL)
            reconcile_report_set_pending(report, i);
    }
    free(keys);
    PQclear(res);
    return OMNISYNC_OK;
}

/* Enqueues one 'reconcile' row per missing or different customer, in batches, each batch one
 * transaction. */
static int repair(PGconn *conn, const char *sql, const char *start_id,
                  struct reconcile_report *report, char *err, size_t errlen)
{
    struct operator_repair *batch = calloc(REPAIR_BATCH, sizeof(*batch));
    if (batch == NULL)
        return OMNISYNC_ENOMEM;
    size_t i = 0;
    int rc = OMNISYNC_OK;
    while (rc == 0 && i < report->nentries) {
        size_t wanted = 0;
        for (; i < report->nentries && wanted < REPAIR_BATCH; i++) {
            const struct reconcile_entry *e = &report->entries[i];
            if (e->kind != RECONCILE_MISSING && e->kind != RECONCILE_DIFFERENT)
                continue;
            batch[wanted++] = (struct operator_repair){
                e->primary_id, e->forget_created, {e->forget_channels[0], e->forget_channels[1]}};
        }
        long long n = 0;
        if (wanted > 0)
            rc = operator_reconcile_repair(conn, sql, batch, wanted, start_id, &n, err, errlen);
        if (rc == 0) {
            report->enqueued += n;
            report->repair_skipped += (long long)wanted - n;
        }
    }
    free(batch);
    return rc;
}

/* The run's figures, for `omnisync status`: an operator action like backfill's, no values. */
static int record_run(PGconn *conn, const struct reconcile_report *r, int repaired, char *err,
                      size_t errlen)
{
    char summary[256];
    snprintf(summary, sizeof(summary),
             "crm=%lld omnidesk=%lld in_step=%lld missing=%lld different=%lld extra=%lld "
             "unsendable=%lld pending=%lld%s",
             r->crm_customers, r->omnidesk_customers, r->in_step, r->counts[RECONCILE_MISSING],
             r->counts[RECONCILE_DIFFERENT], r->counts[RECONCILE_EXTRA],
             r->counts[RECONCILE_UNSENDABLE], r->counts[RECONCILE_PENDING],
             repaired ? " repair" : "");
    char enq[64] = "";
    if (repaired)
        snprintf(enq, sizeof(enq), " enqueued=%lld", r->enqueued);
    char reason[320];
    snprintf(reason, sizeof(reason), "%s%s", summary, enq);
    return operator_reconcile_record(conn, r->source, reason, err, errlen);
}

int reconcile_run(PGconn *conn, const struct reconcile_options *o, struct reconcile_report *report,
                  char *err, size_t errlen)
{
    struct reader rd;
    struct remotes rs = {0};
    struct crm crm = {0};
    char *read_sql = NULL, *repair_sql = NULL, start_id[32] = "0";
    int rc = reader_init(&rd, o, err, errlen);
    if (rc == 0)
        rc = operator_reconcile_sql(conn, o->src, &read_sql, &repair_sql, err, errlen);
    /* Rows newer than this were written while the run read: their customers are not repaired
     * with what this run saw. */
    if (rc == 0)
        rc = operator_outbox_last_id(conn, start_id, sizeof(start_id), err, errlen);
    /* The CRM's pages are read while the index pages are: neither waits for the other. */
    if (rc == 0)
        rc = crm_start(&crm, conn, read_sql, err, errlen);
    if (rc == 0)
        rc = read_index(&rd, &rs, report, &crm, err, errlen);
    double index_s = seconds_since(&rd.started);
    size_t crm_pages_then = crm.npages;
    if (rc == 0)
        rc = compare_crm(&rd, &crm, &rs, report, report->pages, err, errlen);
    /* Where the time went, for bench/reconcile's breakdown: the index read (the CRM's pages
     * read meanwhile), then the rest of the CRM read and the comparison. */
    if (rc == 0)
        log_debug("reconcile: index %lld pages in %.3f s (CRM pages read meanwhile: %zu of %zu); "
                  "CRM rest and comparison %.3f s",
                  report->pages, index_s, crm_pages_then, crm.npages,
                  seconds_since(&rd.started) - index_s);
    crm_free(&crm); /* before the connection serves the statements below */
    if (rc == 0)
        rc = add_extra(&rd, &rs, report);
    if (rc == 0)
        rc = mark_pending(conn, o->src->name, report, err, errlen);
    if (rc == 0 && o->repair)
        rc = repair(conn, repair_sql, start_id, report, err, errlen);
    if (rc == 0)
        rc = record_run(conn, report, o->repair, err, errlen);
    if (rc == OMNISYNC_ENOMEM && err[0] == '\0')
        snprintf(err, errlen, "out of memory");
    free(read_sql);
    free(repair_sql);
    remotes_free(&rs);
    reader_free(&rd);
    return rc;
}
