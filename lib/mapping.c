/*
 * mapping: rows to plans. See mapping.h. It must never let a value that breaks an API rule into
 * a plan that will be sent, and never put a personal value into log_error.
 */
#include "mapping.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textcut.h"
#include "validate.h"

#define VALUE_MAX 1024

/* Appends what of `s` fits in out[*len..outlen - 1), as snprintf would cut it. */
static void append(char *out, size_t outlen, size_t *len, const char *s)
{
    size_t n = strlen(s);

    if (n > outlen - 1 - *len)
        n = outlen - 1 - *len;
    memcpy(out + *len, s, n);
    *len += n;
}

/* What snprintf(out, outlen, "%s:%s", type, value) writes, without its format machinery: keys
 * are built several times per delivered row. */
void mapping_key(char *out, size_t outlen, const char *type, const char *value)
{
    size_t len = 0;

    if (outlen == 0)
        return;
    append(out, outlen, &len, type);
    append(out, outlen, &len, ":");
    append(out, outlen, &len, value);
    out[len] = '\0';
}

void mapping_channel_key(const struct mapping_channel *c, char *out, size_t outlen)
{
    mapping_key(out, outlen, c->type, c->value);
}

/* The string value of `key` in `obj`, or NULL when absent or JSON null. Numbers and booleans are
 * rendered as text (a CRM may keep a primary id in an integer column). */
static const char *field(struct json_object *obj, const char *key)
{
    struct json_object *v;
    if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
        return NULL;
    return json_object_get_string(v);
}

static int field_true(struct json_object *obj, const char *key)
{
    struct json_object *v;
    if (obj == NULL || !json_object_object_get_ex(obj, key, &v) || v == NULL)
        return 0;
    return json_object_get_boolean(v);
}

static int differs(struct json_object *a, struct json_object *b, const char *key)
{
    const char *x = field(a, key), *y = field(b, key);
    if (x == NULL || y == NULL)
        return x != y;
    return strcmp(x, y) != 0;
}

static int is_purge(const struct config *cfg, const struct mapping_row *row)
{
    if (strcmp(row->op, "delete") == 0)
        return cfg->on_delete == CONFIG_ON_DELETE_PURGE;
    return row->new_data != NULL && field_true(row->new_data, "erase");
}

void mapping_plan_free(struct mapping_plan *plan)
{
    free(plan->primary_id);
    free(plan->firstname);
    free(plan->lastname);
    free(plan->email);
    free(plan->telephone);
    for (size_t i = 0; i < plan->ncustom; i++)
        free(plan->custom[i].value);
    for (size_t i = 0; i < plan->nchannels; i++)
        free(plan->channels[i].value);
    memset(plan, 0, sizeof(*plan));
}

static char *dup_or_null(const char *s, int *failed)
{
    if (s == NULL)
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL)
        *failed = 1;
    return copy;
}

/*
 * Normalises and transliterates (as the source configures) and validates a name, by the one
 * function reconcile uses too. Returns NULL if fine, else the rule broken. `out` receives the
 * value to send; *transliterated says whether transliteration changed it.
 */
static const char *prepare_name(const struct config_source *src, const char *in, char *out,
                                size_t outlen, int *transliterated)
{
    unsigned flags = (src->normalize_names ? VALIDATE_NAME_NORMALIZE : 0) |
                     (src->names == CONFIG_NAMES_TRANSLITERATE ? VALIDATE_NAME_TRANSLITERATE : 0);
    return validate_prepare_name(in, flags, out, outlen, transliterated);
}

static const char *prepare_telephone(const struct config_source *src, const char *in, char *out,
                                     size_t outlen)
{
    if (src->phone_default_prefix != NULL) {
        if (validate_normalize_telephone(in, src->phone_default_prefix, out, outlen) != 0)
            return validate_telephone(in, VALIDATE_TELEPHONE_MIN_CHANNEL)
                       ? validate_telephone(in, VALIDATE_TELEPHONE_MIN_CHANNEL)
                       : "cannot be normalised to E.164";
        return NULL;
    }
    if (strlen(in) >= outlen)
        return "is too long";
    strcpy(out, in);
    return validate_telephone(out, VALIDATE_TELEPHONE_MIN_CHANNEL);
}

static void set_invalid(struct mapping_plan *plan, const char *what, const char *value,
                        const char *rule)
{
    plan->kind = MAPPING_INVALID;
    /* last_error lives in the database beside the row's own payload: the value helps the
     * operator find the typo. The log line gets the field and the rule only. */
    textcut_printf(plan->error, sizeof(plan->error), "invalid %s \"%.*s\": %s", what,
                   textcut_prefix(value, 200), value, rule);
    snprintf(plan->log_error, sizeof(plan->log_error), "invalid %s: %s", what, rule);
}

static void add_channel(struct mapping_plan *plan, const char *type, const char *value,
                        int *failed)
{
    for (size_t i = 0; i < plan->nchannels; i++) {
        if (strcmp(plan->channels[i].type, type) == 0 && strcmp(plan->channels[i].value, value) == 0)
            return;
    }
    if (plan->nchannels >= MAPPING_MAX_CHANNELS) {
        /* Keep the newest: drop the oldest historic value, never the current one. */
        free(plan->channels[0].value);
        memmove(&plan->channels[0], &plan->channels[1],
                sizeof(plan->channels[0]) * (MAPPING_MAX_CHANNELS - 1));
        plan->nchannels--;
    }
    plan->channels[plan->nchannels].type = type;
    plan->channels[plan->nchannels].value = dup_or_null(value, failed);
    plan->nchannels++;
}

