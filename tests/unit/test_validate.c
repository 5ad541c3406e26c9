/*
 * test_validate: the API document's field rules and the optional normalisation.
 *
 * The name class is checked code point by code point against an oracle written independently of
 * the implementation: the allowed letters typed out literally, as the API document's ranges
 * expand. Values here are synthetic, never real customers.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "validate.h"

#define RULE_REQUIRED "is required"
#define RULE_NAME "must match ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$"
#define RULE_NAME_EMPTY "must have at least 1 character"
#define RULE_UTF8 "must be valid UTF-8"
#define RULE_TEL "must be E.164 (^\\+[0-9]+$)"
#define RULE_TEL12 "must be E.164 (^\\+[0-9]+$) with at least 12 characters"
#define RULE_EMAIL "must be a well-formed email address"
#define RULE_EMAIL_LONG "must be a well-formed email address of at most 254 bytes"
#define RULE_CHANNEL "must match ^([0-9]+|email|telephone|facebook|twitter)$"
#define RULE_TOO_LONG "is too long"
#define RULE_NOTHING_LEFT RULE_NAME " (nothing sendable is left after transliteration)"
#define TRANSLIT VALIDATE_NAME_TRANSLITERATE

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Every non-ASCII character the name pattern allows, typed out: À-Ö Ø-Þ ß-ö ø-ÿ Š š. */
static const char allowed_non_ascii[] = "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ"
                                        "ØÙÚÛÜÝÞ"
                                        "ßàáâãäåæçèéêëìíîïðñòóôõö"
                                        "øùúûüýþÿ"
                                        "Šš";
