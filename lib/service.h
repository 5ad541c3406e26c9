/*
 * service: `omnisync run`, the daemon: one loop wiring listener, dispatcher, client and recorder
 * together, with signals, systemd notification and the shutdown drain (DESIGN §1, §3, §7).
 */
#ifndef OMNISYNC_SERVICE_H
#define OMNISYNC_SERVICE_H

#include "config.h"

/* The exit status of a daemon that refused an old schema (EX_CONFIG; the unit does not restart
 * on it: RestartPreventExitStatus=78). */
#define SERVICE_EXIT_SCHEMA_TOO_OLD 78

/*
 * Runs until SIGTERM or SIGINT, then drains and returns the exit code (0 after a clean drain).
 * `cfg` is loaded, with its API key; the service takes it over (reloads replace its reloadable
 * parts) and frees it. `config_path` is re-read on SIGHUP. Every connect of the work connection
 * checks the schema first: against one older than this build's, the service logs so, stops and
 * returns SERVICE_EXIT_SCHEMA_TOO_OLD (never ready, never claiming).
 */
int service_run(struct config *cfg, const char *config_path);

#endif
