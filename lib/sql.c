/* sql: lookup of embedded SQL files. */
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sql_text(const char *name)
{
    for (const struct sql_file *f = sql_files; f->name != NULL; f++) {
        if (strcmp(f->name, name) == 0)
            return f->text;
    }
    fprintf(stderr, "omnisync: sql/%s is not embedded in this build\n", name);
    abort();
}