static const char allowed_ascii[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-' ";

/* The test's own UTF-8 encoder (shortest form); returns the length written, NUL-terminates. */
static size_t encode_utf8(uint32_t cp, char *out)
{
    size_t n;

    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    out[n] = '\0';
    return n;
}

static int reference_allows(uint32_t cp)
{
    char enc[8];

    if (cp == 0)
        return 0;
    if (cp < 0x80)
        return strchr(allowed_ascii, (int)cp) != NULL;
    encode_utf8(cp, enc);
    /* UTF-8 is self-synchronising: a whole character never matches inside another one. */
    return strstr(allowed_non_ascii, enc) != NULL;
}

/* ---- names ---------------------------------------------------------------------------------- */

START_TEST(name_valid_examples)
{
    /* The last line: the ends of every range side by side, then a space and a dot alone, which
     * the pattern does not forbid, so neither do we. */
    static const char *const valid[] = {
        "John",  "O'Brien", "Anne-Marie", "St. John", "Zoë",          "José",       "Ørsted",
        "Šimon", "šárka",   "Müller",     "Þórr",     "van der Berg", "D'Artagnan", "Ñúñez",
        "a",     "Z",       "ÿ",          "ß",        "ÀÖØÞßöøÿŠš",   " ",          ".",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(valid); i++)
        ck_assert_msg(validate_name(valid[i]) == NULL, "valid[%zu] refused", i);
    ck_assert_ptr_null(validate_name(allowed_non_ascii));
    ck_assert_ptr_null(validate_name(allowed_ascii));
}
END_TEST

START_TEST(name_invalid_examples)
{
    static const char *const invalid[] = {
        "R2D2",
        "John_Doe",
        "John\tDoe",
        "John\n",
        "a@b",
        "Jo,hn",
        "Jo/hn",
        "[x]",
        "`x",
        "{x}",
        "x!",
        "x\"",
        "Ł",
        "Œ",
        "Ÿ",
        "ž",
        "Ś",
        "ş",
        "Ā",
        "×",
        "÷",
        "¿",
        "©",
        "\xC2\xA0",
        "€",
        "日本",
        "😀",
        "Zoë😀",
        "Jose\xCC\x81", /* e + combining acute: NFD is outside the class */
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(invalid); i++) {
        const char *rule = validate_name(invalid[i]);

        ck_assert_msg(rule != NULL, "invalid[%zu] accepted", i);
        ck_assert_str_eq(rule, RULE_NAME);
    }
}
END_TEST

START_TEST(name_required_and_min_length)
{
    ck_assert_str_eq(validate_name(NULL), RULE_REQUIRED);
    ck_assert_str_eq(validate_name(""), RULE_NAME_EMPTY);
}
END_TEST

/* Every code point from U+0001 to U+07FF (all one- and two-byte forms), a sample of three- and
 * four-byte ones, alone and between ASCII letters, against the typed-out oracle. */
START_TEST(name_every_code_point_matches_reference)
{
    static const uint32_t wide[] = {0x800,  0x15FF, 0x2028, 0x20AC,  0xD7FF,  0xE000,
                                    0xFEFF, 0xFFFD, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF};
    char alone[8];
    char embedded[16];
    uint32_t cp;
    size_t i;

    for (cp = 1; cp < 0x800 + ARRAY_SIZE(wide); cp++) {
        uint32_t c = cp < 0x800 ? cp : wide[cp - 0x800];
        int expect = reference_allows(c);

        encode_utf8(c, alone);
        snprintf(embedded, sizeof(embedded), "Ab%sCd", alone);
        if (expect) {
            ck_assert_msg(validate_name(alone) == NULL, "U+%04X refused", (unsigned)c);
            ck_assert_msg(validate_name(embedded) == NULL, "U+%04X refused inside", (unsigned)c);
        } else {
            ck_assert_msg(validate_name(alone) != NULL, "U+%04X accepted", (unsigned)c);
            ck_assert_msg(validate_name(embedded) != NULL, "U+%04X accepted inside", (unsigned)c);
            ck_assert_str_eq(validate_name(alone), RULE_NAME);
        }
    }
    /* The oracle itself: exactly the 64 non-ASCII code points of the pattern. */
    for (cp = 0x80, i = 0; cp < 0x800; cp++)
        i += (size_t)reference_allows(cp);
    ck_assert_uint_eq(i, 23 + 7 + 24 + 8 + 2);
}
END_TEST

START_TEST(name_invalid_utf8)
{
    static const char *const bad[] = {
        "\x80",                 /* lone continuation byte */
        "Jo\xBFhn",             /* continuation byte in the middle */
        "\xC3",                 /* truncated two-byte sequence at the end */
        "Zo\xC3",               /* ... after valid text */
        "\xC3 x",               /* lead byte followed by a non-continuation */
        "\xC3\xC3\xA9",         /* lead byte followed by another lead */
        "\xC0\xA0",             /* overlong space (C0 lead) */
        "\xC1\xA1",             /* overlong 'a' (C1 lead): must not pass as 'a' */
        "\xE0\x83\xA9",         /* overlong three-byte é */
        "\xE0\x80\xAF",         /* overlong three-byte '/' */
        "\xE0\x9F\xBF",         /* overlong: U+07FF, which fits in two bytes */
        "\xF0\x80\x81\xA1",     /* overlong four-byte 'a' */
        "\xF0\x8F\xBF\xBF",     /* overlong: U+FFFF in four bytes */
        "\xED\xA0\x80",         /* UTF-16 surrogate U+D800 */
        "\xED\xBF\xBF",         /* UTF-16 surrogate U+DFFF */
        "\xF4\x90\x80\x80",     /* U+110000, beyond Unicode */
        "\xF5\x80\x80\x80",     /* F5 lead */
        "\xF8\x88\x80\x80\x80", /* five-byte form */
        "\xFE",                 /* never valid */
        "\xFF",                 /* never valid */
        "\xE2\x82",             /* truncated three-byte sequence at the end */
        "\xF0\x9F\x98",         /* truncated four-byte sequence at the end */
        "Jos\xE9",              /* Latin-1 é: the classic wrong-charset column */
        "R2\xFF",               /* a pattern mismatch first: the encoding is still reported */
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *rule = validate_name(bad[i]);

        ck_assert_msg(rule != NULL, "bad[%zu] accepted", i);
        ck_assert_msg(strcmp(rule, RULE_UTF8) == 0, "bad[%zu]: %s", i, rule);
    }
    /* The shortest forms of the same characters are fine. */
    ck_assert_ptr_null(validate_name("\xC3\xA9"));
    ck_assert_ptr_null(validate_name("a"));
    /* Valid UTF-8 at the edges of each length, outside the class: a mismatch, not an encoding
     * error. */
    ck_assert_str_eq(validate_name("\xC2\x80"), RULE_NAME);
    ck_assert_str_eq(validate_name("\xDF\xBF"), RULE_NAME);
    ck_assert_str_eq(validate_name("\xE0\xA0\x80"), RULE_NAME);
    ck_assert_str_eq(validate_name("\xED\x9F\xBF"), RULE_NAME);
    ck_assert_str_eq(validate_name("\xEE\x80\x80"), RULE_NAME);
    ck_assert_str_eq(validate_name("\xF0\x90\x80\x80"), RULE_NAME);
    ck_assert_str_eq(validate_name("\xF4\x8F\xBF\xBF"), RULE_NAME);
}
END_TEST

START_TEST(rules_never_contain_the_value)
{
    /* Rules are static strings: the same pointer whatever the value was. */
    ck_assert_ptr_eq(validate_name("R2D2"), validate_name("Secret_Name"));
    ck_assert_ptr_eq(validate_telephone("+1", 12), validate_telephone("+123", 12));
    ck_assert_ptr_eq(validate_email("someone"), validate_email("else@"));
    ck_assert_ptr_eq(validate_channel_id("sms"), validate_channel_id("fax"));
    ck_assert_ptr_null(strstr(validate_name("Secret_Name"), "Secret"));
    ck_assert_ptr_null(strstr(validate_email("private@localhost"), "private"));
}
END_TEST

/* ---- telephones ----------------------------------------------------------------------------- */

START_TEST(telephone_valid)
{
    ck_assert_ptr_null(validate_telephone("+31612345678", VALIDATE_TELEPHONE_MIN_CREATE));
    ck_assert_ptr_null(validate_telephone("+442079460958", VALIDATE_TELEPHONE_MIN_CREATE));
    ck_assert_ptr_null(validate_telephone("+31612345678", VALIDATE_TELEPHONE_MIN_CHANNEL));
    ck_assert_ptr_null(validate_telephone("+1", VALIDATE_TELEPHONE_MIN_CHANNEL));
    ck_assert_ptr_null(validate_telephone("+0", 0));
    ck_assert_ptr_null(validate_telephone("+123456789012345", 16));
    ck_assert_ptr_null(validate_telephone("+99999999999999999999999999999", 12));
}
END_TEST

START_TEST(telephone_min_length)
{
    /* 11 characters: fine for addChannelOnly, too short for create. */
    ck_assert_ptr_null(validate_telephone("+3161234567", 1));
    ck_assert_str_eq(validate_telephone("+3161234567", 12), RULE_TEL12);
    ck_assert_ptr_null(validate_telephone("+12345678901234", 15));
    ck_assert_str_eq(validate_telephone("+1234567890123", 15),
                     "must be E.164 (^\\+[0-9]+$) with at least 15 characters");
    /* Minimums the pattern already implies say only the pattern. */
    ck_assert_str_eq(validate_telephone("+", 0), RULE_TEL);
    ck_assert_str_eq(validate_telephone("+", 1), RULE_TEL);
    ck_assert_str_eq(validate_telephone("+", 2), RULE_TEL);
    ck_assert_str_eq(validate_telephone("+12", 3 + 1),
                     "must be E.164 (^\\+[0-9]+$) with at least 4 characters");
    ck_assert_str_eq(validate_telephone("+12", 20),
                     "must be E.164 (^\\+[0-9]+$) with at least 20 characters");
    /* Beyond the table the rule is still static and still names the pattern. */
    ck_assert_ptr_nonnull(validate_telephone("+12", 1000));
    ck_assert_ptr_nonnull(strstr(validate_telephone("+12", 1000), RULE_TEL));
    ck_assert_ptr_null(validate_telephone("+123", 4));
}
END_TEST

START_TEST(telephone_invalid)
{
    static const char *const bad[] = {
        "",
        "+",
        "31612345678",
        "0031612345678",
        "++31612345678",
        "+31 612345678",
        "+31-612345678",
        "+31(6)12345678",
        "+3161234567a",
        "+31612345678\n",
        " +31612345678",
        "+31612345678 ",
        "+31612+345678",
        "tel:+31612345678",
        "\357\274\21331612345678", /* full-width plus (octal: a hex escape would eat the 3) */
        "+\xD9\xA3\xD9\xA1\xD9\xA6\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4\xD9\xA5\xD9\xA6\xD9\xA7\xD9\xA8",
        "+3161234567\xC3\xA9",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *rule = validate_telephone(bad[i], 12);

        ck_assert_msg(rule != NULL, "bad[%zu] accepted", i);
        ck_assert_str_eq(rule, RULE_TEL12);
        ck_assert_msg(validate_telephone(bad[i], 1) != NULL, "bad[%zu] accepted at min 1", i);
    }
    ck_assert_str_eq(validate_telephone(NULL, 12), RULE_REQUIRED);
}
END_TEST

/* ---- emails --------------------------------------------------------------------------------- */

START_TEST(email_valid)
{
    static const char *const good[] = {
        "a@b.co",
        "a@b.c",
        "john.doe@example.com",
        "john.doe+tag@example.com",
        "x_y-z@sub.domain.example.org",
        "user@xn--bcher-kva.example",
        "!#$%&'*+/=?^_`{|}~-@example.com",
        "UPPER@EXAMPLE.COM",
        "1234567890@123.45",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(good); i++)
        ck_assert_msg(validate_email(good[i]) == NULL, "good[%zu] refused", i);
}
END_TEST

START_TEST(email_invalid)
{
    static const char *const bad[] = {
        "",
        "plain",
        "@example.com",
        "user@",
        "@",
        "a@@b.com",
        "a@b@c.com",
        "user@localhost",
        "user@.example.com",
        "user@example.com.",
        "user@example..com",
        "user@.",
        "user@..",
        "us er@example.com",
        "user@exa mple.com",
        " user@example.com",
        "user@example.com ",
        "user@example.com\n",
        "\tuser@example.com",
        "\"quoted\"@example.com",
        "a(b)@example.com",
        "a,b@example.com",
        "a:b@example.com",
        "a;b@example.com",
        "<a@example.com>",
        "a[b]@example.com",
        "a\\b@example.com",
        "a@example.com\x7F",
        "a\x01@example.com",
        "jos\xC3\xA9@example.com",
        "user@b\303\274cher.example",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *rule = validate_email(bad[i]);

        ck_assert_msg(rule != NULL, "bad[%zu] accepted", i);
        ck_assert_str_eq(rule, RULE_EMAIL);
    }
    ck_assert_str_eq(validate_email(NULL), RULE_REQUIRED);
}
END_TEST

START_TEST(email_length_limit)
{
    char email[400];
    const char *domain = "@example.com"; /* 12 bytes */

    /* Exactly 254 bytes: accepted. */
    memset(email, 'a', 254 - strlen(domain));
    strcpy(email + 254 - strlen(domain), domain);
    ck_assert_uint_eq(strlen(email), 254);
    ck_assert_ptr_null(validate_email(email));
    /* 255 bytes: refused, with the length named. */
    memset(email, 'a', 255 - strlen(domain));
    strcpy(email + 255 - strlen(domain), domain);
    ck_assert_uint_eq(strlen(email), 255);
    ck_assert_str_eq(validate_email(email), RULE_EMAIL_LONG);
    /* Far longer: the same, and only the first 255 bytes are looked at. */
    memset(email, 'a', sizeof(email) - 1);
    email[sizeof(email) - 1] = '\0';
    ck_assert_str_eq(validate_email(email), RULE_EMAIL_LONG);
}
END_TEST

/* ---- channel ids ---------------------------------------------------------------------------- */

START_TEST(channel_id_valid)
{
    static const char *const good[] = {"0",        "1",       "42",
                                       "0007",     "email",   "telephone",
                                       "facebook", "twitter", "123456789012345678901234567890"};
    size_t i;

    for (i = 0; i < ARRAY_SIZE(good); i++)
        ck_assert_msg(validate_channel_id(good[i]) == NULL, "good[%zu] refused", i);
}
END_TEST

START_TEST(channel_id_invalid)
{
    static const char *const bad[] = {"",      "Email",    "EMAIL",    "e-mail",    "emails",
                                      "emai",  "email ",   " email",   "email\n",   "-1",
                                      "+1",    "1.5",      "12a",      "1 2",       "telegram",
                                      "phone", "whatsapp", "twitter1", "facebook!", "\xD9\xA1"};
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *rule = validate_channel_id(bad[i]);

        ck_assert_msg(rule != NULL, "bad[%zu] accepted", i);
        ck_assert_str_eq(rule, RULE_CHANNEL);
    }
    ck_assert_str_eq(validate_channel_id(NULL), RULE_REQUIRED);
}
END_TEST

