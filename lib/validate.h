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
 * Transliteration of names the pattern refuses (`[source] names = transliterate`) is one of those
 * choices: validate_prepare_name() is the one function every caller (mapping, hence delivery,
 * backfill and reconcile) uses, so a name is compared with the value that is sent.
 *
 * Pure functions: no I/O, no allocation, except that validate_prepare_name() keeps one ICU
 * transliterator, opened on first use (it is costly to build) and released by validate_close().
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

/* Flags of validate_prepare_name(), from the source's config. */
#define VALIDATE_NAME_NORMALIZE 1u     /* normalize_names = yes: validate_normalize_name first */
#define VALIDATE_NAME_TRANSLITERATE 2u /* names = transliterate (the default) */

/* The longest name validate_prepare_name() takes, in bytes of UTF-8. */
#define VALIDATE_NAME_MAX 1023

/*
 * Makes a firstname/lastname ready to send and validates it: writes the value to send into `out`
 * (capacity `outlen`, including the NUL) and returns NULL, or returns the rule broken (static,
 * free of the value, as validate_name()) with `out` holding "". An empty `in` gives "" and NULL:
 * the caller decides whether the field is required. `in` is borrowed.
 *
 * Without VALIDATE_NAME_TRANSLITERATE this is validate_name() (after the normalisation when
 * VALIDATE_NAME_NORMALIZE is set): `names = strict`. With it, a name the pattern refuses is
 * rewritten instead of refused:
 *  - it is put in Unicode NFC first, so "e" + U+0301 becomes the allowed "é";
 *  - characters the pattern allows stay as they are (é, ü, ø, ß, Š);
 *  - each run of other letters, marks and punctuation is replaced by its Latin transliteration,
 *    by ICU's "Greek-Latin/UNGEGN; Russian-Latin/BGN; Any-Latin; Latin-ASCII" (Ł -> L,
 *    ř -> r, Σοφία -> Sofia, Иван -> Ivan, 王小明 -> wang xiao ming, ’ -> ');
 *  - other white space (a tab, a no-break space) counts as a space;
 *  - symbols (emoji included), control and format characters, and whatever the transliteration
 *    still leaves outside the pattern are dropped; the spaces around a dropped character are
 *    collapsed into one, or removed at either end;
 *  - a digit (of any script, or one a transliteration produces, as from ½) is a data error: the
 *    pattern's rule is returned, as in strict mode; so is a name of which nothing is left.
 * Invalid UTF-8 is refused in both modes. *transliterated (when not NULL) is set to 1 when `out`
 * differs from the (normalised) input because of this rewriting, else 0.
 */
const char *validate_prepare_name(const char *in, unsigned flags, char *out, size_t outlen,
                                  int *transliterated);

/* Releases the transliterator validate_prepare_name() keeps (at exit; a later call opens it
 * again). Safe to call when it was never opened. */
void validate_close(void);

#endif
