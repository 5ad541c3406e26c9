/*
 * validate: checks field values against the API document's rules before they are sent.
 *
 * The rules are transcribed from omnidesk-customer-openapi.json and deliberately no stricter:
 * refusing a value the API would take loses a customer's data, while sending one it refuses
 * only costs a round trip. Rule strings are static and free of the value (it is personal data).
 * Nothing here logs. The only state is the ICU transliterator of validate_prepare_name(): building
 * one compiles its rule set (milliseconds), so it is opened once, on the first name that needs it,
 * and kept until validate_close(). The process has one thread, so it needs no lock.
 */
#include "validate.h"

#include <stdint.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <unicode/utrans.h>

#define RULE_REQUIRED "is required"
#define RULE_UTF8 "must be valid UTF-8"
#define RULE_NAME_EMPTY "must have at least 1 character"
#define RULE_NAME "must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$"
#define RULE_EMAIL "must be a well-formed email address"
#define RULE_EMAIL_LONG "must be a well-formed email address of at most 254 bytes"
#define RULE_CHANNEL_ID "must match ^([0-9]+|email|telephone|facebook|twitter)$"
#define RULE_TOO_LONG "is too long"
#define RULE_NAME_NOTHING_LEFT RULE_NAME " (nothing sendable is left after transliteration)"
#define RULE_TRANSLITERATOR "cannot be transliterated: ICU's transliterator is not available"

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

/* ---- transliteration of names (names = transliterate) ---------------------------------------- */

/*
 * Greek and Russian first, by the romanisations their passports and gazetteers use (UNGEGN, BGN:
 * Σοφία -> Sofia, Жуков -> Zhukov; the scholarly defaults of Any-Latin give Sophia, Zukov once
 * Latin-ASCII has taken the háček), then every other script by Any-Latin (Han by pinyin), then
 * Latin-ASCII for what is left outside ASCII (ł, ř, ş, tone marks, ’ -> ').
 */
#define TRANSLITERATOR_ID "Greek-Latin/UNGEGN; Russian-Latin/BGN; Any-Latin; Latin-ASCII"

/* UTF-16 units: a name of VALIDATE_NAME_MAX bytes of UTF-8 never needs more. A run may grow in
 * transliteration (one Han character becomes a syllable and a space), hence the larger buffer. */
#define NAME_UNITS (VALIDATE_NAME_MAX + 1)
#define RUN_UNITS (8 * NAME_UNITS)

static UTransliterator *transliterator;

static UTransliterator *open_transliterator(void)
{
    UChar id[sizeof(TRANSLITERATOR_ID)];
    UParseError where;
    UErrorCode status = U_ZERO_ERROR;

    if (transliterator != NULL)
        return transliterator;
    u_uastrncpy(id, TRANSLITERATOR_ID, (int32_t)sizeof(id));
    transliterator = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, &where, &status);
    if (U_FAILURE(status))
        transliterator = NULL;
    return transliterator;
}

void validate_close(void)
{
    if (transliterator != NULL)
        utrans_close(transliterator);
    transliterator = NULL;
}

/* Symbols (emoji, ©, ×), controls, format characters (ZWJ), private use: none is part of a
 * name, and Latin-ASCII would turn some into letters (× -> x, © -> (C)). Dropped untried. */
static int dropped_outright(UChar32 c)
{
    switch (u_charType(c)) {
    case U_MATH_SYMBOL:
    case U_CURRENCY_SYMBOL:
    case U_MODIFIER_SYMBOL:
    case U_OTHER_SYMBOL:
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
        return 1;
    default:
        return 0;
    }
}

static int name_char_allowed(UChar32 c)
{
    return c >= 0 && name_code_point_allowed((uint32_t)c);
}

/*
 * The rewritten name, built character by character. Spaces next to a dropped character, and
 * the spaces a transliteration produces, are held back (`pending`) and written as one space only
 * before the next character: so "Ann 😀 Lee" becomes "Ann Lee", never "Ann  Lee" or "Ann Lee ".
 * Spaces of the original name away from any dropped character are kept as they were.
 */
struct name_writer {
    UChar text[NAME_UNITS];
    int32_t len;
    int pending; /* a space is owed before the next character */
    int gap;     /* a character was dropped since the last one written */
    int overflow;
};

static void put_unit_char(struct name_writer *w, UChar32 c)
{
    if (w->len + U16_LENGTH(c) >= NAME_UNITS) {
        w->overflow = 1;
        return;
    }
    U16_APPEND_UNSAFE(w->text, w->len, c);
}

static void write_char(struct name_writer *w, UChar32 c, int from_transliteration)
{
    if (c == ' ') {
        if (w->gap || from_transliteration)
            w->pending = 1;
        else
            put_unit_char(w, ' ');
        return;
    }
    if (w->pending && w->len > 0 && w->text[w->len - 1] != ' ')
        put_unit_char(w, ' ');
    w->pending = 0;
    w->gap = 0;
    put_unit_char(w, c);
}

static void drop_char(struct name_writer *w)
{
    w->gap = 1;
    while (w->len > 0 && w->text[w->len - 1] == ' ') {
        w->len--;
        w->pending = 1;
    }
}

/* The end (exclusive) of the run of characters to transliterate together that starts at
 * text[start]: context matters to a transliterator (Greek final sigma, pinyin syllables). */
