/*
 * reconcile: the comparison core. See reconcile.h. It must never put a value (name, email,
 * phone) anywhere but a report entry's `values`, which exists only with --show-data.
 */
#include "reconcile.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *reconcile_kind_name(enum reconcile_kind kind)
{
    static const char *const names[RECONCILE_NKINDS] = {
        "in_step", "missing", "different", "extra", "unsendable", "pending",
    };
    return kind >= 0 && kind < RECONCILE_NKINDS ? names[kind] : "unknown";
}

/* ---- Omnidesk's answers ---- */

/* An integer, or a string of digits (ids beyond JSON's safe range arrive as strings). -1 if
 * neither. */
static long long integer_value(struct json_object *v)
{
    if (v == NULL)
        return -1;
    if (json_object_is_type(v, json_type_int)) {
        errno = 0;
        long long n = json_object_get_int64(v);
        return errno == 0 ? n : -1;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        if (*s == '\0' || strlen(s) > 18)
            return -1;
        for (const char *p = s; *p; p++) {
            if (!isdigit((unsigned char)*p))
                return -1;
        }
        return atoll(s);
    }
    return -1;
}

/* A string member copied into *out (NULL when absent or null). Numbers are rendered as text
 * (an external id may be numeric). -1 for another type or a value beyond the cap, -2 without
 * memory. */
static int text_member(struct json_object *obj, const char *key, char **out)
{
    struct json_object *v = NULL;
    *out = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_int))
        return -1;
    const char *s = json_object_get_string(v);
    if (strlen(s) > RECONCILE_VALUE_MAX)
        return -1;
    *out = strdup(s);
    return *out == NULL ? -2 : 0;
}

static void free_pairs(struct reconcile_pair *pairs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].name);
        free(pairs[i].value);
    }
    free(pairs);
}

void reconcile_remote_free(struct reconcile_remote *r)
{
    free(r->primary_id);
    free(r->firstname);
    free(r->lastname);
    free_pairs(r->channels, r->nchannels);
    free_pairs(r->custom, r->ncustom);
    memset(r, 0, sizeof(*r));
}

static int add_pair(struct reconcile_pair **pairs, size_t *n, const char *name, const char *value)
{
    struct reconcile_pair *grown = realloc(*pairs, (*n + 1) * sizeof(**pairs));
    if (grown == NULL)
        return OMNISYNC_ENOMEM;
    *pairs = grown;
    grown[*n].name = strdup(name);
    grown[*n].value = strdup(value);
    if (grown[*n].name == NULL || grown[*n].value == NULL) {
        free(grown[*n].name);
        free(grown[*n].value);
        return OMNISYNC_ENOMEM;
    }
    (*n)++;
    return OMNISYNC_OK;
}

/* The channel list: {"type":..,"value":..} entries; an entry of another shape says nothing
 * omnisync could compare and is skipped (the API document does not give their shape). */
static int parse_channels(struct json_object *list, struct reconcile_remote *out)
{
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *c = json_object_array_get_idx(list, i), *type, *value;
        if (!json_object_is_type(c, json_type_object) ||
            !json_object_object_get_ex(c, "type", &type) ||
            !json_object_is_type(type, json_type_string) ||
            !(json_object_object_get_ex(c, "value", &value) ||
              json_object_object_get_ex(c, "address", &value)) ||
            !json_object_is_type(value, json_type_string) ||
            json_object_get_string_len(value) > RECONCILE_VALUE_MAX)
            continue;
        if (add_pair(&out->channels, &out->nchannels, json_object_get_string(type),
                     json_object_get_string(value)) != 0)
            return OMNISYNC_ENOMEM;
    }
    return OMNISYNC_OK;
}

static int parse_custom(struct json_object *obj, struct reconcile_remote *out)
{
    out->custom_known = 1;
    json_object_object_foreach(obj, key, val)
    {
        if (val == NULL)
            continue; /* null: not set, as an absent field */
        const char *s = json_object_get_string(val);
        if (strlen(s) > RECONCILE_VALUE_MAX)
            continue;
        if (add_pair(&out->custom, &out->ncustom, key, s) != 0)
            return OMNISYNC_ENOMEM;
    }
    return OMNISYNC_OK;
}