/* ---- name normalisation --------------------------------------------------------------------- */

START_TEST(normalize_name_trims_and_collapses)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"John", "John"},
        {"  John", "John"},
        {"John  ", "John"},
        {"  John   Paul  ", "John Paul"},
        {"\tAnne\n-Marie\r\n", "Anne -Marie"},
        {"a \t\v\f\r\n b", "a b"},
        {"  Zoë   Šimon ", "Zoë Šimon"},
        {"ÿ ÿ", "ÿ ÿ"},
        {"", ""},
        {"    ", ""},
        {"R2D2", "R2D2"}, /* normalisation does not validate */
    };
    char out[64];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        memset(out, 'X', sizeof(out));
        ck_assert_int_eq(validate_normalize_name(cases[i].in, out, sizeof(out)), 0);
        ck_assert_str_eq(out, cases[i].out);
    }
    /* The result of an all-space name is empty, which validation then refuses. */
    ck_assert_int_eq(validate_normalize_name("   ", out, sizeof(out)), 0);
    ck_assert_str_eq(validate_name(out), RULE_NAME_EMPTY);
}
END_TEST

START_TEST(normalize_name_capacity)
{
    char out[8];

    /* "ab" needs 3 bytes with its NUL. */
    ck_assert_int_eq(validate_normalize_name("  ab  ", out, 3), 0);
    ck_assert_str_eq(out, "ab");
    memset(out, 'X', sizeof(out));
    ck_assert_int_eq(validate_normalize_name("  ab  ", out, 2), OMNISYNC_ETOOBIG);
    ck_assert_str_eq(out, "");
    /* The collapsed space counts too: "a b" needs 4. */
    ck_assert_int_eq(validate_normalize_name("a     b", out, 4), 0);
    ck_assert_str_eq(out, "a b");
    memset(out, 'X', sizeof(out));
    ck_assert_int_eq(validate_normalize_name("a     b", out, 3), OMNISYNC_ETOOBIG);
    ck_assert_str_eq(out, "");
    /* "Zoë" is four bytes: a multibyte character is never cut in half silently. */
    ck_assert_int_eq(validate_normalize_name("Zoë", out, 5), 0);
    ck_assert_str_eq(out, "Zoë");
    ck_assert_int_eq(validate_normalize_name("Zoë", out, 4), OMNISYNC_ETOOBIG);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(validate_normalize_name("", out, 1), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(normalize_name_bad_arguments)
{
    char out[8] = "XXXXXXX";

    ck_assert_int_eq(validate_normalize_name(NULL, out, sizeof(out)), OMNISYNC_EINVAL);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(validate_normalize_name("a", NULL, 8), OMNISYNC_EINVAL);
    out[0] = 'X';
    ck_assert_int_eq(validate_normalize_name("a", out, 0), OMNISYNC_EINVAL);
    ck_assert_int_eq(out[0], 'X'); /* outlen 0: not a byte written */
}
END_TEST

/* ---- telephone normalisation ---------------------------------------------------------------- */

START_TEST(normalize_telephone_examples)
{
    static const struct {
        const char *in;
        const char *prefix;
        const char *out;
    } cases[] = {
        {"+31612345678", NULL, "+31612345678"},
        {"+31 6 1234 5678", NULL, "+31612345678"},
        {"+31-6-1234.5678", NULL, "+31612345678"},
        {"+31 (0)6 1234 5678", NULL, "+31612345678"},
        {"+31(0)612345678", NULL, "+31612345678"},
        {"+31 ( 0 ) 6 12345678", NULL, "+31612345678"},
        {"+44 (0)20 7946 0958", NULL, "+442079460958"},
        {"+1 (212) 555-0100", NULL, "+12125550100"},
        {"+1/212/555.0100", NULL, "+12125550100"},
        {"(+31) 6 12345678", NULL, "+31612345678"},
        {"0031 6 12345678", NULL, "+31612345678"},
        {"0031612345678", "+49", "+31612345678"},
        {"0031 (0)6 12345678", NULL, "+31612345678"},
        {"  +31\t6 12345678  ", NULL, "+31612345678"},
        {"06-12345678", "+31", "+31612345678"},
        {"06 1234 5678", "+31", "+31612345678"},
        {"(020) 123 4567", "+31", "+31201234567"},
        {"(0)20 123 4567", "+31", "+31201234567"},
        {"030/1234567", "+49", "+49301234567"},
        {"01", "+1", "+11"},
    };
    char out[32];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        int rc;

        memset(out, 'X', sizeof(out));
        rc = validate_normalize_telephone(cases[i].in, cases[i].prefix, out, sizeof(out));
        ck_assert_msg(rc == 0, "cases[%zu]: rc %d", i, rc);
        ck_assert_msg(strcmp(out, cases[i].out) == 0, "cases[%zu]: got %s", i, out);
        ck_assert_ptr_null(validate_telephone(out, 1));
    }
}
END_TEST

START_TEST(normalize_telephone_refuses_guesses)
{
    static const struct {
        const char *in;
        const char *prefix;
    } cases[] = {
        {"06 12345678", NULL},  /* national and no prefix: never guessed */
        {"06 12345678", ""},    /* empty prefix = none */
        {"612345678", "+31"},   /* no trunk 0, no '+': nothing to anchor on */
        {"31612345678", "+31"}, /* looks international but is not marked so */
        {"", "+31"},
        {"   ", "+31"},
        {"+", NULL},
        {"00", NULL},
        {"0", "+31"}, /* a lone trunk 0 is not a number */
        {"0 ()", "+31"},
        {"000 31 6 12345678", NULL}, /* "+0...": a stray zero, no country code starts with 0 */
        {"+0 31 6 12345678", NULL},
        {"+31 6 1234 5678 ext 12", NULL},
        {"+31 6 1234 5678 x12", NULL},
        {"+31612345678#", NULL},
        {"tel:+31612345678", NULL},
        {"+31 6 +12345678", NULL},
        {"06 +12345678", "+31"},
        {"\357\274\21331612345678", NULL}, /* full-width plus */
        {"+31 6\302\24012345678", NULL},   /* no-break space is not stripped */
        {"06 12345678", "31"},             /* a prefix that is not "+digits" */
        {"06 12345678", "+31 "},
        {"06 12345678", "+"},
        {"+31612345678", "0031"}, /* a bad prefix is refused even when unused */
    };
    char out[32];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        int rc;

        memset(out, 'X', sizeof(out));
        rc = validate_normalize_telephone(cases[i].in, cases[i].prefix, out, sizeof(out));
        ck_assert_msg(rc == OMNISYNC_EINVAL, "cases[%zu]: rc %d out %s", i, rc, out);
        ck_assert_str_eq(out, "");
    }
    ck_assert_int_eq(validate_normalize_telephone(NULL, "+31", out, sizeof(out)), OMNISYNC_EINVAL);
    ck_assert_int_eq(validate_normalize_telephone("+31612345678", NULL, NULL, 8), OMNISYNC_EINVAL);
    ck_assert_int_eq(validate_normalize_telephone("+31612345678", NULL, out, 0), OMNISYNC_EINVAL);
}
END_TEST

