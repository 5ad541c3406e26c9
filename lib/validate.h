/*
 * validate: the API document's field rules, applied before anything is sent.
 *
 * Omnidesk rejects a whole request when one field breaks its pattern, and a rejected create costs
 * the row an attempt and an operator a look. So every value is checked here first, against the
 * rules of omnidesk-customer-openapi.json, and a row that fails goes to `failed` with the field
 * name and the rule returned here. The rule strings are static and never contain the value: names,
 * emails and phones are personal data and must not reach a log line.
 *
 * Normalisation (trim and collapse spaces in names, strip phone formatting to E.164) is offered
 * for sources that configure it; nothing here rewrites a value on its own initiative.
 *
 * Pure functions: no I/O, no globals, no allocation.
 */
#ifndef OMNISYNC_VALIDATE_H
#define OMNISYNC_VALIDATE_H

#include <stddef.h>

#include "errors.h"

/* The API's minimum lengths for extra_telephone: create requires 12, addChannelOnly 1. */
#define VALIDATE_TELEPHONE_MIN_CREATE 12
#define VALIDATE_TELEPHONE_MIN_CHANNEL 1

/* RFC 5321's path limit, minus the angle brackets. */
#define VALIDATE_EMAIL_MAX 254

/*
 * Each returns NULL when `value` (a NUL-terminated string, borrowed) is valid, else a static
 * string stating the rule broken, fit to follow "invalid <field>: ". The rule text never contains
 * the value. A NULL `value` is invalid ("is required").
 */

/* firstname/lastname: ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\-' ]+$ over UTF-8 code points; invalid UTF-8
 * (including overlong forms and surrogates) is reported as such. */
const char *validate_name(const char *value);

/* extra_telephone: ^\+[0-9]+$ and at least `min_length` characters. */
const char *validate_telephone(const char *value, size_t min_length);

/* extra_email: one '@', non-empty local part, a dotted domain without empty labels, printable
 * ASCII only without spaces or "(),:;<>[\], at most VALIDATE_EMAIL_MAX bytes. */
const char *validate_email(const char *value);

/* channel_id: ^([0-9]+|email|telephone|facebook|twitter)$ */
const char *validate_channel_id(const char *value);

/*
 * Writes `in` into `out` (capacity `outlen`, including the NUL) with leading and trailing ASCII
 * whitespace removed and each inner run of whitespace replaced by one space. Nothing else is
 * changed; the caller still validates the result. Returns 0, OMNISYNC_EINVAL for NULL arguments
 * or outlen 0, OMNISYNC_ETOOBIG when the result does not fit. On failure `out` (if any) holds "".
 */
int validate_normalize_name(const char *in, char *out, size_t outlen) OMNISYNC_MUST_CHECK;

/*
 * Writes `in` as E.164 into `out` (capacity `outlen`, including the NUL):
 *  - spaces, tabs, dots, dashes, slashes and parentheses are removed;
 *  - in an international number (leading "+" or "00") a "(0)" is dropped whole, because that
 *    trunk digit is not dialled from abroad: "+31 (0)6 1234 5678" -> "+31612345678";
 *  - a leading "00" becomes "+";
 *  - a leading single "0" (national trunk prefix) is replaced by `default_prefix` (e.g. "+31")
 *    when it is non-NULL and non-empty; otherwise such a number is refused, never guessed.
 *    (So a prefix suits only countries whose numbers drop a trunk 0 abroad: not Italy.)
 * The result must pass validate_telephone(out, 1), its country code must not start with 0, and
 * a national number needs a digit after its trunk 0.
 * Returns 0, OMNISYNC_EINVAL when it cannot be made valid (or `default_prefix` is not "+digits"),
 * OMNISYNC_ETOOBIG when it does not fit. On failure `out` (if any) holds "".
 */
int validate_normalize_telephone(const char *in, const char *default_prefix, char *out,
                                 size_t outlen) OMNISYNC_MUST_CHECK;

#endif