int reconcile_remote_parse(struct json_object *item, struct reconcile_remote *out, char *err,
                           size_t errlen)
{
    struct json_object *v = NULL;
    const char *bad = NULL;
    int rc;
    memset(out, 0, sizeof(*out));
    if (!json_object_is_type(item, json_type_object)) {
        snprintf(err, errlen, "a customer entry is not an object");
        return OMNISYNC_EINVAL;
    }
    if (!json_object_object_get_ex(item, "id", &v) || (out->id = integer_value(v)) <= 0) {
        snprintf(err, errlen, "a customer entry has no integer \"id\"");
        return OMNISYNC_EINVAL;
    }
    if (json_object_object_get_ex(item, "brand_id", &v) && v != NULL &&
        (out->brand_id = integer_value(v)) < 0)
        bad = "brand_id";
    else if ((rc = text_member(item, "external_primary_id", &out->primary_id)) != 0)
        bad = rc == -2 ? "" : "external_primary_id";
    else if ((rc = text_member(item, "firstname", &out->firstname)) != 0)
        bad = rc == -2 ? "" : "firstname";
    else if ((rc = text_member(item, "lastname", &out->lastname)) != 0)
        bad = rc == -2 ? "" : "lastname";
    else if (json_object_object_get_ex(item, "channels", &v) && v != NULL) {
        if (!json_object_is_type(v, json_type_array))
            bad = "channels";
        else if (parse_channels(v, out) != 0)
            bad = "";
    }
    if (bad == NULL && json_object_object_get_ex(item, "custom", &v) && v != NULL) {
        if (!json_object_is_type(v, json_type_object))
            bad = "custom";
        else if (parse_custom(v, out) != 0)
            bad = "";
    }
    if (bad != NULL) {
        long long id = out->id;
        reconcile_remote_free(out);
        if (*bad == '\0')
            return OMNISYNC_ENOMEM;
        snprintf(err, errlen, "customer %lld: \"%s\" has the wrong type", id, bad);
        return OMNISYNC_EINVAL;
    }
    if (out->primary_id != NULL && out->primary_id[0] == '\0') {
        free(out->primary_id);
        out->primary_id = NULL;
    }
    return OMNISYNC_OK;
}

int reconcile_page_check(struct json_object *root, long long start, long long limit,
                         long long first_total, struct reconcile_page *page, char *err,
                         size_t errlen)
{
    struct json_object *v = NULL;
    memset(page, 0, sizeof(*page));
    page->item_start = start;
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "the index page at itemStart=%lld is not a JSON object", start);
        return OMNISYNC_EINVAL;
    }
    if (!json_object_object_get_ex(root, "itemTotal", &v) ||
        (page->item_total = integer_value(v)) < 0) {
        snprintf(err, errlen, "the index page at itemStart=%lld has no integer \"itemTotal\"",
                 start);
        return OMNISYNC_EINVAL;
    }
    if (!json_object_object_get_ex(root, "items", &v) || !json_object_is_type(v, json_type_array)) {
        snprintf(err, errlen, "the index page at itemStart=%lld has no array \"items\"", start);
        return OMNISYNC_EINVAL;
    }
    page->items = v;
    page->nitems = json_object_array_length(v);
    if (json_object_object_get_ex(root, "itemStart", &v) && v != NULL &&
        integer_value(v) != start) {
        snprintf(err, errlen, "the index page asked at itemStart=%lld says another itemStart",
                 start);
        return OMNISYNC_EINVAL;
    }
    if (first_total >= 0 && page->item_total != first_total) {
        snprintf(err, errlen,
                 "itemTotal changed from %lld to %lld during the read (customers added or removed "
                 "at Omnidesk meanwhile, or an index that never ends); run reconcile again",
                 first_total, page->item_total);
        return OMNISYNC_EINVAL;
    }
    long long expected = page->item_total - start;
    if (expected < 0)
        expected = 0;
    if (expected > limit)
        expected = limit;
    if ((long long)page->nitems != expected) {
        snprintf(err, errlen,
                 "the index page at itemStart=%lld has %zu items where itemTotal=%lld and "
                 "itemLimit=%lld make %lld",
                 start, page->nitems, page->item_total, limit, expected);
        return OMNISYNC_EINVAL;
    }
    return OMNISYNC_OK;
}