START_TEST(normalize_telephone_capacity)
{
    char out[16];

    /* "+31612345678" is 12 characters: 13 bytes with the NUL. */
    ck_assert_int_eq(validate_normalize_telephone("+31 6 12345678", NULL, out, 13), 0);
    ck_assert_str_eq(out, "+31612345678");
    memset(out, 'X', sizeof(out));
    ck_assert_int_eq(validate_normalize_telephone("+31 6 12345678", NULL, out, 12),
                     OMNISYNC_ETOOBIG);
    ck_assert_str_eq(out, "");
    /* Running out of room while writing the prefix. */
    memset(out, 'X', sizeof(out));
    ck_assert_int_eq(validate_normalize_telephone("06 12345678", "+31", out, 3), OMNISYNC_ETOOBIG);
    ck_assert_str_eq(out, "");
    memset(out, 'X', sizeof(out));
    ck_assert_int_eq(validate_normalize_telephone("+3", NULL, out, 1), OMNISYNC_ETOOBIG);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(validate_normalize_telephone("+3", NULL, out, 3), 0);
    ck_assert_str_eq(out, "+3");
}
END_TEST

/* A normalised number is, by construction, one the create call accepts when long enough. */
START_TEST(normalize_telephone_output_always_validates)
{
    static const char *const inputs[] = {"+31 6 1234 5678", "0031 (0)6 1234 5678", "06-1234-5678",
                                         "(06) 1234 5678", "+44 (0) 20 7946 0958"};
    char out[32];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(inputs); i++) {
        ck_assert_int_eq(validate_normalize_telephone(inputs[i], "+31", out, sizeof(out)), 0);
        ck_assert_ptr_null(validate_telephone(out, VALIDATE_TELEPHONE_MIN_CREATE));
    }
}
END_TEST

