/*
 * print: query results for people (an aligned table) or for scripts (--json: an array of
 * objects, numbers and booleans typed, NULL as null).
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Display width of UTF-8 text: code points, which is right for the letters CRM names use. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static struct json_object *typed(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    const char *v = PQgetvalue(res, row, col);
    switch (PQftype(res, col)) {
    case 20: /* int8 */
    case 21: /* int2 */
    case 23: /* int4 */
        return json_object_new_int64(atoll(v));
    case 16: /* bool */
        return json_object_new_boolean(v[0] == 't');
    case 700: /* float4 */
    case 701: /* float8 */
    case 1700: /* numeric */
        return json_object_new_double(atof(v));
    case 114:  /* json */
    case 3802: /* jsonb */ {
        struct json_object *parsed = json_tokener_parse(v);
        return parsed ? parsed : json_object_new_string(v);
    }
    default:
        return json_object_new_string(v);
    }
}

void cli_print_result(const PGresult *res, int as_json, const char *empty)
{
    int rows = PQntuples(res), cols = PQnfields(res);
    if (as_json) {
        struct json_object *array = json_object_new_array();
        for (int r = 0; r < rows; r++) {
            struct json_object *obj = json_object_new_object();
            for (int c = 0; c < cols; c++)
                json_object_object_add(obj, PQfname(res, c), typed(res, r, c));
            json_object_array_add(array, obj);
        }
        printf("%s\n", json_object_to_json_string_ext(array, JSON_C_TO_STRING_PRETTY |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(array);
        return;
    }
    if (rows == 0) {
        if (empty != NULL)
            printf("%s\n", empty);
        return;
    }
    size_t *w = calloc((size_t)cols, sizeof(*w));
    if (w == NULL)
        return;
    for (int c = 0; c < cols; c++) {
        w[c] = width(PQfname(res, c));
        for (int r = 0; r < rows; r++) {
            size_t vw = width(PQgetvalue(res, r, c));
            if (vw > w[c])
                w[c] = vw;
        }
    }
    for (int c = 0; c < cols; c++)
        printf("%s%-*s", c ? "  " : "", (int)w[c], PQfname(res, c));
    printf("\n");
    for (int c = 0; c < cols; c++) {
        printf("%s", c ? "  " : "");
        for (size_t i = 0; i < w[c]; i++)
            putchar('-');
    }
    printf("\n");
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            const char *v = PQgetvalue(res, r, c);
            printf("%s%s", c ? "  " : "", v);
            if (c + 1 < cols)
                for (size_t i = width(v); i < w[c]; i++)
                    putchar(' ');
        }
        printf("\n");
    }
    free(w);
}

int cli_parse_ids(struct cli *cli, int argc, char **argv, int first, long long **ids, size_t *n)
{
    *n = 0;
    *ids = calloc((size_t)(argc > first ? argc - first : 1), sizeof(**ids));
    if (*ids == NULL)
        return CLI_ERROR;
    for (int i = first; i < argc; i++) {
        char *end;
        errno = 0;
        long long id = strtoll(argv[i], &end, 10);
        /* Digits only (strtoll would take spaces and a sign), and never clamped: out of range
         * used to become the largest id silently (issue 17 item 9). */
        if (*argv[i] < '0' || *argv[i] > '9' || *end != '\0' || errno == ERANGE || id <= 0) {
            cli_error(cli,
                      "\"%.64s\" is not an outbox id: ids are whole numbers from 1 to "
                      "9223372036854775807",
                      argv[i]);
            free(*ids);
            *ids = NULL;
            return CLI_USAGE;
        }
        (*ids)[(*n)++] = id;
    }
    return CLI_OK;
}