/* Channels of one row's new state that pass validation; invalid historic values are skipped. */
static void collect_channels(const struct config_source *src, struct mapping_plan *plan,
                             struct json_object *data, int *failed)
{
    char buf[VALUE_MAX];
    const char *email = field(data, "email");
    if (email != NULL && *email != '\0' && validate_email(email) == NULL)
        add_channel(plan, "email", email, failed);
    const char *phone = field(data, "telephone");
    if (phone != NULL && *phone != '\0' && prepare_telephone(src, phone, buf, sizeof(buf)) == NULL)
        add_channel(plan, "telephone", buf, failed);
}

/* Fills an upsert plan from the segment's rows; the latest new state wins. */
static void plan_upsert(const struct config_source *src, const struct mapping_row *rows,
                        struct mapping_plan *plan, int *failed)
{
    struct json_object *latest = NULL;
    for (size_t i = plan->first; i <= plan->last; i++) {
        const struct mapping_row *row = &rows[i];
        if (row->new_data == NULL)
            continue; /* an ignored delete */
        latest = row->new_data;
        if (strcmp(row->op, "update") != 0 || row->old_data == NULL) {
            plan->names_changed = 1; /* insert, backfill: the full state may be news */
        } else {
            if (differs(row->old_data, row->new_data, "primary_id"))
                plan->primary_id_changed = plan->names_changed = 1;
            if (differs(row->old_data, row->new_data, "firstname") ||
                differs(row->old_data, row->new_data, "lastname"))
                plan->names_changed = 1;
            json_object_object_foreach(row->new_data, key, val)
            {
                (void)val;
                if (strncmp(key, "custom_", 7) == 0 && differs(row->old_data, row->new_data, key))
                    plan->names_changed = 1;
            }
        }
        collect_channels(src, plan, row->new_data, failed);
    }
    if (latest == NULL) {
        plan->kind = MAPPING_NOTHING;
        return;
    }

    plan->kind = MAPPING_UPSERT;
    char buf[VALUE_MAX];
    const char *rule;
    static const char *const names[] = {"firstname", "lastname"};
    char **slots[] = {&plan->firstname, &plan->lastname};
    for (int i = 0; i < 2; i++) {
        const char *value = field(latest, names[i]);
        if (value == NULL)
            continue;
        int transliterated;
        if ((rule = prepare_name(src, value, buf, sizeof(buf), &transliterated)) != NULL) {
            set_invalid(plan, names[i], value, rule);
            return;
        }
        if (transliterated)
            plan->transliterated |= 1u << i;
        *slots[i] = dup_or_null(buf, failed);
    }
    const char *email = field(latest, "email");
    if (email != NULL && *email != '\0') {
        if ((rule = validate_email(email)) != NULL) {
            set_invalid(plan, "email", email, rule);
            return;
        }
        plan->email = dup_or_null(email, failed);
    }
    const char *phone = field(latest, "telephone");
    if (phone != NULL && *phone != '\0') {
        if ((rule = prepare_telephone(src, phone, buf, sizeof(buf))) != NULL) {
            set_invalid(plan, "telephone", phone, rule);
            return;
        }
        plan->telephone = dup_or_null(buf, failed);
    }
    json_object_object_foreach(latest, key, val)
    {
        if (strncmp(key, "custom_", 7) != 0 || plan->ncustom >= CONFIG_MAX_CUSTOM)
            continue;
        plan->custom[plan->ncustom].param = key;
        plan->custom[plan->ncustom].value =
            val == NULL ? NULL : dup_or_null(json_object_get_string(val), failed);
        plan->ncustom++;
    }
}

int mapping_plan_rows(const struct config *cfg, const struct config_source *src,
                      const struct mapping_row *rows, size_t nrows, struct mapping_plan *plans,
                      size_t *nplanned_rows)
{
    size_t nplans = 0, i = 0;
    int failed = 0;
    *nplanned_rows = 0;

    while (i < nrows && nplans < MAPPING_MAX_PLANS) {
        struct mapping_plan *plan = &plans[nplans];
        memset(plan, 0, sizeof(*plan));
        plan->first = i;

        if (strcmp(rows[i].op, "truncate") == 0) {
            /* Each TRUNCATE row stands alone: it is acknowledged, never turned into purges. */
            plan->kind = MAPPING_TRUNCATE;
            plan->last = i;
            plan->sent_id = rows[i].id;
            nplans++;
            i++;
            continue;
        }

        size_t end = i;
        while (end + 1 < nrows && !is_purge(cfg, &rows[end]) &&
               strcmp(rows[end + 1].op, "truncate") != 0)
            end++;
        plan->last = end;
        plan->sent_id = rows[end].id;

        const struct mapping_row *last = &rows[end];
        const char *pk = field(last->new_data ? last->new_data : last->old_data, "primary_id");
        plan->primary_id = dup_or_null(pk ? pk : "", &failed);

        if (is_purge(cfg, last))
            plan->kind = MAPPING_PURGE;
        else
            plan_upsert(src, rows, plan, &failed);
        if (plan->kind != MAPPING_INVALID && (pk == NULL || *pk == '\0')) {
            plan->kind = MAPPING_INVALID;
            snprintf(plan->error, sizeof(plan->error), "invalid primary_id: the CRM row has none");
            snprintf(plan->log_error, sizeof(plan->log_error), "invalid primary_id: the CRM row has none");
        }
        nplans++;
        i = end + 1;
    }
    *nplanned_rows = i;
    if (failed) {
        for (size_t p = 0; p < nplans; p++)
            mapping_plan_free(&plans[p]);
        return OMNISYNC_ENOMEM;
    }
    return (int)nplans;
}