/* ---- the comparison ---- */

static int names_equal(const char *want, const char *have)
{
    return have != NULL && strcmp(want, have) == 0;
}

static int has_channel(const struct reconcile_remote *remote, const char *type, const char *value)
{
    int email = strcmp(type, "email") == 0;
    for (size_t i = 0; i < remote->nchannels; i++) {
        const struct reconcile_pair *c = &remote->channels[i];
        if (strcmp(c->name, type) != 0)
            continue;
        if (email ? strcasecmp(c->value, value) == 0 : strcmp(c->value, value) == 0)
            return 1;
    }
    return 0;
}

static const char *remote_custom(const struct reconcile_remote *remote, const char *name)
{
    for (size_t i = 0; i < remote->ncustom; i++) {
        if (strcmp(remote->custom[i].name, name) == 0)
            return remote->custom[i].value;
    }
    return NULL;
}

int reconcile_needs_item(const struct mapping_plan *plan, const struct reconcile_remote *remote)
{
    return remote != NULL && plan->kind == MAPPING_UPSERT && plan->ncustom > 0 &&
           !remote->custom_known;
}

/* The field an unsendable plan's log_error names: "invalid <field>: <rule>". */
static const char *invalid_field(const struct mapping_plan *plan)
{
    static const char *const known[] = {"firstname", "lastname", "email", "telephone",
                                        "primary_id"};
    const char *e = plan->log_error;
    if (strncmp(e, "invalid ", 8) == 0) {
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            size_t n = strlen(known[i]);
            if (strncmp(e + 8, known[i], n) == 0 && (e[8 + n] == ':' || e[8 + n] == ' '))
                return known[i];
        }
    }
    return "row";
}

enum reconcile_kind reconcile_compare(const struct mapping_plan *plan,
                                      const struct reconcile_remote *remote,
                                      struct reconcile_diff *diff)
{
    memset(diff, 0, sizeof(*diff));
    if (plan->kind == MAPPING_INVALID) {
        diff->kind = RECONCILE_UNSENDABLE;
        diff->fields[diff->nfields++] = invalid_field(plan);
        snprintf(diff->rule, sizeof(diff->rule), "%s", plan->log_error);
        return diff->kind;
    }
    if (remote == NULL) {
        diff->kind = RECONCILE_MISSING;
        return diff->kind;
    }
    if (plan->firstname != NULL && *plan->firstname != '\0' &&
        !names_equal(plan->firstname, remote->firstname))
        diff->fields[diff->nfields++] = "firstname";
    if (plan->lastname != NULL && *plan->lastname != '\0' &&
        !names_equal(plan->lastname, remote->lastname))
        diff->fields[diff->nfields++] = "lastname";
    if (plan->email != NULL && !has_channel(remote, "email", plan->email))
        diff->fields[diff->nfields++] = "email";
    if (plan->telephone != NULL && !has_channel(remote, "telephone", plan->telephone))
        diff->fields[diff->nfields++] = "telephone";
    if (remote->custom_known) {
        for (size_t i = 0; i < plan->ncustom && diff->nfields < RECONCILE_MAX_FIELDS; i++) {
            const char *want = plan->custom[i].value ? plan->custom[i].value : "";
            const char *have = remote_custom(remote, plan->custom[i].param + 7);
            if (strcmp(want, have ? have : "") != 0)
                diff->fields[diff->nfields++] = plan->custom[i].param;
        }
    }
    diff->kind = diff->nfields > 0 ? RECONCILE_DIFFERENT : RECONCILE_IN_STEP;
    return diff->kind;
}

/* ---- the report ---- */

void reconcile_report_init(struct reconcile_report *r, const char *source)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->source, sizeof(r->source), "%s", source);
}

