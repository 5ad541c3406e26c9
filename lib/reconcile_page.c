/*
 * reconcile_page: the index page's one-pass reader. See reconcile_page.h.
 *
 * Every function here returns 0 or -1, and -1 only ever means "leave it to json-c": this file
 * never words an error, never decides that a page is bad. Where it cannot be sure to read a
 * value as json-c and reconcile.c would, it gives up. Like reconcile.c, it never puts a value
 * anywhere but the customers it returns.
 */
#include "reconcile_page.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Containers deeper than this are left to json-c (its own limit is 32). */
#define MAX_DEPTH 24
/* A custom-field set wider than this is left to json-c (duplicates are looked for pairwise). */
#define MAX_CUSTOM 64

enum kind { V_NULL, V_TRUE, V_FALSE, V_INT, V_NUMBER, V_STRING, V_OBJECT, V_ARRAY };

struct scan {
    const char *p, *end;
    int depth;
    char *buf; /* the last string read, decoded, NUL-terminated */
    size_t len, cap;
    char *key; /* the last member name read by name(), the same way */
    size_t key_len, key_cap;
};

/* The member name just read is the literal `lit`. */
#define NAME_IS(s, lit)                                                                            \
    ((s)->key_len == sizeof(lit) - 1 && memcmp((s)->key, lit, sizeof(lit) - 1) == 0)

/* A scalar read by value(): a string is in s->buf until the next string is read; V_INT is an
 * integer of at most 18 digits written as json-c would print it (text, textlen); V_NUMBER is any
 * other number; V_OBJECT and V_ARRAY were skipped. */
struct value {
    enum kind kind;
    long long i;
    const char *text;
    size_t textlen;
};

static void ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* After whitespace: the next byte is c (consumed). */
static int eat(struct scan *s, char c)
{
    ws(s);
    if (s->p >= s->end || *s->p != c)
        return -1;
    s->p++;
    return 0;
}

static int peek(struct scan *s)
{
    ws(s);
    return s->p < s->end ? (unsigned char)*s->p : -1;
}

static int reserve(struct scan *s, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *grown = realloc(s->buf, cap);
        if (grown == NULL)
            return -1;
        s->buf = grown;
        s->cap = cap;
    }
    return 0;
}

