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
#include <stddef.h>
#include <stdint.h>
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

/*
 * Writing a line: the trusted text is the format string itself; every byte a conversion (`%s`,
 * `%d`, ...) produces comes from outside as far as this module knows (a CRM primary id, an API
 * answer, a PostgreSQL message). log_write() formats conversion by conversion into `raw`, marking
 * each byte with where it came from, and takes the line's structure (the message, the ` key=`
 * pairs, a value's surrounding quotes) from format bytes only. A value can therefore never start a
 * pair, a line or a JSON member: every value is written through one escaper (put_value) for both
 * formats, which also replaces invalid UTF-8 with U+FFFD and cuts long values at a character
 * boundary with a visible marker. Callers keep writing `primary_id=%s`; they cannot forget to
 * escape, because there is nothing for them to do.
 */
#define RAW_MAX 8192    /* the formatted message, before escaping */
#define CONV_MAX 1024   /* bytes one conversion may add to it */
#define VALUE_MAX 1024  /* escaped bytes of one pair's value on the line */
#define MSG_MAX 2048    /* escaped bytes of msg on the line */
#define TAIL_RESERVE 40 /* always kept free for `,"log_truncated":true}` and the newline */
#define CUT_MARKER "...[truncated]"

enum {
    BYTE_FORMAT = 0, /* from the format string: trusted */
    BYTE_VALUE = 1,  /* produced by a conversion */
    BYTE_CUT = 2,    /* flag: something was cut off right after this byte */
    BYTE_STRING = 4, /* flag: produced by a string conversion (%s, %c, %p) */
};

struct message {
    char raw[RAW_MAX];
    unsigned char kind[RAW_MAX];
    size_t len;
};

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    int cut; /* pairs were left out for want of room */
};

/* Appends up to n bytes while room is left; never writes past the buffer, whatever len is. */
static void put(struct line *l, const char *s, size_t n)
{
    size_t room = l->len < sizeof(l->buf) ? sizeof(l->buf) - l->len : 0;
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Room for content, the tail reserve left aside. */
static size_t line_room(const struct line *l)
{
    size_t used = l->len + TAIL_RESERVE;
    return used < sizeof(l->buf) ? sizeof(l->buf) - used : 0;
}

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 when the bytes there are not one. Stores the code point.
 */
static size_t utf8_sequence(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        *cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        *cp = c & 0x0f;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        *cp = c & 0x07;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xbf))
            return 0;
        *cp = (*cp << 6) | (b & 0x3f);
    }
    return len;
}

/*
 * The escaped form of the character at s: JSON string escapes, which logfmt readers take too.
 * Control characters (C0, DEL, C1) and the Unicode line separators are escaped, so no byte of a
 * value can end a line or drive a terminal; invalid UTF-8 becomes U+FFFD, one per bad byte.
 * Returns the bytes of s consumed; `out` (12 bytes) receives the escape, `*outlen` its length.
 */
static size_t escape_char(const unsigned char *s, size_t n, char *out, size_t *outlen)
{
    unsigned cp;
    size_t len = utf8_sequence(s, n, &cp);
    if (len == 0) {
        memcpy(out, "\\ufffd", 6);
        *outlen = 6;
        return 1;
    }
    if (cp == '"' || cp == '\\') {
        out[0] = '\\';
        out[1] = (char)cp;
        *outlen = 2;
    } else if (cp == '\n' || cp == '\r' || cp == '\t') {
        out[0] = '\\';
        out[1] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't';
        *outlen = 2;
    } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029) {
        *outlen = (size_t)snprintf(out, 12, "\\u%04x", cp);
    } else {
        memcpy(out, s, len);
        *outlen = len;
    }
    return len;
}

/*
 * Writes `s` (n bytes) as a quoted string with at most `budget` escaped bytes between the quotes.
 * A longer value, or one already cut (`cut`), ends with CUT_MARKER after its last whole
 * character. The caller guarantees budget + 2 bytes of room.
 */
