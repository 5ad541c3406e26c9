#include "textbuf.h"

#include <stdlib.h>
#include <string.h>

int textbuf_reserve(struct textbuf *b, size_t more)
{
    if (b->failed)
        return -1;
    if (b->cap - b->len >= more + 1)
        return 0;
    size_t cap = b->cap ? b->cap : b->first ? b->first : 256;
    while (cap - b->len < more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void textbuf_put(struct textbuf *b, const char *s, size_t n)
{
    if (textbuf_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}
