/*
 * fuzz_config: a whole config file through the real loader (config_load reads a path, so the
 * input goes into a memfd and is read back through /proc/self/fd), then the reload check
 * against a valid running config, the way SIGHUP does it.
 *
 * Properties: a load either succeeds with no errors or fails with at least one; every error is
 * one line of valid UTF-8 text (it reaches stderr and the journal) that names the file; a config
 * that loads has a base_url, a brand and at least one source with a table and a primary id;
 * loading it a second time gives the same verdict; reloading it onto a running config never
 * changes a key that needs a restart (the running struct keeps those), and everything is freed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char running_text[] = "[database]\n"
                                   "conninfo = host=/tmp dbname=crm\n"
                                   "[omnidesk]\n"
                                   "base_url = https://acme.omnidesk.com\n"
                                   "brand_id = 7\n"
                                   "[source customers]\n"
                                   "table = public.customers\n"
                                   "primary_id = customer_no\n"
                                   "firstname = first_name\n"
                                   "email = email\n";

static int load_bytes(struct config *cfg, const void *data, size_t size, char *path, size_t len)
{
    int fd = memfd_create("omnisync.conf", MFD_CLOEXEC);
    int rc;

    if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size))
        abort();
    snprintf(path, len, "/proc/self/fd/%d", fd);
    rc = config_load(cfg, path);
    close(fd);
    return rc;
}

static void check_errors(const struct config *cfg, int rc)
{
    if ((rc == 0) != (cfg->nerrors == 0 && cfg->nerrors_dropped == 0))
        abort();
    for (size_t i = 0; i < cfg->nerrors; i++) {
        const char *e = cfg->errors[i];
        if (e == NULL || e[0] == '\0') {
            fprintf(stderr, "fuzz_config: an empty error\n");
            abort();
        }
        for (const char *p = e; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                fprintf(stderr, "fuzz_config: a control character in error \"%s\"\n", e);
                abort();
            }
        if (!fuzz_utf8_valid((const unsigned char *)e, strlen(e))) {
            fprintf(stderr, "fuzz_config: invalid UTF-8 in error \"%s\"\n", e);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg, again, running;
    char path[64], path2[64];
    int rc, rc2;

    if (size > 65536)
        return 0;
    rc = load_bytes(&cfg, data, size, path, sizeof(path));
    check_errors(&cfg, rc);
    rc2 = load_bytes(&again, data, size, path2, sizeof(path2));
    if (rc != rc2 || cfg.nerrors != again.nerrors)
        abort();
    config_free(&again);

    if (rc == 0) {
        if (cfg.base_url == NULL || cfg.nsources == 0)
            abort();
        for (size_t i = 0; i < cfg.nsources; i++)
            if (cfg.sources[i].table == NULL || cfg.sources[i].primary_id == NULL)
                abort();
        if (load_bytes(&running, running_text, sizeof(running_text) - 1, path2, sizeof(path2)) != 0)
            abort();
        {
            char *base_url = strdup(running.base_url);
            long long brand_id = running.brand_id;
            size_t nsources = running.nsources;

            (void)config_apply_reload(&running, &cfg);
            /* base_url, brand_id and the sources need a restart: a reload keeps them. */
            if (strcmp(running.base_url, base_url) != 0 || running.brand_id != brand_id ||
                running.nsources != nsources)
                abort();
            free(base_url);
        }
        config_free(&running);
    }
    config_free(&cfg);
    return 0;
}