static void put_value(struct line *l, const char *s, size_t n, size_t budget, int cut)
{
    const unsigned char *u = (const unsigned char *)s;
    char esc[12];
    size_t esclen, total = 0;
    for (size_t i = 0; i < n;) {
        i += escape_char(u + i, n - i, esc, &esclen);
        total += esclen;
    }
    size_t limit = budget;
    if (cut || total > budget) {
        cut = 1;
        limit = budget > strlen(CUT_MARKER) ? budget - strlen(CUT_MARKER) : 0;
    }
    put(l, "\"", 1);
    size_t written = 0;
    for (size_t i = 0; i < n;) {
        size_t used = escape_char(u + i, n - i, esc, &esclen);
        if (written + esclen > limit)
            break;
        put(l, esc, esclen);
        written += esclen;
        i += used;
    }
    if (cut && budget >= strlen(CUT_MARKER))
        puts_(l, CUT_MARKER);
    put(l, "\"", 1);
}

/* A JSON number exactly (RFC 8259): -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int is_json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !isdigit((unsigned char)s[i]))
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !isdigit((unsigned char)s[i]))
            return 0;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !isdigit((unsigned char)s[i]))
            return 0;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    }
    return i == n;
}

/* May a logfmt value go unquoted? Only plain ASCII that no reader can misread. */
static int is_bare(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && strchr("-_.:/@+,", c) == NULL)
            return 0;
    }
    return 1;
}

static int is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* Does a ` key=` pair start at i, written by the format string itself (never by a value)? */
static size_t pair_key_end(const struct message *m, size_t i)
{
    if (m->raw[i] != ' ' || (m->kind[i] & BYTE_VALUE))
        return 0;
    size_t j = i + 1;
    while (j < m->len && !(m->kind[j] & BYTE_VALUE) && is_key_char(m->raw[j]))
        j++;
    if (j == i + 1 || j >= m->len || m->raw[j] != '=' || (m->kind[j] & BYTE_VALUE))
        return 0;
    return j;
}

static size_t next_pair(const struct message *m, size_t from)
{
    while (from < m->len && pair_key_end(m, from) == 0)
        from++;
    return from;
}

/* Marks the last byte as followed by a cut (or nothing when the message is empty). */
static void mark_cut(struct message *m)
{
    if (m->len > 0)
        m->kind[m->len - 1] |= BYTE_CUT;
}

/* Appends n bytes of s; `cut` says s is already the cut start of something longer. */
static void append(struct message *m, const char *s, size_t n, unsigned char kind, int cut)
{
    size_t room = sizeof(m->raw) - m->len;
    if (n > room) {
        n = room;
        cut = 1;
    }
    if ((kind & BYTE_VALUE) && n > CONV_MAX) {
        n = CONV_MAX;
        cut = 1;
    }
    if (cut) {
        /* Never keep the first bytes of a character whose last ones are gone. */
        size_t k = n;
        while (k > 0 && n - k < 4 && ((unsigned char)s[k - 1] & 0xc0) == 0x80)
            k--;
        if (k > 0 && ((unsigned char)s[k - 1] & 0xc0) == 0xc0) {
            unsigned cp;
            if (utf8_sequence((const unsigned char *)s + k - 1, n - (k - 1), &cp) == 0)
                n = k - 1;
        }
    }
    memcpy(m->raw + m->len, s, n);
    memset(m->kind + m->len, kind, n);
    m->len += n;
    if (cut)
        mark_cut(m);
}

/*
 * Formats one conversion of `fmt` starting at its '%' into m, taking its argument(s) from ap.
 * Returns the position after the conversion, or NULL for one this writer does not know (the
 * arguments are then out of step, so the caller stops there).
 */
