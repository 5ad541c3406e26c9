/*
 * sql: the statements of the sql/ files, compiled into the binary.
 *
 * Numbered files (001_schema.sql, ...) are migrations; trigger_template.sql is the capture
 * trigger; the others hold the long queries of the module named in their header comment.
 */
#ifndef OMNISYNC_SQL_H
#define OMNISYNC_SQL_H

#include "sql_files.h"

/* The text of sql/<name>; aborts if the build did not embed it (a broken build, not input). */
const char *sql_text(const char *name);

#endif