/* ---- names = transliterate ------------------------------------------------------------------ */

struct translit_case {
    const char *in;
    const char *out;
};

/* Asserts validate_prepare_name(in, TRANSLIT) == out, transliterated, and valid by the pattern. */
static void assert_transliterates(const struct translit_case *cases, size_t n)
{
    char out[VALIDATE_NAME_MAX + 1];
    const char *rule;
    int transliterated = -1;

    for (size_t i = 0; i < n; i++) {
        rule = validate_prepare_name(cases[i].in, TRANSLIT, out, sizeof(out), &transliterated);
        ck_assert_msg(rule == NULL, "case %zu: refused: %s", i, rule);
        ck_assert_msg(strcmp(out, cases[i].out) == 0, "case %zu: \"%s\", expected \"%s\"", i, out,
                      cases[i].out);
        ck_assert_int_eq(transliterated, 1);
        ck_assert_ptr_null(validate_name(out));
    }
}

static void assert_refused(const char *in, unsigned flags, const char *expected_rule)
{
    char out[VALIDATE_NAME_MAX + 1];
    int transliterated = -1;
    const char *rule = validate_prepare_name(in, flags, out, sizeof(out), &transliterated);

    ck_assert_msg(rule != NULL && strcmp(rule, expected_rule) == 0, "\"%s\": rule %s, expected %s",
                  in, rule ? rule : "(none)", expected_rule);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(transliterated, 0);
}

