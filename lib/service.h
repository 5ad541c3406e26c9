/*
 * service: `omnisync run`, the daemon: one loop wiring listener, dispatcher, client and recorder
 * together, with signals, systemd notification and the shutdown drain (DESIGN §1, §3, §7).
 */
#ifndef OMNISYNC_SERVICE_H
#define OMNISYNC_SERVICE_H

#include "config.h"

/*
 * Runs until SIGTERM or SIGINT, then drains and returns the exit code (0 after a clean drain).
 * `cfg` is loaded, with its API key; the service takes it over (reloads replace its reloadable
 * parts) and frees it. `config_path` is re-read on SIGHUP.
 */
int service_run(struct config *cfg, const char *config_path);

#endif
