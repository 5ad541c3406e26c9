/*
 * validate: checks field values against the API document's rules before they are sent.
 *
 * The rules are transcribed from omnidesk-customer-openapi.json and deliberately no stricter:
 * refusing a value the API would take loses a customer's data, while sending one it refuses
 * only costs a round trip. Rule strings are static and free of the value (it is personal data).
 * Nothing here allocates, logs or keeps state.
 */
#include "validate.h"

#include <stdint.h>
#include <string.h>

#define RULE_REQUIRED "is required"
#define RULE_UTF8 "must be valid UTF-8"
#define RULE_NAME_EMPTY "must have at least 1 character"
#define RULE_NAME "must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$"
#define RULE_EMAIL "must be a well-formed email address"
#define RULE_EMAIL_LONG "must be a well-formed email address of at most 254 bytes"
#define RULE_CHANNEL_ID "must match ^([0-9]+|email|telephone|facebook|twitter)$"

#define TEL_PATTERN "must be E.164 (^\\+[0-9]+$)"
#define TEL_RULE(n) TEL_PATTERN " with at least " #n " characters"

/*
 * The rule must be a static string (the caller keeps it past this call and logs it), so each
 * minimum length the API uses, and every plausible configured one, has its own literal. The
 * pattern itself already demands two characters, so minimums up to 2 add nothing to say.
 */
static const char *const telephone_rules[] = {
    TEL_PATTERN,  TEL_PATTERN,  TEL_PATTERN,  TEL_RULE(3),  TEL_RULE(4),  TEL_RULE(5),
    TEL_RULE(6),  TEL_RULE(7),  TEL_RULE(8),  TEL_RULE(9),  TEL_RULE(10), TEL_RULE(11),
    TEL_RULE(12), TEL_RULE(13), TEL_RULE(14), TEL_RULE(15), TEL_RULE(16), TEL_RULE(17),
    TEL_RULE(18), TEL_RULE(19), TEL_RULE(20),
};
#define TEL_RULE_LONG TEL_PATTERN " with at least the required number of characters"

static int is_ascii_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_ascii_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/*
 * Decodes the UTF-8 sequence at `s` into *cp and returns its length (1-4), or 0 when it is not
 * valid UTF-8: a stray continuation byte, a truncated sequence, an overlong form (C0/C1 leads,
 * E0 80..9F, F0 80..8F), a UTF-16 surrogate, or a code point above U+10FFFF. Checking each
 * continuation byte before reading the next one means a NUL ends the scan, never overruns it.
 */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
    unsigned char c = s[0];
    uint32_t v;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xC2 || c > 0xF4)
        return 0;
    if ((s[1] & 0xC0) != 0x80)
        return 0;
    if (c < 0xE0) {
        *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if ((s[2] & 0xC0) != 0x80)
        return 0;
    if (c < 0xF0) {
        v = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))
            return 0;
        *cp = v;
        return 3;
    }
    if ((s[3] & 0xC0) != 0x80)
        return 0;
    v = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
        ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    if (v < 0x10000 || v > 0x10FFFF)
        return 0;
    *cp = v;
    return 4;
}

/* The character class of the name pattern, range by range as the API document writes it. */
static int name_code_point_allowed(uint32_t cp)
{
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z'))
        return 1;
    if (cp == '.' || cp == '-' || cp == '\'' || cp == ' ')
        return 1;
    return (cp >= 0xC0 && cp <= 0xD6)     /* À-Ö */
           || (cp >= 0xD8 && cp <= 0xDE)  /* Ø-Þ */
           || (cp >= 0xDF && cp <= 0xF6)  /* ß-ö */
           || (cp >= 0xF8 && cp <= 0xFF)  /* ø-ÿ */
           || cp == 0x160 || cp == 0x161; /* Š š */
}

const char *validate_name(const char *value)
{
    const unsigned char *p;
    int mismatch = 0;

    if (!value)
        return RULE_REQUIRED;
    if (value[0] == '\0')
        return RULE_NAME_EMPTY;
    /* Scan to the end even after a mismatch: broken encoding is the more useful report, since
     * it points at the data's charset rather than at one odd character. */
    for (p = (const unsigned char *)value; *p;) {
        uint32_t cp;
        size_t len = utf8_decode(p, &cp);

        if (len == 0)
            return RULE_UTF8;
        if (!name_code_point_allowed(cp))
            mismatch = 1;
        p += len;
    }
    return mismatch ? RULE_NAME : NULL;
}

const char *validate_telephone(const char *value, size_t min_length)
{
    const char *rule;
    const char *p;

    if (min_length < sizeof(telephone_rules) / sizeof(telephone_rules[0]))
        rule = telephone_rules[min_length];
    else
        rule = TEL_RULE_LONG;
    if (!value)
        return RULE_REQUIRED;
    if (value[0] != '+' || value[1] == '\0')
        return rule;
    for (p = value + 1; *p; p++) {
        if (!is_ascii_digit((unsigned char)*p))
            return rule;
    }
    if ((size_t)(p - value) < min_length)
        return rule;
    return NULL;
}

