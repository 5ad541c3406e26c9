/*
 * form: the fields of one request, as a PHP server sees them in $_POST or $_GET.
 *
 * Values arrive from libmicrohttpd's post processor in pieces (`off` > 0 continues the field
 * before). A repeated name replaces the earlier value, as in PHP. Everything is capped: a form
 * never holds more than FORM_MAX_FIELDS fields or FORM_MAX_BYTES bytes of names and values.
 */
#ifndef FAKE_FORM_H
#define FAKE_FORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FORM_MAX_FIELDS 256
#define FORM_MAX_BYTES (64 * 1024)

struct form_field {
    char *name;  /* owned, NUL-terminated */
    char *value; /* owned, NUL-terminated (a value holding a NUL byte is refused) */
    size_t value_len;
};

struct form {
    struct form_field *fields; /* owned; in order of first appearance */
    size_t count;
    size_t cap;
    size_t bytes; /* names and values held, for the cap */
};

void form_init(struct form *form);
void form_free(struct form *form);

/* Stores `len` bytes of field `name` at offset `off` of its value (copies both). Returns 0, or -1
   when a cap is reached, the value holds a NUL byte, or memory runs out (the form is unchanged
   then, apart from pieces already stored). */
int form_put(struct form *form, const char *name, const char *data, size_t len, uint64_t off);

/* The value of `name`, or NULL when absent; owned by the form. */
const char *form_get(const struct form *form, const char *name);

/* The value of `name` when present and not empty, else NULL. */
const char *form_get_nonempty(const struct form *form, const char *name);

#endif
