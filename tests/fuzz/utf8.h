/* A strict UTF-8 check for the fuzz targets (RFC 3629: no overlong forms, no surrogates). */
#ifndef OMNISYNC_FUZZ_UTF8_H
#define OMNISYNC_FUZZ_UTF8_H

#include <stddef.h>

static inline int fuzz_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char b = s[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xbf;

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf)
            n = 2;
        else if (b >= 0xe0 && b <= 0xef)
            n = 3;
        else if (b >= 0xf0 && b <= 0xf4)
            n = 4;
        else
            return 0;
        if (i + n > len)
            return 0;
        if (b == 0xe0)
            lo = 0xa0;
        else if (b == 0xed)
            hi = 0x9f;
        else if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
        i += n;
    }
    return 1;
}

#endif