static const char *format_conversion(struct message *m, const char *fmt, va_list *ap)
{
    char spec[32];
    size_t n = 0;
    const char *p = fmt + 1;
    int stars[2], nstars = 0;
    spec[n++] = '%';
    while (*p && strchr("-+ #0'", *p) != NULL && n < 8)
        spec[n++] = *p++;
    if (*p == '*') {
        stars[nstars++] = va_arg(*ap, int);
        spec[n++] = *p++;
    } else {
        while (isdigit((unsigned char)*p) && n < 14)
            spec[n++] = *p++;
    }
    if (*p == '.') {
        spec[n++] = *p++;
        if (*p == '*') {
            stars[nstars++] = va_arg(*ap, int);
            spec[n++] = *p++;
        } else {
            while (isdigit((unsigned char)*p) && n < 22)
                spec[n++] = *p++;
        }
    }
    char length[3] = "";
    if ((p[0] == 'h' && p[1] == 'h') || (p[0] == 'l' && p[1] == 'l')) {
        length[0] = p[0];
        length[1] = p[1];
        spec[n++] = *p++;
        spec[n++] = *p++;
    } else if (*p && strchr("hlLzjt", *p) != NULL) {
        length[0] = *p;
        spec[n++] = *p++;
    }
    char conv = *p;
    if (conv == '\0' || strchr("diouxXcspfFeEgGaA", conv) == NULL)
        return NULL;
    spec[n++] = *p++;
    spec[n] = '\0';

    char out[CONV_MAX + 1];
    int len = -1;
#define EMIT(type)                                                                                 \
    do {                                                                                           \
        type v_ = va_arg(*ap, type);                                                               \
        if (nstars == 0)                                                                           \
            len = snprintf(out, sizeof(out), spec, v_);                                            \
        else if (nstars == 1)                                                                      \
            len = snprintf(out, sizeof(out), spec, stars[0], v_);                                  \
        else                                                                                       \
            len = snprintf(out, sizeof(out), spec, stars[0], stars[1], v_);                        \
    } while (0)
    if (strchr("di", conv) != NULL) {
        if (strcmp(length, "ll") == 0)
            EMIT(long long);
        else if (strcmp(length, "l") == 0)
            EMIT(long);
        else if (strcmp(length, "z") == 0)
            EMIT(ssize_t);
        else if (strcmp(length, "j") == 0)
            EMIT(intmax_t);
        else if (strcmp(length, "t") == 0)
            EMIT(ptrdiff_t);
        else
            EMIT(int);
    } else if (strchr("ouxX", conv) != NULL) {
        if (strcmp(length, "ll") == 0)
            EMIT(unsigned long long);
        else if (strcmp(length, "l") == 0)
            EMIT(unsigned long);
        else if (strcmp(length, "z") == 0)
            EMIT(size_t);
        else if (strcmp(length, "j") == 0)
            EMIT(uintmax_t);
        else if (strcmp(length, "t") == 0)
            EMIT(ptrdiff_t);
        else
            EMIT(unsigned);
    } else if (conv == 'c' && length[0] == '\0') {
        EMIT(int);
    } else if (conv == 's' && length[0] == '\0') {
        EMIT(const char *);
    } else if (conv == 'p') {
        EMIT(void *);
    } else if (strchr("fFeEgGaA", conv) != NULL) {
        if (length[0] == 'L')
            EMIT(long double);
        else
            EMIT(double);
    } else {
        return NULL;
    }
#undef EMIT
    if (len < 0)
        return NULL;
    /* A string's bytes stay a string in JSON, whatever they look like ("12345", "1e5"). */
    unsigned char kind = BYTE_VALUE | (strchr("csp", conv) != NULL ? BYTE_STRING : 0);
    if ((size_t)len < sizeof(out))
        append(m, out, (size_t)len, kind, 0);
    else
        append(m, out, sizeof(out) - 1, kind, 1);
    return p;
}

/* printf into m, conversion by conversion, each byte marked with where it came from. */
static void format_message(struct message *m, const char *fmt, va_list *ap)
{
    m->len = 0;
    const char *p = fmt;
    while (*p) {
        const char *pct = strchr(p, '%');
        size_t lit = pct != NULL ? (size_t)(pct - p) : strlen(p);
        append(m, p, lit, BYTE_FORMAT, 0);
        if (pct == NULL)
            break;
        if (pct[1] == '%') {
            append(m, "%", 1, BYTE_FORMAT, 0);
            p = pct + 2;
            continue;
        }
        p = format_conversion(m, pct, ap);
        if (p == NULL) {
            mark_cut(m);
            break;
        }
    }
}

