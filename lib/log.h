/*
 * log: one line per event on stderr, logfmt or JSON.
 *
 * Messages are printf-formatted; context travels as key=value pairs written into the format
 * itself (`outbox_id=%lld primary_id=%s`). The line's structure comes from the format string
 * only: the text before its first ` key=` is msg, each ` key=` of the format starts a pair, and
 * whatever a conversion produces (a CRM id, an API answer, a PostgreSQL message) is a value,
 * escaped by the writer for the line's format. So a hostile value can neither start a line nor
 * a pair nor end a quoted string; callers write plain `key=%s` (or `key="%s"`, the same thing)
 * and never escape. Values are cut at 1 KiB (msg 2 KiB) on a character boundary and end with
 * "...[truncated]"; invalid UTF-8 becomes U+FFFD. Under journald (JOURNAL_STREAM matches
 * stderr) each line starts with its syslog priority prefix "<N>".
 *
 * This module never sees secrets: callers redact at the source. log_conninfo_redacted() is the
 * one way to print a libpq conninfo.
 */
#ifndef OMNISYNC_LOG_H
#define OMNISYNC_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_LOGFMT = 0, LOG_FORMAT_JSON };

/* Sets the threshold and format; cheap, may be called on reload. */
void log_configure(enum log_level level, enum log_format format);
int log_enabled(enum log_level level);

/*
 * Writes one line: `ts=... level=... msg="<text>" key=value...` or the same fields as one JSON
 * object. Supports the conversions d i o u x X c s p f F e E g G a A with the usual flags and
 * length modifiers (not %n, %m or wide characters: the line stops there). Lines are capped at
 * 4 KiB; when pairs had to be left out, the line ends with log_truncated=true.
 */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)                                                                              \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_WARN))                                                           \
            log_write(LOG_LEVEL_WARN, __VA_ARGS__);                                                \
    } while (0)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_INFO))                                                           \
            log_write(LOG_LEVEL_INFO, __VA_ARGS__);                                                \
    } while (0)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                               \
    } while (0)

/*
 * Writes `conninfo` (a libpq conninfo string or URI) into `out` with every option libpq marks as
 * secret (dispchar '*', i.e. password) replaced by "***". Never fails open: if the conninfo cannot
 * be parsed, `out` receives "(unparsable conninfo)". `out` is always NUL-terminated.
 */
void log_conninfo_redacted(const char *conninfo, char *out, size_t outlen);

#endif