static void entry_free(struct reconcile_entry *e)
{
    free(e->primary_id);
    for (size_t i = 0; i < e->nfields; i++)
        free(e->fields[i]);
    free(e->rule);
    free(e->forget_channels[0]);
    free(e->forget_channels[1]);
    json_object_put(e->values);
}

void reconcile_report_free(struct reconcile_report *r)
{
    for (size_t i = 0; i < r->nentries; i++)
        entry_free(&r->entries[i]);
    free(r->entries);
    r->entries = NULL;
    r->nentries = r->cap = 0;
}

int reconcile_report_add(struct reconcile_report *r, const char *primary_id, long long brand_id,
                         const struct reconcile_diff *diff, struct json_object *values)
{
    if (r->nentries == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct reconcile_entry *grown = realloc(r->entries, cap * sizeof(*grown));
        if (grown == NULL) {
            json_object_put(values);
            return OMNISYNC_ENOMEM;
        }
        r->entries = grown;
        r->cap = cap;
    }
    struct reconcile_entry *e = &r->entries[r->nentries];
    memset(e, 0, sizeof(*e));
    e->values = values;
    e->kind = diff->kind;
    e->brand_id = brand_id;
    int failed = (e->primary_id = strdup(primary_id)) == NULL;
    for (size_t i = 0; i < diff->nfields && !failed; i++) {
        if ((e->fields[i] = strdup(diff->fields[i])) == NULL)
            failed = 1;
        else
            e->nfields++;
    }
    if (!failed && diff->rule[0] != '\0')
        failed = (e->rule = strdup(diff->rule)) == NULL;
    if (failed) {
        entry_free(e);
        return OMNISYNC_ENOMEM;
    }
    r->nentries++;
    r->counts[diff->kind]++;
    return OMNISYNC_OK;
}

static void add_text(struct json_object *obj, const char *key, const char *value)
{
    json_object_object_add(obj, key, value ? json_object_new_string(value) : NULL);
}

struct json_object *reconcile_values(const struct mapping_plan *plan,
                                     const struct reconcile_remote *remote,
                                     const struct reconcile_diff *diff)
{
    struct json_object *o = json_object_new_object();
    /* An extra customer has no CRM side. */
    struct json_object *crm = diff->kind == RECONCILE_EXTRA ? NULL : json_object_new_object();
    struct json_object *omnidesk = remote ? json_object_new_object() : NULL;
    if (crm == NULL) {
        /* nothing from the CRM */
    } else if (diff->kind == RECONCILE_UNSENDABLE) {
        add_text(crm, "error", plan->error);
    } else {
        add_text(crm, "firstname", plan->firstname);
        add_text(crm, "lastname", plan->lastname);
        add_text(crm, "email", plan->email);
        add_text(crm, "telephone", plan->telephone);
        for (size_t i = 0; i < plan->ncustom; i++)
            add_text(crm, plan->custom[i].param, plan->custom[i].value);
    }
    if (remote != NULL) {
        add_text(omnidesk, "firstname", remote->firstname);
        add_text(omnidesk, "lastname", remote->lastname);
        struct json_object *channels = json_object_new_array();
        for (size_t i = 0; i < remote->nchannels; i++) {
            struct json_object *c = json_object_new_object();
            add_text(c, "type", remote->channels[i].name);
            add_text(c, "value", remote->channels[i].value);
            json_object_array_add(channels, c);
        }
        json_object_object_add(omnidesk, "channels", channels);
        if (remote->custom_known) {
            struct json_object *custom = json_object_new_object();
            for (size_t i = 0; i < remote->ncustom; i++)
                add_text(custom, remote->custom[i].name, remote->custom[i].value);
            json_object_object_add(omnidesk, "custom", custom);
        }
    }
    json_object_object_add(o, "crm", crm);
    json_object_object_add(o, "omnidesk", omnidesk);
    return o;
}

void reconcile_report_set_pending(struct reconcile_report *r, size_t i)
{
    struct reconcile_entry *e = &r->entries[i];
    if (e->kind == RECONCILE_PENDING)
        return;
    r->counts[e->kind]--;
    r->counts[RECONCILE_PENDING]++;
    e->kind = RECONCILE_PENDING;
}

