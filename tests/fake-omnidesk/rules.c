/*
 * rules: the API document's value rules (see rules.h).
 */
#include "rules.h"

#include <stdint.h>
#include <string.h>

/* Decodes one code point from a NUL-terminated string. Returns the number of bytes used, or 0 at
   the end or for a malformed sequence (overlong forms, surrogates, beyond U+10FFFF, stray
   continuation bytes), which then matches no pattern. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
    uint32_t c = s[0];
    size_t n;
    uint32_t min;

    if (c == 0)
        return 0;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        c &= 0x1F;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        c &= 0x0F;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        c &= 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

size_t rules_utf8_length(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t count = 0;
    uint32_t cp;

    while (*p) {
        size_t n = utf8_decode(p, &cp);

        if (n == 0)
            return (size_t)-1;
        p += n;
        count++;
    }
    return count;
}

static bool is_ascii_letter(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* The class [a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\-' ]: U+00D7 (×) and U+00F7 (÷) fall in the gaps, and of
   Latin Extended-A only Š (U+0160) and š (U+0161) are in; č, ł, ő and friends are not. */
static bool is_name_char(uint32_t c)
{
    return is_ascii_letter(c) || c == '.' || c == '-' || c == '\'' || c == ' ' ||
           (c >= 0xC0 && c <= 0xD6) || (c >= 0xD8 && c <= 0xDE) || (c >= 0xDF && c <= 0xF6) ||
           (c >= 0xF8 && c <= 0xFF) || c == 0x160 || c == 0x161;
}

bool rules_is_name(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;

    if (*p == '\0')
        return false;
    while (*p) {
        size_t n = utf8_decode(p, &cp);

        if (n == 0 || !is_name_char(cp))
            return false;
        p += n;
    }
    return true;
}

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!is_digit((unsigned char)*s))
            return false;
    return true;
}

bool rules_is_e164(const char *s)
{
    return s[0] == '+' && all_digits(s + 1);
}

static bool is_email_char(unsigned char c)
{
    /* No spaces, no control characters, ASCII only. */
    return c > 0x20 && c < 0x7F;
}

bool rules_is_email(const char *s)
{
    const char *at = strchr(s, '@');
    const char *domain;
    size_t label = 0;
    bool dot = false;

    if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
        return false;
    for (const char *p = s; *p; p++)
        if (!is_email_char((unsigned char)*p))
            return false;
    domain = at + 1;
    for (const char *p = domain;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0)
                return false; /* empty label: leading, trailing or doubled dot */
            if (*p == '\0')
                break;
            dot = true;
            label = 0;
        } else {
            label++;
        }
    }
    return dot;
}

bool rules_is_number(const char *s)
{
    const char *p = s;

    if (*p == '-')
        p++;
    if (!is_digit((unsigned char)*p))
        return false;
    while (is_digit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!is_digit((unsigned char)*p))
            return false;
        while (is_digit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!is_digit((unsigned char)*p))
            return false;
        while (is_digit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

bool rules_is_channel_id(const char *s)
{
    return all_digits(s) || strcmp(s, "email") == 0 || strcmp(s, "telephone") == 0 ||
           strcmp(s, "facebook") == 0 || strcmp(s, "twitter") == 0;
}

static bool all_in_class(const char *s, bool allow_underscore)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (!(is_ascii_letter(c) || is_digit(c) || c == ' ' || (allow_underscore && c == '_')))
            return false;
    }
    return true;
}

bool rules_is_twitter(const char *s)
{
    return all_in_class(s, true);
}

bool rules_is_query(const char *s)
{
    return all_in_class(s, false);
}
