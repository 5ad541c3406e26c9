/*
 * fuzz_validate: the field rules and normalisers of lib/validate.c on any bytes.
 *
 * Beyond "no crash, no read past the end": every rule string is static text that never quotes
 * the value; a name accepted is valid UTF-8 without control characters; an accepted telephone is
 * "+digits"; an accepted email has exactly one '@' and printable ASCII only; a normalised value
 * is a fixed point (normalising it again changes nothing) and the normalised telephone passes the
 * telephone rule.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rule(const char *rule, const char *value)
{
    size_t len = strlen(value);

    /* A rule is static text, never a pointer into the value. */
    if (rule != NULL && rule >= value && rule <= value + len)
        abort();
}

static int valid_utf8_printable(const unsigned char *s)
{
    while (*s) {
        if (*s < 0x20 || *s == 0x7f)
            return 0;
        s++;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1);
    char out[512], again[512];
    const char *rule;

    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';

    rule = validate_name(value);
    check_rule(rule, value);
    if (rule == NULL && (value[0] == '\0' || !valid_utf8_printable((unsigned char *)value)))
        abort();

    rule = validate_telephone(value, VALIDATE_TELEPHONE_MIN_CREATE);
    check_rule(rule, value);
    if (rule == NULL && (value[0] != '+' || value[1] == '\0' ||
                         strspn(value + 1, "0123456789") != strlen(value) - 1 ||
                         strlen(value) < VALIDATE_TELEPHONE_MIN_CREATE))
        abort();
    check_rule(validate_telephone(value, VALIDATE_TELEPHONE_MIN_CHANNEL), value);

    rule = validate_email(value);
    check_rule(rule, value);
    if (rule == NULL) {
        const char *at = strchr(value, '@');
        if (at == NULL || strchr(at + 1, '@') != NULL || strlen(value) > VALIDATE_EMAIL_MAX)
            abort();
        for (const unsigned char *p = (const unsigned char *)value; *p; p++)
            if (*p <= 0x20 || *p >= 0x7f)
                abort();
    }
    check_rule(validate_channel_id(value), value);

    if (validate_normalize_name(value, out, sizeof(out)) == 0) {
        if (validate_normalize_name(out, again, sizeof(again)) != 0 || strcmp(out, again) != 0)
            abort();
    } else if (out[0] != '\0') {
        abort();
    }
    if (validate_normalize_telephone(value, "+31", out, sizeof(out)) == 0) {
        if (validate_telephone(out, 1) != NULL)
            abort();
        if (validate_normalize_telephone(out, "+31", again, sizeof(again)) != 0 ||
            strcmp(out, again) != 0)
            abort();
    } else if (out[0] != '\0') {
        abort();
    }
    if (validate_normalize_telephone(value, NULL, out, sizeof(out)) == 0 &&
        validate_telephone(out, 1) != NULL)
        abort();
    free(value);
    return 0;
}