/* What ICU's "Greek-Latin/UNGEGN; Russian-Latin/BGN; Any-Latin; Latin-ASCII" makes of each
 * script, pinned: a change in ICU's data shows here first. Allowed letters in a name stay. */
START_TEST(translit_each_script)
{
    static const struct translit_case cases[] = {
        /* Romanian: ş/ș, ţ/ț, ă, â stays */
        {"Ştefan", "Stefan"},
        {"Ana-Maria Ștefănescu", "Ana-Maria Stefanescu"},
        {"Mihăiță Țepeș", "Mihaita Tepes"},
        /* Polish: ł, ś, ą, ż, ę; ó stays */
        {"Łukasz", "Lukasz"},
        {"Łódź", "Lódz"},
        {"Świątek", "Swiatek"},
        {"Zofia Wójcik-Łęcka", "Zofia Wójcik-Lecka"},
        /* Czech: ř, č, ě; á, í stay */
        {"Dvořák", "Dvorák"},
        {"Jiří Řezníček", "Jirí Reznícek"},
        {"Čapek", "Capek"},
        /* Turkish: ş, ğ, ı, İ; ü, ö, ç stay */
        {"Şahin", "Sahin"},
        {"Gülşen Öztürk", "Gülsen Öztürk"},
        {"Ağaoğlu", "Agaoglu"},
        {"Işıl", "Isil"},
        {"İlker", "Ilker"},
        /* Greek (UNGEGN) */
        {"Σοφία", "Sofia"},
        {"Παπαδοπούλου", "Papadopoulou"},
        {"Σοφία Παπαδοπούλου", "Sofia Papadopoulou"},
        {"ΣΟΦΊΑ", "SOFIA"},
        {"Ευάγγελος", "Evangelos"},
        /* Cyrillic (BGN) */
        {"Иван", "Ivan"},
        {"Петров", "Petrov"},
        {"Николай Щукин", "Nikolay Shchukin"},
        {"Юлия", "Yuliya"},
        {"Жуков", "Zhukov"},
        /* Han: pinyin, syllables spaced, tone marks gone */
        {"王小明", "wang xiao ming"},
        {"陈", "chen"},
        {"Li 王", "Li wang"},
        /* Punctuation the pattern refuses but Latin-ASCII knows; full-width letters */
        {"O’Brien", "O'Brien"},
        {"Anne–Marie", "Anne-Marie"},
        {"Ａｎｎ", "Ann"},
    };
    assert_transliterates(cases, ARRAY_SIZE(cases));
}
END_TEST

START_TEST(translit_keeps_allowed_names)
{
    static const char *const names[] = {"Wójcik",        "Gül",  "Zoë Ørsted",       "Straße",
                                        "Šárka Šimková", "José", "O'Neil-Smith Jr.", "  Ann  "};
    char out[VALIDATE_NAME_MAX + 1];
    int transliterated = -1;

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        ck_assert_ptr_null(
            validate_prepare_name(names[i], TRANSLIT, out, sizeof(out), &transliterated));
        ck_assert_str_eq(out, names[i]);
        ck_assert_int_eq(transliterated, 0);
    }
    /* Empty is not refused here: the caller decides whether the field is required. */
    ck_assert_ptr_null(validate_prepare_name("", TRANSLIT, out, sizeof(out), &transliterated));
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(transliterated, 0);
    ck_assert_ptr_null(validate_prepare_name("Łukasz", TRANSLIT, out, sizeof(out), NULL));
}
END_TEST

START_TEST(translit_combining_marks)
{
    static const struct translit_case cases[] = {
        {"e\xCC\x81", "\xC3\xA9"},           /* e + U+0301 -> é (NFC): allowed, kept */
        {"Jose\xCC\x81", "Jos\xC3\xA9"},     /* José, decomposed */
        {"Dvor\xCC\x8C\xC3\xA1k", "Dvorák"}, /* r + U+030C (ř) -> r */
        {"S\u030Carka", "Šarka"},            /* S + U+030C -> Š, allowed */
        {"q\xCC\x81", "q"},                  /* no precomposed form: the mark goes */
    };
    assert_transliterates(cases, ARRAY_SIZE(cases));
    assert_refused("\xCC\x81", TRANSLIT, RULE_NOTHING_LEFT); /* a mark alone */
}
END_TEST

START_TEST(translit_drops_symbols_and_collapses_spaces)
{
    static const struct translit_case cases[] = {
        {"Ann \xF0\x9F\x98\x80 Lee", "Ann Lee"},                /* emoji between words */
        {"  \xF0\x9F\x98\x80  Ann  \xF0\x9F\x98\x80  ", "Ann"}, /* and at both ends */
        {"Ann  \xF0\x9F\x98\x80  Lee", "Ann Lee"},
        {"\U0001F600Ann", "Ann"},
        {"Ann\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBDLee", "AnnLee"},        /* thumbs up + skin tone */
        {"\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 Ann", "Ann"}, /* ZWJ sequence */
        {"Ann \xC2\xA9 Lee", "Ann Lee"},                             /* ©: a symbol, never "(C)" */
        {"Ann\xC3\x97Lee", "AnnLee"},                                /* ×: never "x" */
        {"Ann\tLee", "Ann Lee"},       /* other white space is a space */
        {"Ann\xC2\xA0Lee", "Ann Lee"}, /* no-break space */
        {"\tAnn\t", "Ann"},
        {"Ann!", "Ann"},               /* punctuation without a Latin form */
        {"Ann  \u0141ee", "Ann  Lee"}, /* spaces away from a dropped character stay */
        {"\xE1\x8E\xA0 Ann", "Ann"},   /* Cherokee: no Latin form in ICU, dropped */
    };
    assert_transliterates(cases, ARRAY_SIZE(cases));
}
END_TEST

