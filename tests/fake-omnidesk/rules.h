/*
 * rules: the API document's value rules, written out by hand.
 *
 * These are the fake's own implementations of the OpenAPI patterns and formats; they must not be
 * shared with the daemon's validator, or one bug would hide itself in both. Patterns are evaluated
 * on UTF-8 input by decoding code points, never byte by byte: the name class
 * `[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\-' ]` means code points, and a malformed sequence matches nothing.
 */
#ifndef FAKE_RULES_H
#define FAKE_RULES_H

#include <stdbool.h>
#include <stddef.h>

/* The patterns, as messages quote them. */
#define RULES_NAME_PATTERN "^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\\-' ]+$"
#define RULES_E164_PATTERN "^\\+[0-9]+$"
#define RULES_CHANNEL_ID_PATTERN "^([0-9]+|email|telephone|facebook|twitter)$"
#define RULES_TWITTER_PATTERN "^[a-zA-Z0-9_ ]+$"
#define RULES_QUERY_PATTERN "^[0-9a-zA-Z ]+$"

/* Length in code points (JSON Schema's minLength), or (size_t)-1 for malformed UTF-8. */
size_t rules_utf8_length(const char *s);

/* ^[a-zA-ZÀ-ÖØ-Þß-öø-ÿŠš.\-' ]+$ on well-formed UTF-8. */
bool rules_is_name(const char *s);
/* ^\+[0-9]+$ */
bool rules_is_e164(const char *s);
/* One @, a non-empty local part, a domain of non-empty labels with at least one dot, no spaces,
   control characters or non-ASCII bytes. */
bool rules_is_email(const char *s);
/* A decimal number as a form field carries it: -?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)? */
bool rules_is_number(const char *s);
/* ^([0-9]+|email|telephone|facebook|twitter)$ */
bool rules_is_channel_id(const char *s);
/* ^[a-zA-Z0-9_ ]+$ */
bool rules_is_twitter(const char *s);
/* ^[0-9a-zA-Z ]+$ */
bool rules_is_query(const char *s);

#endif
