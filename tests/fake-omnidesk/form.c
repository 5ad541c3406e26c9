/*
 * form: request fields with PHP's rules and hard caps (see form.h).
 */
#include "form.h"

#include <stdlib.h>
#include <string.h>

void form_init(struct form *form)
{
    memset(form, 0, sizeof(*form));
}

void form_free(struct form *form)
{
    for (size_t i = 0; i < form->count; i++) {
        free(form->fields[i].name);
        free(form->fields[i].value);
    }
    free(form->fields);
    form_init(form);
}

static struct form_field *find(const struct form *form, const char *name)
{
    for (size_t i = 0; i < form->count; i++)
        if (strcmp(form->fields[i].name, name) == 0)
            return &form->fields[i];
    return NULL;
}

int form_put(struct form *form, const char *name, const char *data, size_t len, uint64_t off)
{
    struct form_field *field = find(form, name);
    char *value;

    if (len > 0 && memchr(data, '\0', len) != NULL)
        return -1;
    if (len > FORM_MAX_BYTES || form->bytes + len + strlen(name) > FORM_MAX_BYTES)
        return -1;
    if (field != NULL && off > 0) {
        /* The post processor continues the value it started. */
        if (off != field->value_len)
            return -1;
        value = realloc(field->value, field->value_len + len + 1);
        if (value == NULL)
            return -1;
        memcpy(value + field->value_len, data, len);
        field->value_len += len;
        value[field->value_len] = '\0';
        field->value = value;
        form->bytes += len;
        return 0;
    }
    if (off > 0)
        return -1;
    value = malloc(len + 1);
    if (value == NULL)
        return -1;
    if (len > 0)
        memcpy(value, data, len);
    value[len] = '\0';
    if (field != NULL) {
        /* PHP: a repeated name replaces the earlier value. */
        form->bytes -= field->value_len;
        free(field->value);
        field->value = value;
        field->value_len = len;
        form->bytes += len;
        return 0;
    }
    if (form->count == FORM_MAX_FIELDS)
        goto fail;
    if (form->count == form->cap) {
        size_t cap = form->cap ? form->cap * 2 : 8;
        struct form_field *fields = realloc(form->fields, cap * sizeof(*fields));

        if (fields == NULL)
            goto fail;
        form->fields = fields;
        form->cap = cap;
    }
    field = &form->fields[form->count];
    field->name = strdup(name);
    if (field->name == NULL)
        goto fail;
    field->value = value;
    field->value_len = len;
    form->count++;
    form->bytes += len + strlen(name);
    return 0;
fail:
    free(value);
    return -1;
}

const char *form_get(const struct form *form, const char *name)
{
    const struct form_field *field = find(form, name);

    return field ? field->value : NULL;
}

const char *form_get_nonempty(const struct form *form, const char *name)
{
    const char *value = form_get(form, name);

    return (value != NULL && value[0] != '\0') ? value : NULL;
}
