/*
 * log: one line per event on stderr.
 *
 * Owns the process-wide level and format. It never decides what is secret: callers pass ids,
 * never personal data, and print conninfo strings only through log_conninfo_redacted().
 * A line is formatted into a fixed buffer and written with one write(2), so lines from one
 * process never interleave and a huge message is cut, not allocated.
 */
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "errors.h"

#define LOG_LINE_MAX 4096

static enum log_level current_level = LOG_LEVEL_INFO;
static enum log_format current_format = LOG_FORMAT_LOGFMT;
static int journal_checked;
static int journal_stream;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int level_priority[] = {3, 4, 6, 7};

void log_configure(enum log_level level, enum log_format format)
{
    current_level = level;
    current_format = format;
}

int log_enabled(enum log_level level)
{
    return level <= current_level;
}

int log_level_parse(const char *text, enum log_level *out)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return OMNISYNC_OK;
        }
    }
    return OMNISYNC_EINVAL;
}

int log_format_parse(const char *text, enum log_format *out)
{
    if (strcmp(text, "logfmt") == 0)
        *out = LOG_FORMAT_LOGFMT;
    else if (strcmp(text, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return OMNISYNC_EINVAL;
    return OMNISYNC_OK;
}

/*
 * journald connects stderr as a stream socket and sets JOURNAL_STREAM=dev:inode; the priority
 * prefix is only wanted when stderr is still that socket (not redirected by a wrapper).
 */
static int stderr_is_journal(void)
{
    if (journal_checked)
        return journal_stream;
    journal_checked = 1;
    const char *env = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
        return 0;
    if (fstat(STDERR_FILENO, &st) != 0)
        return 0;
    journal_stream = (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    return journal_stream;
}

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->len + n > sizeof(l->buf) - 2)
        n = sizeof(l->buf) - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_char(struct line *l, char c)
{
    put(l, &c, 1);
}

/* Writes `s` (n bytes) as a quoted string with JSON-compatible escapes (also valid logfmt). */
static void put_quoted(struct line *l, const char *s, size_t n)
{
    put_char(l, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else if (c == '\t') {
            put(l, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            puts_(l, esc);
        } else {
            put_char(l, (char)c);
        }
    }
    put_char(l, '"');
}

/* Does text at `p` start a ` key=` pair? Keys are [a-z0-9_.]+. */
static int pair_starts(const char *p)
{
    if (*p != ' ')
        return 0;
    p++;
    const char *k = p;
    while (*p && (islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_' || *p == '.'))
        p++;
    return p > k && *p == '=';
}

/* Finds the end of a pair's value: a quoted string, or up to the next space. */
static const char *value_end(const char *v, int *quoted)
{
    *quoted = 0;
    if (*v == '"') {
        *quoted = 1;
        for (v++; *v && *v != '"'; v++) {
            if (*v == '\\' && v[1])
                v++;
        }
        return *v == '"' ? v + 1 : v;
    }
    while (*v && *v != ' ')
        v++;
    return v;
}

static int is_number(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    char tmp[64];
    if (n >= sizeof(tmp))
        return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    (void)strtod(tmp, &end);
    return errno == 0 && *end == '\0' && (isdigit((unsigned char)tmp[0]) || tmp[0] == '-');
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    int saved_errno = errno;
    char message[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));

    /* The message text runs up to the first " key=" pair. */
    const char *pairs = message;
    while (*pairs && !pair_starts(pairs))
        pairs++;
    size_t msg_len = (size_t)(pairs - message);

    struct line l;
    l.len = 0;
    if (stderr_is_journal()) {
        char prio[8];
        snprintf(prio, sizeof(prio), "<%d>", level_priority[level]);
        puts_(&l, prio);
    }

    if (current_format == LOG_FORMAT_JSON) {
        puts_(&l, "{\"ts\":\"");
        puts_(&l, ts);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_names[level]);
        puts_(&l, "\",\"msg\":");
        put_quoted(&l, message, msg_len);
        const char *p = pairs;
        while (*p) {
            p++; /* the space */
            const char *eq = strchr(p, '=');
            int quoted;
            const char *v = eq + 1;
            const char *end = value_end(v, &quoted);
            puts_(&l, ",");
            put_quoted(&l, p, (size_t)(eq - p));
            puts_(&l, ":");
            if (quoted)
                put(&l, v, (size_t)(end - v)); /* already a valid JSON string */
            else if (is_number(v, (size_t)(end - v)))
                put(&l, v, (size_t)(end - v));
            else
                put_quoted(&l, v, (size_t)(end - v));
            p = end;
            while (*p && !pair_starts(p))
                p++;
        }
        puts_(&l, "}");
    } else {
        puts_(&l, "ts=");
        puts_(&l, ts);
        puts_(&l, " level=");
        puts_(&l, level_names[level]);
        puts_(&l, " msg=");
        put_quoted(&l, message, msg_len);
        puts_(&l, pairs);
    }
    l.buf[l.len++] = '\n';

    ssize_t off = 0;
    while (off < (ssize_t)l.len) {
        ssize_t n = write(STDERR_FILENO, l.buf + off, l.len - (size_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += n;
    }
    errno = saved_errno;
}

void log_conninfo_redacted(const char *conninfo, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    out[0] = '\0';
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (opts == NULL) {
        /* The parse error can quote the input, password included: never print it. */
        PQfreemem(errmsg);
        snprintf(out, outlen, "(unparsable conninfo)");
        return;
    }
    size_t len = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        const char *val = o->dispchar[0] == '*' ? "***" : o->val;
        int n = snprintf(out + len, outlen - len, "%s%s=%s", len ? " " : "", o->keyword, val);
        if (n < 0 || (size_t)n >= outlen - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)n;
    }
    PQconninfoFree(opts);
}
