/*
 * textbuf: a text that grows as it is written, NUL-terminated after every write. An allocation
 * that fails marks it `failed` and later writes do nothing, so a writer checks once, at the end
 * (the outcome's JSON in lib/outbox.c, the metrics exposition in lib/metrics.c).
 */
#ifndef OMNISYNC_TEXTBUF_H
#define OMNISYNC_TEXTBUF_H

#include <stddef.h>

struct textbuf {
    char *p;      /* NULL until the first write */
    size_t len;   /* bytes written, the NUL not counted */
    size_t cap;   /* bytes allocated */
    size_t first; /* the first allocation's size (0: 256) */
    int failed;   /* an allocation failed: the text is lost */
};

/* Room for `more` bytes and a NUL after what is written; 0, or -1 (and `failed`). */
int textbuf_reserve(struct textbuf *b, size_t more);
/* Appends `n` bytes of `s` and a NUL. */
void textbuf_put(struct textbuf *b, const char *s, size_t n);

#endif