static int32_t run_end(const UChar *text, int32_t start, int32_t len)
{
    int32_t end = start;

    while (end < len) {
        int32_t next = end;
        UChar32 c;

        U16_NEXT(text, next, len, c);
        if (name_char_allowed(c) || u_isdigit(c) || dropped_outright(c))
            break;
        end = next;
    }
    return end;
}

/* Transliterates text[start..end) and writes the result. NULL or the rule broken. */
static const char *transliterate_run(UTransliterator *t, const UChar *text, int32_t start,
                                     int32_t end, struct name_writer *w)
{
    UChar run[RUN_UNITS];
    int32_t len = end - start, limit, i = 0;
    UErrorCode status = U_ZERO_ERROR;

    u_memcpy(run, text + start, len);
    limit = len; /* the whole run; on return, where the transliterated text ends */
    utrans_transUChars(t, run, &len, RUN_UNITS, 0, &limit, &status);
    if (status == U_BUFFER_OVERFLOW_ERROR)
        return RULE_TOO_LONG;
    if (U_FAILURE(status))
        return RULE_TRANSLITERATOR;
    while (i < len) {
        UChar32 c;

        U16_NEXT(run, i, len, c);
        if (u_isdigit(c)) /* ½ -> " 1/2": a digit is a digit, whichever way it came */
            return RULE_NAME;
        if (name_char_allowed(c))
            write_char(w, c, 1);
        else
            drop_char(w);
    }
    return NULL;
}

/* Rewrites `name` (valid UTF-8 the pattern refuses, capacity `namelen`) in place, as
 * validate_prepare_name() describes. NULL, or the rule broken (then `name` is unspecified). */
static const char *transliterate(char *name, size_t namelen)
{
    UChar text[NAME_UNITS], nfc[NAME_UNITS];
    int32_t text_len, len, i = 0, out_len;
    UErrorCode status = U_ZERO_ERROR;
    struct name_writer w = {.len = 0};
    UTransliterator *t;
    const UNormalizer2 *normalizer;
    const char *rule;

    u_strFromUTF8(text, NAME_UNITS, &text_len, name, -1, &status);
    if (U_FAILURE(status) || status == U_STRING_NOT_TERMINATED_WARNING)
        return RULE_TOO_LONG;
    normalizer = unorm2_getNFCInstance(&status);
    len = U_SUCCESS(status) ? unorm2_normalize(normalizer, text, text_len, nfc, NAME_UNITS, &status)
                            : 0;
    if (U_FAILURE(status) || status == U_STRING_NOT_TERMINATED_WARNING)
        return status == U_BUFFER_OVERFLOW_ERROR ? RULE_TOO_LONG : RULE_TRANSLITERATOR;

    while (i < len) {
        int32_t start = i;
        UChar32 c;

        U16_NEXT(nfc, i, len, c);
        if (name_char_allowed(c)) {
            write_char(&w, c, 0);
        } else if (u_isUWhiteSpace(c)) {
            write_char(&w, ' ', 1); /* a tab, a no-break space: one space at most, inside */
        } else if (u_isdigit(c)) {
            return RULE_NAME; /* the CRM should see it: not dropped, not transliterated */
        } else if (dropped_outright(c)) {
            drop_char(&w);
        } else {
            if ((t = open_transliterator()) == NULL)
                return RULE_TRANSLITERATOR;
            i = run_end(nfc, start, len);
            if ((rule = transliterate_run(t, nfc, start, i, &w)) != NULL)
                return rule;
        }
    }
    if (w.overflow)
        return RULE_TOO_LONG;
    if (w.len == 0)
        return RULE_NAME_NOTHING_LEFT;
    status = U_ZERO_ERROR;
    u_strToUTF8(name, (int32_t)(namelen > INT32_MAX ? INT32_MAX : namelen), &out_len, w.text, w.len,
                &status);
    if (U_FAILURE(status) || status == U_STRING_NOT_TERMINATED_WARNING)
        return RULE_TOO_LONG;
    return NULL;
}

const char *validate_prepare_name(const char *in, unsigned flags, char *out, size_t outlen,
                                  int *transliterated)
{
    const char *rule;

    if (transliterated != NULL)
        *transliterated = 0;
    if (out == NULL || outlen == 0)
        return RULE_TOO_LONG; /* nothing fits */
    out[0] = '\0';
    if (in == NULL)
        return RULE_REQUIRED;
    if (outlen > VALIDATE_NAME_MAX + 1)
        outlen = VALIDATE_NAME_MAX + 1;
    if (flags & VALIDATE_NAME_NORMALIZE) {
        if (validate_normalize_name(in, out, outlen) != 0)
            return RULE_TOO_LONG;
    } else {
        size_t len = strlen(in);
        if (len >= outlen)
            return RULE_TOO_LONG;
        memcpy(out, in, len + 1);
    }
    if (out[0] == '\0')
        return NULL; /* empty: not sent on create; an update requires it (its caller checks) */
    rule = validate_name(out);
    if (rule == NULL)
        return NULL;
    if (strcmp(rule, RULE_NAME) != 0 || !(flags & VALIDATE_NAME_TRANSLITERATE))
        goto fail; /* strict, or not even UTF-8: refused as it is */
    if ((rule = transliterate(out, outlen)) != NULL || (rule = validate_name(out)) != NULL)
        goto fail;
    if (transliterated != NULL)
        *transliterated = 1;
    return NULL;

fail:
    out[0] = '\0';
    return rule;
}