int reconcile_report_drifts(const struct reconcile_report *r)
{
    return r->counts[RECONCILE_MISSING] + r->counts[RECONCILE_DIFFERENT] +
               r->counts[RECONCILE_UNSENDABLE] >
           0;
}

struct json_object *reconcile_report_json(const struct reconcile_report *r)
{
    static const enum reconcile_kind shown[] = {RECONCILE_MISSING, RECONCILE_DIFFERENT,
                                                RECONCILE_EXTRA, RECONCILE_UNSENDABLE,
                                                RECONCILE_PENDING};
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "source", json_object_new_string(r->source));
    json_object_object_add(o, "crm_customers", json_object_new_int64(r->crm_customers));
    json_object_object_add(o, "omnidesk_customers", json_object_new_int64(r->omnidesk_customers));
    json_object_object_add(o, "in_step", json_object_new_int64(r->in_step));
    struct json_object *counts = json_object_new_object();
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
        json_object_object_add(counts, reconcile_kind_name(shown[i]),
                               json_object_new_int64(r->counts[shown[i]]));
    json_object_object_add(o, "counts", counts);
    struct json_object *drift = json_object_new_array();
    for (size_t i = 0; i < r->nentries; i++) {
        const struct reconcile_entry *e = &r->entries[i];
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "primary_id", json_object_new_string(e->primary_id));
        if (e->brand_id > 0)
            json_object_object_add(d, "brand_id", json_object_new_int64(e->brand_id));
        json_object_object_add(d, "kind", json_object_new_string(reconcile_kind_name(e->kind)));
        struct json_object *fields = json_object_new_array();
        for (size_t f = 0; f < e->nfields; f++)
            json_object_array_add(fields, json_object_new_string(e->fields[f]));
        json_object_object_add(d, "fields", fields);
        if (e->rule != NULL)
            json_object_object_add(d, "rule", json_object_new_string(e->rule));
        if (e->values != NULL)
            json_object_object_add(d, "values", json_object_get(e->values));
        json_object_array_add(drift, d);
    }
    json_object_object_add(o, "drift", drift);
    if (r->enqueued > 0 || r->repair_skipped > 0) {
        json_object_object_add(o, "repairs_enqueued", json_object_new_int64(r->enqueued));
        json_object_object_add(o, "repairs_skipped", json_object_new_int64(r->repair_skipped));
    }
    return o;
}

/* A value from outside (a primary id) on a terminal: control characters would move the cursor or
 * forge lines, so they are shown as '?'. */
static void put_text(FILE *out, const char *s, int width)
{
    int n = 0;
    for (; *s; s++, n++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
    for (; n < width; n++)
        fputc(' ', out);
}

void reconcile_report_print(const struct reconcile_report *r, FILE *out)
{
    fprintf(out, "source %s: %lld CRM customers, %lld at Omnidesk, %lld in step\n", r->source,
            r->crm_customers, r->omnidesk_customers, r->in_step);
    fprintf(out, "  missing %lld  different %lld  extra %lld  unsendable %lld  pending %lld\n",
            r->counts[RECONCILE_MISSING], r->counts[RECONCILE_DIFFERENT],
            r->counts[RECONCILE_EXTRA], r->counts[RECONCILE_UNSENDABLE],
            r->counts[RECONCILE_PENDING]);
    if (r->nentries == 0)
        return;
    fprintf(out, "\n%-24s %-11s %s\n", "PRIMARY ID", "KIND", "FIELDS");
    for (size_t i = 0; i < r->nentries; i++) {
        const struct reconcile_entry *e = &r->entries[i];
        put_text(out, e->primary_id, 24);
        fprintf(out, " %-11s ", reconcile_kind_name(e->kind));
        if (e->rule != NULL) {
            fprintf(out, "%s", e->rule);
        } else {
            for (size_t f = 0; f < e->nfields; f++)
                fprintf(out, "%s%s", f ? ", " : "", e->fields[f]);
        }
        if (e->values != NULL)
            fprintf(out, "  %s",
                    json_object_to_json_string_ext(e->values, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
        fputc('\n', out);
    }
}
