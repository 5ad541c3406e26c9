/* promtool: Prometheus' own parser and linter, for the tests of what /metrics serves. */
#ifndef OMNISYNC_TEST_PROMTOOL_H
#define OMNISYNC_TEST_PROMTOOL_H

#include <stddef.h>

/*
 * Runs `promtool check metrics` with `text` on stdin and returns its exit status (0: parsed and
 * lint-clean), leaving what it printed in `report`. A missing promtool fails the calling test
 * with the package to install (Debian's prometheus; scripts/test installs it).
 */
int promtool_check_metrics(const char *text, size_t len, char *report, size_t reportlen);

#endif