const char *validate_email(const char *value)
{
    const char *at = NULL;
    const char *p;
    size_t len;

    if (!value)
        return RULE_REQUIRED;
    len = strnlen(value, VALIDATE_EMAIL_MAX + 1);
    if (len > VALIDATE_EMAIL_MAX)
        return RULE_EMAIL_LONG;
    for (p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;

        /* Printable ASCII only: anything else needs quoting or IDNA, which the API does not do. */
        if (c <= 0x20 || c >= 0x7F || strchr("\"(),:;<>[\\]", c))
            return RULE_EMAIL;
        if (c == '@') {
            if (at)
                return RULE_EMAIL;
            at = p;
        }
    }
    if (!at || at == value || at[1] == '\0')
        return RULE_EMAIL;
    /* The domain: at least two labels, none empty. */
    p = at + 1;
    if (p[0] == '.' || value[len - 1] == '.' || !strchr(p, '.') || strstr(p, ".."))
        return RULE_EMAIL;
    return NULL;
}

const char *validate_channel_id(const char *value)
{
    static const char *const names[] = {"email", "telephone", "facebook", "twitter"};
    const char *p;
    size_t i;

    if (!value)
        return RULE_REQUIRED;
    if (value[0] == '\0')
        return RULE_CHANNEL_ID;
    for (p = value; is_ascii_digit((unsigned char)*p); p++)
        ;
    if (*p == '\0')
        return NULL;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(value, names[i]) == 0)
            return NULL;
    }
    return RULE_CHANNEL_ID;
}

int validate_normalize_name(const char *in, char *out, size_t outlen)
{
    const char *p;
    size_t n = 0;
    int pending_space = 0;
    int rc = OMNISYNC_EINVAL;

    if (!out || outlen == 0)
        return OMNISYNC_EINVAL;
    if (!in)
        goto fail;
    rc = OMNISYNC_ETOOBIG;
    for (p = in; *p; p++) {
        /* UTF-8 continuation and lead bytes are >= 0x80, so they never look like whitespace. */
        if (is_ascii_space((unsigned char)*p)) {
            pending_space = n > 0; /* leading whitespace is dropped, not collapsed */
            continue;
        }
        if (pending_space) {
            if (n + 1 >= outlen)
                goto fail;
            out[n++] = ' ';
            pending_space = 0;
        }
        if (n + 1 >= outlen)
            goto fail;
        out[n++] = *p;
    }
    out[n] = '\0';
    return 0;

fail:
    out[0] = '\0';
    return rc;
}

static int is_phone_separator(char c)
{
    return c == ' ' || c == '\t' || c == '.' || c == '-' || c == '/' || c == '(' || c == ')';
}

static const char *skip_phone_separators(const char *p)
{
    while (is_phone_separator(*p))
        p++;
    return p;
}

/* If `p` starts a "(0)" (spaces allowed inside), returns the position after it, else NULL. */
static const char *skip_trunk_zero(const char *p)
{
    if (*p != '(')
        return NULL;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '0')
        return NULL;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == ')' ? p + 1 : NULL;
}

/* Appends `c` to out[0..*n) keeping room for the NUL; 0 or OMNISYNC_ETOOBIG. */
static int put_char(char *out, size_t outlen, size_t *n, char c)
{
    if (*n + 1 >= outlen)
        return OMNISYNC_ETOOBIG;
    out[(*n)++] = c;
    return 0;
}

int validate_normalize_telephone(const char *in, const char *default_prefix, char *out,
                                 size_t outlen)
{
    const char *p;
    const char *q;
    const char *country = "";
    size_t n = 0;
    size_t digits = 0;
    int international = 0;
    int rc = OMNISYNC_EINVAL;

    if (!out || outlen == 0)
        return OMNISYNC_EINVAL;
    if (!in)
        goto fail;
    if (default_prefix && default_prefix[0] != '\0' && validate_telephone(default_prefix, 1))
        goto fail;

    p = skip_phone_separators(in);
    if (*p == '+') {
        international = 1;
        p++;
    } else if (*p == '0') {
        q = skip_phone_separators(p + 1);
        if (*q == '0') {
            international = 1;
            p = q + 1;
        } else if (default_prefix && default_prefix[0] != '\0') {
            country = default_prefix + 1; /* already checked to be "+digits" */
            p++;
        } else {
            goto fail; /* a national number and no prefix configured: never guess */
        }
    } else {
        goto fail; /* neither international nor national: nothing to anchor a country on */
    }
    if ((rc = put_char(out, outlen, &n, '+')) != 0)
        goto fail;
    for (q = country; *q; q++) {
        if ((rc = put_char(out, outlen, &n, *q)) != 0)
            goto fail;
    }

    while (*p) {
        if (international && (q = skip_trunk_zero(p)) != NULL) {
            p = q;
            continue;
        }
        if (is_phone_separator(*p)) {
            p++;
            continue;
        }
        if (!is_ascii_digit((unsigned char)*p)) {
            rc = OMNISYNC_EINVAL;
            goto fail;
        }
        if ((rc = put_char(out, outlen, &n, *p)) != 0)
            goto fail;
        digits++;
        p++;
    }
    out[n] = '\0';
    /* Country codes never start with 0: "+0..." means a stray extra zero, not a number. A lone
     * trunk "0" would become the bare country prefix, which is no one's number either. */
    rc = OMNISYNC_EINVAL;
    if (validate_telephone(out, 1) != NULL || out[1] == '0' || digits == 0)
        goto fail;
    return 0;

fail:
    out[0] = '\0';
    return rc;
}
