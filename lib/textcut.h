/*
 * textcut: cutting text from outside (values, API answers, server messages) to a size without
 * splitting a UTF-8 character. A cut inside a character leaves bytes PostgreSQL refuses as text
 * (invalid byte sequence for encoding "UTF8") and JSON readers reject: every cut of such text
 * outside log.c goes through here.
 */
#ifndef OMNISYNC_TEXTCUT_H
#define OMNISYNC_TEXTCUT_H

#include <stddef.h>

/* The largest n <= len such that s[0..n) does not end inside a UTF-8 character (the first
 * `len` bytes of `s` must be readable). Bytes that were never valid UTF-8 are left as they are:
 * the cut only never makes text invalid. */
size_t textcut_boundary(const char *s, size_t len);

/* The length of the longest prefix of the string `s` of at most `max` bytes that ends on a
 * character boundary: for "%.*s". */
int textcut_prefix(const char *s, size_t max);

/* snprintf into out[outsz], but a cut (the result did not fit) never leaves half a character.
 * Returns what snprintf returns. */
int textcut_printf(char *out, size_t outsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
