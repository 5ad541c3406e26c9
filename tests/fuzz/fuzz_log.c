/*
 * fuzz_log: a value from outside (a CRM primary id, an API message) written through log.h's
 * public API never makes a second line or an unparseable one.
 *
 * Input: byte 0 picks logfmt or JSON and where the value goes (a pair's value, or the message
 * text); the rest, up to the first NUL and at most 3000 bytes, is the value: past the writer's
 * 1 KiB conversion and value caps, so cuts happen, yet the line (4 KiB cap) keeps every pair.
 * stderr is pointed at a memfd around each call and read back.
 *
 * Properties: exactly one line, ending in its only '\n', no other control character raw, valid
 * UTF-8; in logfmt the pairs are exactly ts, level, msg, outbox_id, primary_id, status (a value
 * cannot add or hide a key) with outbox_id=1 and status=400 intact; in JSON the line is one
 * strict JSON object with exactly those keys, the value is always a string (DESIGN §6: a value
 * from outside is quoted, whatever it looks like) and, when it was valid UTF-8, it comes back
 * unchanged, or cut on a character boundary and marked "...[truncated]" (a cut never splits a
 * character into U+FFFD).
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const expected_keys[] = {"ts",        "level",      "msg",
                                            "outbox_id", "primary_id", "status"};
#define NKEYS (sizeof(expected_keys) / sizeof(expected_keys[0]))

static char *capture(int in_message, const char *value, size_t *len)
{
    int fd = memfd_create("log", MFD_CLOEXEC);
    int saved = dup(STDERR_FILENO);
    char *buf;
    off_t end;

    if (fd < 0 || saved < 0 || dup2(fd, STDERR_FILENO) < 0)
        abort();
    if (in_message)
        log_error("api said: %s outbox_id=%d primary_id=%s status=%d", value, 1, "c-1", 400);
    else
        log_error("delivery failed outbox_id=%d primary_id=%s status=%d", 1, value, 400);
    dup2(saved, STDERR_FILENO);
    close(saved);
    end = lseek(fd, 0, SEEK_END);
    buf = malloc((size_t)end + 1);
    if (pread(fd, buf, (size_t)end, 0) != end)
        abort();
    buf[end] = '\0';
    close(fd);
    *len = (size_t)end;
    return buf;
}

/* Reads one logfmt value at *p: "quoted with \\ escapes" or a bare run of non-space bytes. */
static void skip_logfmt_value(const char **p)
{
    const char *s = *p;

    if (*s == '"') {
        for (s++; *s != '"'; s++) {
            if (*s == '\0')
                abort(); /* unterminated quote */
            if (*s == '\\' && s[1] != '\0')
                s++;
        }
        s++;
    } else {
        while (*s != '\0' && *s != ' ') {
            if (*s == '"')
                abort(); /* a stray quote in a bare value */
            s++;
        }
    }
    *p = s;
}

static void check_logfmt(const char *line)
{
    const char *p = line;
    size_t k = 0;

    while (*p != '\0') {
        const char *key = p;
        while (*p != '\0' && *p != '=' && *p != ' ')
            p++;
        if (*p != '=' || k == NKEYS)
            abort();
        if ((size_t)(p - key) != strlen(expected_keys[k]) ||
            memcmp(key, expected_keys[k], (size_t)(p - key)) != 0)
            abort();
        p++;
        if (k == 3 && strncmp(p, "1 ", 2) != 0)
            abort();
        if (k == 5 && strcmp(p, "400") != 0)
            abort();
        skip_logfmt_value(&p);
        k++;
        if (*p == ' ')
            p++;
        else if (*p != '\0')
            abort();
    }
    if (k != NKEYS)
        abort();
}

#define CUT_MARKER "...[truncated]"

/* got (from the line) is `want`, or a non-empty prefix of it followed by the cut marker. */
static void check_round_trip(const char *got, size_t glen, const char *want, size_t wlen)
{
    size_t mlen = strlen(CUT_MARKER);

    if (glen == wlen && memcmp(got, want, wlen) == 0)
        return;
    if (glen <= mlen || memcmp(got + glen - mlen, CUT_MARKER, mlen) != 0) {
        fprintf(stderr, "fuzz_log: the value came back changed and not marked as cut\n");
        abort();
    }
    glen -= mlen;
    if (glen > wlen || memcmp(got, want, glen) != 0) {
        fprintf(stderr, "fuzz_log: the cut value is not a prefix of the value\n");
        abort();
    }
}

/* want: the value as it should come back (NULL: not checked; it was not valid UTF-8). */
static void check_json(const char *line, size_t len, int in_message, const char *want, size_t wlen)
{
    json_tokener *tok = json_tokener_new();
    json_object *root;
    size_t k = 0;

    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, line, (int)len);

    if (root == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len || !json_object_is_type(root, json_type_object))
        abort();
    json_object_object_foreach(root, key, val)
    {
        if (k == NKEYS || strcmp(key, expected_keys[k]) != 0)
            abort();
        if (k == 4 && !json_object_is_type(val, json_type_string)) {
            fprintf(stderr, "fuzz_log: primary_id (a %%s conversion) is not a JSON string\n");
            abort();
        }
        if (want != NULL && k == (in_message ? 2u : 4u))
            check_round_trip(json_object_get_string(val), (size_t)json_object_get_string_len(val),
                             want, wlen);
        if (k == 3 && json_object_get_int(val) != 1)
            abort();
        if (k == 5 && json_object_get_int(val) != 400)
            abort();
        k++;
    }
    if (k != NKEYS)
        abort();
    json_object_put(root);
    json_tokener_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char value[3001], want[3100];
    size_t vlen, len, wlen;
    char *line;
    int json, in_message;

    if (size < 1)
        return 0;
    json = data[0] & 1;
    in_message = (data[0] >> 1) & 1;
    vlen = size - 1 < sizeof(value) - 1 ? size - 1 : sizeof(value) - 1;
    memcpy(value, data + 1, vlen);
    value[vlen] = '\0';
    vlen = strlen(value);

    log_configure(LOG_LEVEL_DEBUG, json ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT);
    line = capture(in_message, value, &len);
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL) {
        fprintf(stderr, "fuzz_log: the value made %s line\n", len ? "a second" : "no");
        abort();
    }
    line[--len] = '\0';
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            abort();
    /* Invalid UTF-8 in a value becomes U+FFFD: the line is valid UTF-8 whatever the value. */
    if (!fuzz_utf8_valid((const unsigned char *)line, len)) {
        fprintf(stderr, "fuzz_log: the line is not valid UTF-8\n");
        abort();
    }
    if (json) {
        int valid = fuzz_utf8_valid((const unsigned char *)value, vlen);
        wlen = (size_t)snprintf(want, sizeof(want), "%s%s", in_message ? "api said: " : "", value);
        check_json(line, len, in_message, valid ? want : NULL, wlen);
    } else
        check_logfmt(line);
    free(line);
    return 0;
}
