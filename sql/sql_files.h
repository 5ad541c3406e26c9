/* The SQL files of sql/, compiled in by sql/embed.cmake. */
#ifndef OMNISYNC_SQL_FILES_H
#define OMNISYNC_SQL_FILES_H

struct sql_file {
    const char *name; /* file name, e.g. "001_schema.sql" */
    const char *text; /* NUL-terminated contents */
};

/* Sorted by name, terminated by {NULL, NULL}. */
extern const struct sql_file sql_files[];

#endif
