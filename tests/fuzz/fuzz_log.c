/*
 * fuzz_log: a value from outside (a CRM primary id, an API message) written through log.h's
 * public API never makes a second line or an unparseable one.
 *
 * Input: byte 0 picks logfmt or JSON and where the value goes (a pair's value, or the message
 * text); the rest, up to the first NUL and at most 1000 bytes (well under the 4 KiB line cap, so
 * nothing is cut), is the value. stderr is pointed at a memfd around each call and read back.
 *
 * Properties: exactly one line, ending in its only '\n', no other control character raw; in
 * logfmt the pairs are exactly ts, level, msg, outbox_id, primary_id, status (a value cannot add
 * or hide a key) with outbox_id=1 and status=400 intact; in JSON the line is one JSON object
 * with exactly those keys, and the value comes back as a string.
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

static void check_json(const char *line, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, line, (int)len);
    size_t k = 0;

    if (root == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len || !json_object_is_type(root, json_type_object))
        abort();
    json_object_object_foreach(root, key, val)
    {
        if (k == NKEYS || strcmp(key, expected_keys[k]) != 0)
            abort();
        if (k == 4 && !json_object_is_type(val, json_type_string))
            abort();
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
    char value[1001];
    size_t vlen, len;
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
    if (fuzz_utf8_valid((const unsigned char *)value, vlen) &&
        !fuzz_utf8_valid((const unsigned char *)line, len))
        abort();
    if (json)
        check_json(line, len);
    else
        check_logfmt(line);
    free(line);
    return 0;
}
