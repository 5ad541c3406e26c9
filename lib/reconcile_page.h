/*
 * reconcile_page: an index page's text taken apart in one pass, straight into customers, without
 * a json-c tree: the fast path of reconcile's index read (issue 19 acceptance 3).
 *
 * json-c builds an object per customer, channel and custom-field set (a hash table each), copies
 * every key and value, and frees it all again: on a 99-customer page that was four fifths of
 * reconcile's CPU per page. This reader keeps only what reconcile_remote_parse keeps.
 *
 * It is a fast path, not a second definition of the answer. It takes only text that it can read
 * exactly as json-c followed by reconcile_page_check and reconcile_remote_parse would: RFC 8259
 * JSON, the whole text one object (only JSON whitespace after it), no NUL, no \u0000, no lone
 * surrogate, no duplicate member among those it reads, every check passing. Anything else (a
 * wrong shape, a failing check, json-c's leniencies such as comments or trailing bytes, a number
 * it would have to round) is RECONCILE_PAGE_SLOW, and the caller parses the text with json-c and
 * the checks above, which decide the outcome and word the error. So the fast path changes the
 * cost of a page, never its result; tests/fuzz/fuzz_index_page holds the two paths to that.
 *
 * The CRM's rows come as JSON text too, 20,000 small objects in a large run: the same reader
 * builds their json-c objects (which mapping needs) without json-c's tokener, its allocation and
 * its locale switch per parse.
 */
#ifndef OMNISYNC_RECONCILE_PAGE_H
#define OMNISYNC_RECONCILE_PAGE_H

#include <stddef.h>

#include "reconcile.h"

/* reconcile_page_parse could not read the text exactly: parse it with json-c. */
#define RECONCILE_PAGE_SLOW 1

/* One index page read by reconcile_page_parse. */
struct reconcile_page_items {
    long long item_total;
    struct reconcile_remote *v; /* every entry of "items", in order, as reconcile_remote_parse */
    size_t n;
};

/*
 * Reads the index page `text` (`len` bytes, not necessarily NUL-terminated) asked at itemStart
 * `start` with itemLimit `limit`, `first_total` as for reconcile_page_check. Returns 0 with *out
 * holding the page (the caller frees it with reconcile_page_items_free, or takes the entries over
 * and frees the array), or RECONCILE_PAGE_SLOW (also when memory ran out) with *out empty.
 */
int reconcile_page_parse(const char *text, size_t len, long long start, long long limit,
                         long long first_total,
                         struct reconcile_page_items *out) OMNISYNC_MUST_CHECK;
void reconcile_page_items_free(struct reconcile_page_items *p);

/*
 * The same reader for a CRM row's mapped columns (the text of jsonb_build_object(...): one flat
 * object): 0 with *out a new reference to the object json_tokener_parse would have built (the
 * same members in the same order, strings, int64s, booleans and nulls), or RECONCILE_PAGE_SLOW
 * with *out NULL for anything else (a fraction or an exponent, a nested value, a duplicate
 * name, whatever reconcile_page_parse would leave to json-c): parse it with json-c then.
 */
int reconcile_row_parse(const char *text, size_t len, struct json_object **out) OMNISYNC_MUST_CHECK;

#endif