static int append(struct scan *s, const char *bytes, size_t n)
{
    if (reserve(s, n) != 0)
        return -1;
    memcpy(s->buf + s->len, bytes, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return 0;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* \uXXXX at p (after the backslash and the u), a surrogate pair whole: the code point, UTF-8
 * encoded as json-c encodes it. \u0000 and a lone surrogate (json-c keeps the one, replaces the
 * other) are left to json-c. */
static int unicode(struct scan *s, const char **pp)
{
    const char *p = *pp;
    unsigned cp, low;
    char utf8[4];
    size_t n;
    if (hex4(p, s->end, &cp) != 0 || cp == 0)
        return -1;
    p += 4;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return -1;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (s->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, s->end, &low) != 0 ||
            low < 0xdc00 || low > 0xdfff)
            return -1;
        p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    if (cp < 0x80) {
        utf8[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        utf8[0] = (char)(0xc0 | (cp >> 6));
        utf8[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        utf8[0] = (char)(0xe0 | (cp >> 12));
        utf8[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        utf8[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        utf8[0] = (char)(0xf0 | ((cp >> 18) & 0x07));
        utf8[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        utf8[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        utf8[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    *pp = p;
    return append(s, utf8, n);
}

/* A string at s->p (its opening quote) into s->buf. Control characters, raw or as \u0000, are
 * left to json-c; other bytes are kept as they are (json-c does not check UTF-8 either). */
static int string(struct scan *s)
{
    const char *p = s->p + 1;
    s->len = 0;
    for (;;) {
        const char *run = p;
        while (p < s->end && (unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p == run) { /* "" still needs its NUL */
            if (reserve(s, 0) != 0)
                return -1;
            s->buf[s->len] = '\0';
        }
        if (p > run && append(s, run, (size_t)(p - run)) != 0)
            return -1;
        if (p >= s->end || (unsigned char)*p < 0x20)
            return -1;
        if (*p++ == '"')
            break;
        if (p >= s->end)
            return -1;
        char c = *p++, one;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            one = c;
            break;
        case 'b':
            one = '\b';
            break;
        case 'f':
            one = '\f';
            break;
        case 'n':
            one = '\n';
            break;
        case 'r':
            one = '\r';
            break;
        case 't':
            one = '\t';
            break;
        case 'u':
            if (unicode(s, &p) != 0)
                return -1;
            continue;
        default:
            return -1;
        }
        if (append(s, &one, 1) != 0)
            return -1;
    }
    s->p = p;
    return 0;
}

/* A member name and its colon: the name into s->key (the buffers trade places, so the value
 * read next does not overwrite it). */
static int name(struct scan *s)
{
    if (peek(s) != '"' || string(s) != 0 || eat(s, ':') != 0)
        return -1;
    char *buf = s->buf;
    size_t cap = s->cap;
    s->buf = s->key;
    s->cap = s->key_cap;
    s->key = buf;
    s->key_cap = cap;
    s->key_len = s->len;
    s->len = 0;
    return 0;
}

static int is_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* An RFC 8259 number. V_INT only for what json-c makes an int64 that prints as written: no
 * leading zero, not -0, at most 18 digits (so no overflow to think about). */
static int number(struct scan *s, struct value *v)
{
    const char *p = s->p, *digits;
    int integral = 1;
    if (p < s->end && *p == '-')
        p++;
    digits = p;
    if (!is_digit(p, s->end))
        return -1;
    if (*p == '0')
        p++;
    else
        while (is_digit(p, s->end))
            p++;
    size_t ndigits = (size_t)(p - digits);
    if (p < s->end && *p == '.') {
        integral = 0;
        p++;
        if (!is_digit(p, s->end))
            return -1;
        while (is_digit(p, s->end))
            p++;
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        integral = 0;
        p++;
        if (p < s->end && (*p == '+' || *p == '-'))
            p++;
        if (!is_digit(p, s->end))
            return -1;
        while (is_digit(p, s->end))
            p++;
    }
    v->text = s->p;
    v->textlen = (size_t)(p - s->p);
    v->kind = V_NUMBER;
    if (integral && ndigits <= 18 && !(*s->p == '-' && *digits == '0')) {
        long long n = 0;
        for (const char *d = digits; d < digits + ndigits; d++)
            n = n * 10 + (*d - '0');
        v->i = *s->p == '-' ? -n : n;
        v->kind = V_INT;
    }
    s->p = p;
    return 0;
}

static int literal(struct scan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int skip(struct scan *s);

/* Steps into the object or array whose opening bracket is at s->p: -1 when that is too deep,
 * 1 when it is empty (and already left), 0 when members follow. */
static int enter(struct scan *s, char close)
{
    if (++s->depth > MAX_DEPTH)
        return -1;
    s->p++;
    if (peek(s) != close)
        return 0;
    s->p++;
    s->depth--;
    return 1;
}

/* A container at s->p, read and dropped: members are checked as JSON, nothing kept. */
static int skip_container(struct scan *s, char close)
{
    int entered = enter(s, close);
    if (entered != 0)
        return entered < 0 ? -1 : 0;
    for (;;) {
        if (close == '}' && name(s) != 0)
            return -1;
        if (skip(s) != 0)
            return -1;
        int c = peek(s);
        s->p++;
        if (c == close)
            break;
        if (c != ',')
            return -1;
    }
    s->depth--;
    return 0;
}

/* Any value at s->p (after whitespace): a scalar into *v, a container skipped. */
static int value(struct scan *s, struct value *v)
{
    switch (peek(s)) {
    case '"':
        v->kind = V_STRING;
        return string(s);
    case '{':
        v->kind = V_OBJECT;
        return skip_container(s, '}');
    case '[':
        v->kind = V_ARRAY;
        return skip_container(s, ']');
    case 't':
        v->kind = V_TRUE;
        return literal(s, "true", 4);
    case 'f':
        v->kind = V_FALSE;
        return literal(s, "false", 5);
    case 'n':
        v->kind = V_NULL;
        return literal(s, "null", 4);
    default:
        return number(s, v);
    }
}

static int skip(struct scan *s)
{
    struct value v;
    return value(s, &v);
}

/* After a member's value: 1 when the object (or array) ends with `close`, 0 at a comma. */
static int next_member(struct scan *s, char close)
{
    int c = peek(s);
    if (c == ',') {
        s->p++;
        return 0;
    }
    if (c == close) {
        s->p++;
        return 1;
    }
    return -1;
}

/* reconcile.c's integer_value: an int, or a string of 1 to 18 digits; -1 for other types.
 * Returns -1 (give up) for a number json-c would have to convert. */
static int integer_of(const struct scan *s, const struct value *v, long long *out)
{
    *out = -1;
    if (v->kind == V_NUMBER)
        return -1;
    if (v->kind == V_INT) {
        *out = v->i;
    } else if (v->kind == V_STRING && s->len > 0 && s->len <= 18) {
        long long n = 0;
        for (size_t i = 0; i < s->len; i++) {
            if (s->buf[i] < '0' || s->buf[i] > '9')
                return 0;
            n = n * 10 + (s->buf[i] - '0');
        }
        *out = n;
    }
    return 0;
}

/* reconcile.c's text_member: NULL for null; a string or an int's text, copied; an oversized
 * value or another type is an error there, so it is json-c's to word. */
static int text_of(const struct scan *s, const struct value *v, char **out)
{
    *out = NULL;
    if (v->kind == V_NULL)
        return 0;
    if (v->kind == V_STRING) {
        if (s->len > RECONCILE_VALUE_MAX)
            return -1;
        *out = strdup(s->buf);
    } else if (v->kind == V_INT) {
        *out = strndup(v->text, v->textlen);
    } else {
        return -1;
    }
    return *out == NULL ? -1 : 0;
}

static int add_pair(struct reconcile_pair **pairs, size_t *n, char *name, char *value)
{
    struct reconcile_pair *grown = realloc(*pairs, (*n + 1) * sizeof(**pairs));
    if (grown == NULL)
        return -1;
    *pairs = grown;
    grown[*n].name = name;
    grown[*n].value = value;
    (*n)++;
    return 0;
}

/* One element of "channels": {"type","value"} (or "address" when there is no "value"), both
 * strings, kept; anything else is skipped, as parse_channels skips it. */
static int channel(struct scan *s, struct reconcile_remote *r)
{
    char *type = NULL, *val = NULL;
    int has_value = 0, has_address = 0, has_type = 0, rc = -1;
    if (peek(s) != '{')
        return skip(s);
    int entered = enter(s, '}');
    if (entered != 0)
        return entered < 0 ? -1 : 0;
    for (;;) {
        struct value v;
        if (name(s) != 0)
            goto out;
        int is_type = NAME_IS(s, "type"), is_value = NAME_IS(s, "value"),
            is_address = NAME_IS(s, "address");
        if ((is_type && has_type) || (is_value && has_value) || (is_address && has_address))
            goto out; /* a duplicate: json-c's last-wins is not worth copying */
        if (value(s, &v) != 0)
            goto out;
        char **slot = NULL;
        if (is_type) {
            has_type = 1;
            slot = &type;
        } else if (is_value) {
            has_value = 1;
            slot = &val;
            free(val); /* an "address" before it: "value" is the one read */
            val = NULL;
        } else if (is_address) {
            has_address = 1;
            if (!has_value)
                slot = &val;
        }
        if (slot != NULL && v.kind == V_STRING && (*slot = strdup(s->buf)) == NULL)
            goto out;
        int end = next_member(s, '}');
        if (end < 0)
            goto out;
        if (end)
            break;
    }
    s->depth--;
    rc = 0;
    if (type != NULL && val != NULL && strlen(val) <= RECONCILE_VALUE_MAX) {
        if (add_pair(&r->channels, &r->nchannels, type, val) != 0)
            rc = -1;
        else
            type = val = NULL;
    }
out:
    free(type);
    free(val);
    return rc;
}

static int channels(struct scan *s, struct reconcile_remote *r)
{
    int entered = enter(s, ']');
    if (entered != 0)
        return entered < 0 ? -1 : 0;
    for (;;) {
        if (channel(s, r) != 0)
            return -1;
        int end = next_member(s, ']');
        if (end < 0)
            return -1;
        if (end)
            break;
    }
    s->depth--;
    return 0;
}

/* "custom": every member whose value json_object_get_string gives as reconcile.c keeps it:
 * strings, ints, booleans; null is not set. Other types, and duplicate names, are json-c's. */
static int custom(struct scan *s, struct reconcile_remote *r)
{
    /* The names whose value was null (or too long) are not kept but still count as seen: a
     * duplicate must be found even when its first value was not kept. */
    char *dropped[MAX_CUSTOM];
    size_t ndropped = 0;
    int rc = -1;
    r->custom_known = 1;
    int entered = enter(s, '}');
    if (entered != 0)
        return entered < 0 ? -1 : 0;
    for (;;) {
        struct value v;
        char *key = NULL, *text = NULL;
        if (r->ncustom + ndropped >= MAX_CUSTOM || name(s) != 0)
            goto out;
        for (size_t i = 0; i < r->ncustom; i++) {
            if (strcmp(r->custom[i].name, s->key) == 0)
                goto out;
        }
        for (size_t i = 0; i < ndropped; i++) {
            if (strcmp(dropped[i], s->key) == 0)
                goto out;
        }
        if (value(s, &v) != 0)
            goto out;
        switch (v.kind) {
        case V_NULL:
            break;
        case V_STRING:
            if (s->len <= RECONCILE_VALUE_MAX && (text = strdup(s->buf)) == NULL)
                goto out;
            break;
        case V_INT:
            if ((text = strndup(v.text, v.textlen)) == NULL)
                goto out;
            break;
        case V_TRUE:
        case V_FALSE:
            if ((text = strdup(v.kind == V_TRUE ? "true" : "false")) == NULL)
                goto out;
            break;
        default:
            goto out;
        }
        if ((key = strdup(s->key)) == NULL) {
            free(text);
            goto out;
        }
        if (text == NULL) {
            dropped[ndropped++] = key;
        } else if (add_pair(&r->custom, &r->ncustom, key, text) != 0) {
            free(key);
            free(text);
            goto out;
        }
        int end = next_member(s, '}');
        if (end < 0)
            goto out;
        if (end)
            break;
    }
    s->depth--;
    rc = 0;
out:
    for (size_t i = 0; i < ndropped; i++)
        free(dropped[i]);
    return rc;
}

enum item_member { M_ID, M_BRAND, M_PRIMARY, M_FIRST, M_LAST, M_CHANNELS, M_CUSTOM, M_NONE };

static enum item_member item_member(const struct scan *s)
{
    if (NAME_IS(s, "id"))
        return M_ID;
    if (NAME_IS(s, "brand_id"))
        return M_BRAND;
    if (NAME_IS(s, "external_primary_id"))
        return M_PRIMARY;
    if (NAME_IS(s, "firstname"))
        return M_FIRST;
    if (NAME_IS(s, "lastname"))
        return M_LAST;
    if (NAME_IS(s, "channels"))
        return M_CHANNELS;
    if (NAME_IS(s, "custom"))
        return M_CUSTOM;
    return M_NONE;
}

/* One entry of "items", as reconcile_remote_parse would give it. */
static int item(struct scan *s, struct reconcile_remote *r)
{
    unsigned seen = 0;
    memset(r, 0, sizeof(*r));
    if (peek(s) != '{' || ++s->depth > MAX_DEPTH)
        return -1;
    s->p++;
    if (peek(s) == '}')
        return -1; /* no "id" */
    for (;;) {
        struct value v;
        if (name(s) != 0)
            return -1;
        enum item_member m = item_member(s);
        if (m != M_NONE && (seen & (1u << m)))
            return -1;
        if (m != M_NONE)
            seen |= 1u << m;
        int c = peek(s);
        if (m == M_CHANNELS && c == '[') {
            if (channels(s, r) != 0)
                return -1;
        } else if (m == M_CUSTOM && c == '{') {
            if (custom(s, r) != 0)
                return -1;
        } else {
            if (value(s, &v) != 0)
                return -1;
            switch (m) {
            case M_ID:
                if (integer_of(s, &v, &r->id) != 0 || r->id <= 0)
                    return -1;
                break;
            case M_BRAND:
                if (v.kind != V_NULL && (integer_of(s, &v, &r->brand_id) != 0 || r->brand_id < 0))
                    return -1;
                break;
            case M_PRIMARY:
                if (text_of(s, &v, &r->primary_id) != 0)
                    return -1;
                break;
            case M_FIRST:
                if (text_of(s, &v, &r->firstname) != 0)
                    return -1;
                break;
            case M_LAST:
                if (text_of(s, &v, &r->lastname) != 0)
                    return -1;
                break;
            case M_CHANNELS:
            case M_CUSTOM:
                if (v.kind != V_NULL)
                    return -1; /* the wrong type: reconcile_remote_parse's error */
                break;
            case M_NONE:
                break;
            }
        }
        int end = next_member(s, '}');
        if (end < 0)
            return -1;
        if (end)
            break;
    }
    s->depth--;
    if (!(seen & (1u << M_ID)))
        return -1;
    if (r->primary_id != NULL && r->primary_id[0] == '\0') {
        free(r->primary_id);
        r->primary_id = NULL;
    }
    return 0;
}

static int items(struct scan *s, struct reconcile_page_items *out)
{
    size_t cap = 0;
    int entered = enter(s, ']');
    if (entered != 0)
        return entered < 0 ? -1 : 0;
    for (;;) {
        if (out->n == cap) {
            size_t grown_cap = cap ? cap * 2 : RECONCILE_PAGE_LIMIT;
            struct reconcile_remote *grown = realloc(out->v, grown_cap * sizeof(*grown));
            if (grown == NULL)
                return -1;
            out->v = grown;
            cap = grown_cap;
        }
        int rc = item(s, &out->v[out->n]);
        if (rc != 0) {
            reconcile_remote_free(&out->v[out->n]);
            return -1;
        }
        out->n++;
        int end = next_member(s, ']');
        if (end < 0)
            return -1;
        if (end)
            break;
    }
    s->depth--;
    return 0;
}

/* The envelope and the entries; reconcile_page_check's conditions, any failing one giving up. */
static int page(struct scan *s, long long start, long long limit, long long first_total,
                struct reconcile_page_items *out)
{
    int has_total = 0, has_items = 0, has_start = 0;
    if (peek(s) != '{' || ++s->depth > MAX_DEPTH)
        return -1;
    s->p++;
    if (peek(s) == '}')
        return -1;
    for (;;) {
        struct value v;
        if (name(s) != 0)
            return -1;
        if (NAME_IS(s, "items")) {
            if (has_items++ || peek(s) != '[' || items(s, out) != 0)
                return -1;
        } else if (NAME_IS(s, "itemTotal")) {
            if (has_total++ || value(s, &v) != 0 || integer_of(s, &v, &out->item_total) != 0 ||
                out->item_total < 0)
                return -1;
        } else if (NAME_IS(s, "itemStart")) {
            long long echoed;
            if (has_start++ || value(s, &v) != 0)
                return -1;
            if (v.kind != V_NULL && (integer_of(s, &v, &echoed) != 0 || echoed != start))
                return -1;
        } else if (skip(s) != 0) {
            return -1;
        }
        int end = next_member(s, '}');
        if (end < 0)
            return -1;
        if (end)
            break;
    }
    s->depth--;
    ws(s);
    if (s->p != s->end || !has_total || !has_items)
        return -1;
    if (first_total >= 0 && out->item_total != first_total)
        return -1;
    long long expected = out->item_total - start;
    if (expected < 0)
        expected = 0;
    if (expected > limit)
        expected = limit;
    return (long long)out->n == expected ? 0 : -1;
}

/* A flat object of strings, ints, booleans and nulls, built as json-c's tokener builds it. */
static int row(struct scan *s, struct json_object *obj)
{
    if (peek(s) != '{')
        return -1;
    s->p++;
    if (peek(s) == '}') {
        s->p++;
        ws(s);
        return s->p == s->end ? 0 : -1;
    }
    for (;;) {
        struct value v;
        struct json_object *member = NULL;
        if (name(s) != 0)
            return -1;
        if (json_object_object_get_ex(obj, s->key, NULL))
            return -1; /* a duplicate: jsonb has none, json-c would keep the last */
        if (value(s, &v) != 0)
            return -1;
        switch (v.kind) {
        case V_NULL:
            break;
        case V_STRING:
            member = json_object_new_string_len(s->buf, (int)s->len);
            break;
        case V_INT:
            member = json_object_new_int64(v.i);
            break;
        case V_TRUE:
        case V_FALSE:
            member = json_object_new_boolean(v.kind == V_TRUE);
            break;
        default: /* a fraction or an exponent (json-c keeps its text), an object, an array */
            return -1;
        }
        /* The name is new (looked up above): json-c's own lookup is not needed again. */
        int rc = (v.kind != V_NULL && member == NULL)
                     ? -1
                     : json_object_object_add_ex(obj, s->key, member, JSON_C_OBJECT_ADD_KEY_IS_NEW);
        if (rc != 0) {
            json_object_put(member);
            return -1;
        }
        int end = next_member(s, '}');
        if (end < 0)
            return -1;
        if (end)
            break;
    }
    ws(s);
    return s->p == s->end ? 0 : -1;
}

int reconcile_row_parse(const char *text, size_t len, struct json_object **out)
{
    struct scan s = {.p = text, .end = text + len};
    *out = NULL;
    struct json_object *obj = text != NULL && len < INT32_MAX ? json_object_new_object() : NULL;
    int rc = obj != NULL ? row(&s, obj) : -1;
    free(s.buf);
    free(s.key);
    if (rc != 0) {
        json_object_put(obj);
        return RECONCILE_PAGE_SLOW;
    }
    *out = obj;
    return 0;
}

void reconcile_page_items_free(struct reconcile_page_items *p)
{
    for (size_t i = 0; i < p->n; i++)
        reconcile_remote_free(&p->v[i]);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

int reconcile_page_parse(const char *text, size_t len, long long start, long long limit,
                         long long first_total, struct reconcile_page_items *out)
{
    struct scan s = {.p = text, .end = text + len};
    memset(out, 0, sizeof(*out));
    int rc = text != NULL ? page(&s, start, limit, first_total, out) : -1;
    free(s.buf);
    free(s.key);
    if (rc != 0) {
        reconcile_page_items_free(out);
        return RECONCILE_PAGE_SLOW;
    }
    return 0;
}