START_TEST(translit_nothing_left_fails)
{
    assert_refused("\xF0\x9F\x98\x80", TRANSLIT, RULE_NOTHING_LEFT);
    assert_refused("\xF0\x9F\x98\x80 \xF0\x9F\x8E\x89", TRANSLIT, RULE_NOTHING_LEFT);
    assert_refused("\xE1\x8E\xA0", TRANSLIT, RULE_NOTHING_LEFT);
    assert_refused("!?", TRANSLIT, RULE_NOTHING_LEFT);
    assert_refused(" \xC2\xA9 ", TRANSLIT, RULE_NOTHING_LEFT);
}
END_TEST

START_TEST(translit_digits_fail)
{
    /* A digit is a data error the CRM should see, in any script and however it came. */
    assert_refused("R2D2", TRANSLIT, RULE_NAME);
    assert_refused("\xC5\x81ukasz 2", TRANSLIT, RULE_NAME);
    assert_refused("Ann\xD9\xA3", TRANSLIT, RULE_NAME);     /* Arabic-Indic three */
    assert_refused("Ann\xEF\xBC\x93", TRANSLIT, RULE_NAME); /* full-width three */
    assert_refused("\xC2\xBD", TRANSLIT, RULE_NAME);        /* ½ -> " 1/2" */
}
END_TEST

START_TEST(strict_is_validate_name)
{
    static const char *const names[] = {
        "Ann",       "Łukasz", "Σοφία",   "王小明", "R2D2", "Zoë", "Ann \xF0\x9F\x98\x80",
        "e\xCC\x81", "\xC3",   "Ann\tLee"};
    char out[VALIDATE_NAME_MAX + 1];
    int transliterated = -1;

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        const char *rule = validate_prepare_name(names[i], 0, out, sizeof(out), &transliterated);
        ck_assert_ptr_eq(rule, validate_name(names[i]));
        ck_assert_str_eq(out, rule == NULL ? names[i] : "");
        ck_assert_int_eq(transliterated, 0);
    }
    /* With normalisation: validate_normalize_name first, then the same check. */
    ck_assert_ptr_null(validate_prepare_name("  Ann   Lee ", VALIDATE_NAME_NORMALIZE, out,
                                             sizeof(out), &transliterated));
    ck_assert_str_eq(out, "Ann Lee");
    ck_assert_int_eq(transliterated, 0);
    ck_assert_str_eq(
        validate_prepare_name(" \xC5\x81ukasz ", VALIDATE_NAME_NORMALIZE, out, sizeof(out), NULL),
        RULE_NAME);
    ck_assert_ptr_null(validate_prepare_name(" \xC5\x81ukasz  \xC5\x81"
                                             "ee ",
                                             VALIDATE_NAME_NORMALIZE | TRANSLIT, out, sizeof(out),
                                             &transliterated));
    ck_assert_str_eq(out, "Lukasz Lee");
    ck_assert_int_eq(transliterated, 1);
}
END_TEST

START_TEST(translit_bad_input)
{
    char out[VALIDATE_NAME_MAX + 2], big[VALIDATE_NAME_MAX + 2];
    char han[VALIDATE_NAME_MAX + 1];

    assert_refused("\xC3", TRANSLIT, RULE_UTF8);                 /* truncated */
    assert_refused("\xC5\x81\xED\xA0\x80", TRANSLIT, RULE_UTF8); /* a surrogate after Ł */
    ck_assert_str_eq(validate_prepare_name(NULL, TRANSLIT, out, sizeof(out), NULL), RULE_REQUIRED);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(validate_prepare_name("Ann", TRANSLIT, NULL, 0, NULL), RULE_TOO_LONG);

    /* VALIDATE_NAME_MAX bytes are taken, one more is not. */
    memset(big, 'a', VALIDATE_NAME_MAX);
    big[VALIDATE_NAME_MAX] = '\0';
    ck_assert_ptr_null(validate_prepare_name(big, TRANSLIT, out, sizeof(out), NULL));
    big[VALIDATE_NAME_MAX] = 'a';
    big[VALIDATE_NAME_MAX + 1] = '\0';
    assert_refused(big, TRANSLIT, RULE_TOO_LONG);

    /* 341 Han characters fit in 1023 bytes; their pinyin does not. */
    for (size_t i = 0; i + 3 <= VALIDATE_NAME_MAX; i += 3)
        memcpy(han + i, "\xE7\x8E\x8B", 3); /* 王 */
    han[VALIDATE_NAME_MAX] = '\0';
    assert_refused(han, TRANSLIT, RULE_TOO_LONG);
    /* A small buffer is a cap too. */
    ck_assert_str_eq(validate_prepare_name("王小明", TRANSLIT, out, 8, NULL), RULE_TOO_LONG);
    ck_assert_ptr_null(validate_prepare_name("王小明", TRANSLIT, out, 15, NULL));
    ck_assert_str_eq(out, "wang xiao ming");
}
END_TEST

