/* textcut: UTF-8-safe cuts. See textcut.h. */
#include "textcut.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

size_t textcut_boundary(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = len, cont = 0;
    while (i > 0 && cont < 3 && (u[i - 1] & 0xC0) == 0x80) {
        i--;
        cont++;
    }
    if (i == 0 || u[i - 1] < 0xC0)
        return len; /* ends on ASCII or a complete run of stray bytes */
    unsigned char lead = u[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    return cont + 1 < need ? i - 1 : len;
}

int textcut_prefix(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (n == max && s[n] != '\0')
        n = textcut_boundary(s, n);
    return (int)n;
}

int textcut_printf(char *out, size_t outsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outsz, fmt, ap);
    va_end(ap);
    if (n >= 0 && outsz > 0 && (size_t)n >= outsz)
        out[textcut_boundary(out, outsz - 1)] = '\0';
    return n;
}