/* Does a byte of m->raw[from, to) carry `flag` (BYTE_CUT, BYTE_STRING)? */
static int region_has(const struct message *m, size_t from, size_t to, unsigned char flag)
{
    for (size_t i = from; i < to; i++)
        if (m->kind[i] & flag)
            return 1;
    return 0;
}

/*
 * Writes one pair, key from m->raw[key, eq), value up to `end`. A value the format put in quotes
 * (`error="%s"`) loses them here: quoting is the writer's job. Leaves the pair out and marks the
 * line when too little room is left.
 */
static void put_pair(struct line *l, const struct message *m, size_t key, size_t eq, size_t end)
{
    size_t v = eq + 1, vend = end;
    int quoted = 0;
    if (v < vend && m->raw[v] == '"' && !(m->kind[v] & BYTE_VALUE)) {
        quoted = 1;
        v++;
        if (vend > v && m->raw[vend - 1] == '"' && !(m->kind[vend - 1] & BYTE_VALUE))
            vend--;
    }
    int cut = region_has(m, eq, end, BYTE_CUT);
    size_t keylen = eq - key;
    size_t room = line_room(l);
    size_t overhead = keylen + 6; /* ,"key": and the value's quotes */
    if (room < overhead + strlen(CUT_MARKER) + 8) {
        l->cut = 1;
        return;
    }
    size_t budget = room - overhead;
    if (budget > VALUE_MAX)
        budget = VALUE_MAX;
    const char *val = m->raw + v;
    size_t vlen = vend - v;
    if (current_format == LOG_FORMAT_JSON) {
        puts_(l, ",\"");
        put(l, m->raw + key, keylen);
        puts_(l, "\":");
        /* A number only when the format or a numeric conversion wrote it: a string from
         * outside that looks like one ("12345", "1e5") stays a string. */
        if (!quoted && !cut && vlen <= budget && !region_has(m, v, vend, BYTE_STRING) &&
            is_json_number(val, vlen))
            put(l, val, vlen);
        else
            put_value(l, val, vlen, budget, cut);
    } else {
        puts_(l, " ");
        put(l, m->raw + key, keylen);
        puts_(l, "=");
        if (!cut && vlen <= budget && is_bare(val, vlen))
            put(l, val, vlen);
        else
            put_value(l, val, vlen, budget, cut);
    }
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    int saved_errno = errno;
    static struct message m; /* one thread; too big for every caller's stack frame */
    va_list ap;
    va_start(ap, fmt);
    format_message(&m, fmt, &ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));

    /* The message text runs up to the first ` key=` pair of the format. */
    size_t msg_end = next_pair(&m, 0);

    static struct line l;
    l.len = 0;
    l.cut = 0;
    if (stderr_is_journal()) {
        char prio[8];
        snprintf(prio, sizeof(prio), "<%d>", level_priority[level]);
        puts_(&l, prio);
    }
    int json = current_format == LOG_FORMAT_JSON;
    puts_(&l, json ? "{\"ts\":\"" : "ts=");
    puts_(&l, ts);
    puts_(&l, json ? "\",\"level\":\"" : " level=");
    puts_(&l, level_names[level]);
    puts_(&l, json ? "\",\"msg\":" : " msg=");
    put_value(&l, m.raw, msg_end, MSG_MAX, region_has(&m, 0, msg_end, BYTE_CUT));
    for (size_t at = msg_end; at < m.len && !l.cut;) {
        size_t eq = pair_key_end(&m, at);
        size_t end = next_pair(&m, eq + 1);
        put_pair(&l, &m, at + 1, eq, end);
        at = end;
    }
    if (l.cut)
        puts_(&l, json ? ",\"log_truncated\":true" : " log_truncated=true");
    if (json)
        puts_(&l, "}");
    puts_(&l, "\n");

    size_t off = 0;
    while (off < l.len) {
        ssize_t n = write(STDERR_FILENO, l.buf + off, l.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
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