/*
 * Whatever comes in, what comes out is sendable and stable: every BMP code point and a sample of
 * the others, alone and between letters, either is refused with a static rule or gives a name
 * the pattern takes, without digits, without spaces at either end, and that a second pass leaves
 * as it is (reconcile compares names this way with what Omnidesk holds).
 */
START_TEST(translit_output_always_validates)
{
    char in[32], out[VALIDATE_NAME_MAX + 1], again[VALIDATE_NAME_MAX + 1];
    char enc[8];
    int transliterated;
    size_t accepted = 0;

    for (uint32_t cp = 1; cp <= 0x10FFFF; cp += cp < 0x10000 ? 1 : 97) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        encode_utf8(cp, enc);
        for (int form = 0; form < 2; form++) {
            snprintf(in, sizeof(in), form ? "%s" : "Ab %sc", enc);
            const char *rule =
                validate_prepare_name(in, TRANSLIT, out, sizeof(out), &transliterated);
            if (rule != NULL) {
                ck_assert_msg(validate_name(in) != NULL, "U+%04X: a valid name refused", cp);
                ck_assert_str_eq(out, "");
                continue;
            }
            accepted++;
            ck_assert_msg(validate_name(out) == NULL, "U+%04X gave an invalid name", cp);
            ck_assert_msg(strpbrk(out, "0123456789") == NULL, "U+%04X gave a digit", cp);
            if (transliterated)
                ck_assert_msg(out[0] != ' ' && out[strlen(out) - 1] != ' ',
                              "U+%04X: a space at an end", cp);
            ck_assert_ptr_null(
                validate_prepare_name(out, TRANSLIT, again, sizeof(again), &transliterated));
            ck_assert_msg(strcmp(out, again) == 0 && transliterated == 0,
                          "U+%04X: a second pass changed the name", cp);
        }
    }
    ck_assert_uint_gt(accepted, 60000);
}
END_TEST

START_TEST(translit_rules_never_contain_the_value)
{
    char out[64];

    ck_assert_ptr_eq(validate_prepare_name("\xF0\x9F\x98\x80", TRANSLIT, out, sizeof(out), NULL),
                     validate_prepare_name("\xE1\x8E\xA0", TRANSLIT, out, sizeof(out), NULL));
    ck_assert_ptr_eq(validate_prepare_name("R2D2", TRANSLIT, out, sizeof(out), NULL),
                     validate_name("R2D2"));
}
END_TEST

/* The transliterator is opened on first use and released here, so a leak check stays clean;
 * it opens again after a close. */
static void close_transliterator(void)
{
    validate_close();
}

START_TEST(translit_reopens_after_close)
{
    char out[64];

    validate_close();
    validate_close(); /* twice is harmless */
    ck_assert_ptr_null(validate_prepare_name("Иван", TRANSLIT, out, sizeof(out), NULL));
    ck_assert_str_eq(out, "Ivan");
    validate_close();
    ck_assert_ptr_null(validate_prepare_name("Петров", TRANSLIT, out, sizeof(out), NULL));
    ck_assert_str_eq(out, "Petrov");
}
END_TEST

static Suite *validate_suite(void)
{
    Suite *s = suite_create("validate");
    TCase *tc;

    tc = tcase_create("name");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, name_valid_examples);
    tcase_add_test(tc, name_invalid_examples);
    tcase_add_test(tc, name_required_and_min_length);
    tcase_add_test(tc, name_every_code_point_matches_reference);
    tcase_add_test(tc, name_invalid_utf8);
    tcase_add_test(tc, rules_never_contain_the_value);
    suite_add_tcase(s, tc);

    tc = tcase_create("telephone");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, telephone_valid);
    tcase_add_test(tc, telephone_min_length);
    tcase_add_test(tc, telephone_invalid);
    suite_add_tcase(s, tc);

    tc = tcase_create("email");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, email_valid);
    tcase_add_test(tc, email_invalid);
    tcase_add_test(tc, email_length_limit);
    suite_add_tcase(s, tc);

    tc = tcase_create("channel_id");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, channel_id_valid);
    tcase_add_test(tc, channel_id_invalid);
    suite_add_tcase(s, tc);

    tc = tcase_create("normalize");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_test(tc, normalize_name_trims_and_collapses);
    tcase_add_test(tc, normalize_name_capacity);
    tcase_add_test(tc, normalize_name_bad_arguments);
    tcase_add_test(tc, normalize_telephone_examples);
    tcase_add_test(tc, normalize_telephone_refuses_guesses);
    tcase_add_test(tc, normalize_telephone_capacity);
    tcase_add_test(tc, normalize_telephone_output_always_validates);
    suite_add_tcase(s, tc);

    tc = tcase_create("transliterate");
    tcase_set_timeout(tc, 60); /* CPU-bound cases on a loaded CI machine */
    tcase_add_checked_fixture(tc, NULL, close_transliterator);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, translit_each_script);
    tcase_add_test(tc, translit_keeps_allowed_names);
    tcase_add_test(tc, translit_combining_marks);
    tcase_add_test(tc, translit_drops_symbols_and_collapses_spaces);
    tcase_add_test(tc, translit_nothing_left_fails);
    tcase_add_test(tc, translit_digits_fail);
    tcase_add_test(tc, strict_is_validate_name);
    tcase_add_test(tc, translit_bad_input);
    tcase_add_test(tc, translit_output_always_validates);
    tcase_add_test(tc, translit_rules_never_contain_the_value);
    tcase_add_test(tc, translit_reopens_after_close);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(validate_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
