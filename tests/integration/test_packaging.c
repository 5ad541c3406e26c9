/*
 * packaging: the files an operator installs, checked with the tools that will read them.
 *
 * systemd/omnisync.service goes through `systemd-analyze security` (its exposure rating must stay
 * "OK", <= 2.5) and `systemd-analyze verify`; the sysusers and tmpfiles snippets are applied to a
 * scratch root; docs/alerts.yml goes through `promtool check rules` and through `promtool test
 * rules` with scenarios that say when each alert must and must not fire; every PromQL expression
 * of docs/grafana-dashboard.json is parsed by promtool too, and the dashboard itself by json-c.
 * The example config is loaded by the real parser and must state the real defaults.
 *
 * The documents drift from the code unless something ties them together, so the test also reads
 * the truth from the code (the key table in lib/config.c, the families metrics_render() writes)
 * and checks that the example config and docs name every key, and that alerts, dashboard and
 * docs name only metrics that exist and document every one.
 *
 * With OMNISYNC_DEB naming a built .deb (scripts/test does it after scripts/package), the package
 * itself is installed, removed and purged in a scratch root, and checked at each step.
 *
 * A missing tool (systemd-analyze, systemd-sysusers, systemd-tmpfiles, promtool) is a failure
 * that names the Debian package: scripts/test installs them.
 */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "metrics.h"
#include "proc.h"
#include "testutil.h"

#define SRC(rel) OMNISYNC_SOURCE_DIR "/" rel
#define UNIT_PATH SRC("systemd/omnisync.service")
#define EXAMPLE_PATH SRC("systemd/omnisync.conf.example")
#define ALERTS_PATH SRC("docs/alerts.yml")
#define DASHBOARD_PATH SRC("docs/grafana-dashboard.json")
#define TOOL_TIMEOUT_MS 120000
#define MAX_EXPOSURE 2.5

static char dir[512];

static void setup(void)
{
    ck_assert_int_eq(testutil_mkdtemp(dir, sizeof(dir)), 0);
}

static void teardown(void)
{
    testutil_rm_rf(dir);
}

/* ---- helpers ---- */

static char *read_source(const char *path)
{
    char *text = testutil_read_file(path);
    ck_assert_msg(text != NULL, "cannot read %s: %s", path, strerror(errno));
    return text;
}

/* Finds a tool in PATH or the sbin directories (root's PATH is not always set under ctest). */
static void find_tool(const char *name, const char *package, char *out, size_t outlen)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof(dirs), "%s:/usr/bin:/bin:/usr/sbin:/sbin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d != NULL;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(out, outlen, "%s/%s", d, name);
        if (access(out, X_OK) == 0)
            return;
    }
    ck_abort_msg("%s not found: install the Debian package %s (scripts/test installs it)", name,
                 package);
}

/* Runs argv with a deadline; returns the exit code, output in *out and *err (caller frees). */
static int run_tool(char *const argv[], char **out, char **err)
{
    *out = *err = NULL;
    int rc = proc_run(argv, NULL, TOOL_TIMEOUT_MS, out, err);
    ck_assert_msg(rc != -1, "%s did not finish within %d ms", argv[0], TOOL_TIMEOUT_MS);
    if (*out == NULL)
        *out = strdup("");
    if (*err == NULL)
        *err = strdup("");
    ck_assert(*out != NULL && *err != NULL);
    return rc;
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    ck_assert_msg(testutil_write_file(path, content, mode) == 0, "cannot write %s", path);
}

/* The value of the first "Key=" line of the unit, or NULL. Points into `unit`. */
static const char *unit_value(const char *unit, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    for (const char *line = unit; line != NULL && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            const char *v = line + klen + 1;
            *len = strcspn(v, "\n");
            return v;
        }
    }
    return NULL;
}

/* The unit's "Key=" value as a NUL-terminated copy; fails the test when absent. */
static char *unit_setting(const char *unit, const char *key)
{
    size_t len = 0;
    const char *v = unit_value(unit, key, &len);
    ck_assert_msg(v != NULL, "omnisync.service has no %s=", key);
    char *copy = strndup(v, len);
    ck_assert(copy != NULL);
    return copy;
}

/* Does `text` have a line that starts with `prefix`? */
static int has_line_starting(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *line = text; line != NULL && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, prefix, n) == 0)
            return 1;
    }
    return 0;
}

/* ---- the unit ---- */

/* Runs `systemd-analyze security` (argv) and asserts omnisync.service's exposure is <= max. */
static void assert_exposure(char *const argv[], double max)
{
    char *out, *err;
    int rc = run_tool(argv, &out, &err);
    ck_assert_msg(rc == 0, "systemd-analyze security exited %d:\n%.1500s%.1500s", rc, out, err);

    const char *marker = "Overall exposure level for omnisync.service:";
    const char *at = strstr(out, marker);
    ck_assert_msg(at != NULL, "no exposure figure in:\n%.1500s%.1500s", out, err);
    char *end;
    double exposure = strtod(at + strlen(marker), &end);
    ck_assert_msg(end != at + strlen(marker), "unparsable exposure figure: %.60s", at);
    fprintf(stderr, "omnisync.service exposure: %.1f (must be <= %.1f)\n", exposure, max);
    if (exposure > max)
        fprintf(stderr, "%s", out); /* the whole analysis: which settings cost what */
    ck_assert_msg(exposure <= max, "omnisync.service exposure %.1f is above %.1f (analysis above)",
                  exposure, max);
    free(out);
    free(err);
}

START_TEST(test_unit_security_rating)
{
    char tool[4096];
    find_tool("systemd-analyze", "systemd", tool, sizeof(tool));
    char *argv[] = {tool, "security", "--offline=true", "--no-pager", UNIT_PATH, NULL};
    assert_exposure(argv, MAX_EXPOSURE);
}
END_TEST

/*
 * `systemd-analyze verify` checks that ExecStart= exists, and /usr/local/bin/omnisync does not on
 * a build machine. So the unit is verified twice: a copy whose ExecStart= points at the binary
 * just built must pass without a word about it, and the unit as shipped must pass or complain
 * about nothing but that missing binary.
 */
START_TEST(test_unit_verify)
{
    char tool[4096];
    find_tool("systemd-analyze", "systemd", tool, sizeof(tool));
    char *unit = read_source(UNIT_PATH);

    static const char shipped[] = "\nExecStart=/usr/local/bin/omnisync ";
    char *at = strstr(unit, shipped);
    ck_assert_msg(at != NULL, "ExecStart= does not start /usr/local/bin/omnisync");
    ck_assert_msg(strstr(at + 1, shipped) == NULL, "two ExecStart= lines");
    char *copy = NULL;
    ck_assert_int_gt(asprintf(&copy, "%.*s\nExecStart=%s %s", (int)(at - unit), unit, OMNISYNC_BIN,
                              at + strlen(shipped)),
                     0);
    char path[600];
    snprintf(path, sizeof(path), "%s/omnisync.service", dir);
    write_file(path, copy, 0644);

    char *out, *err;
    char *argv[] = {tool, "verify", "--man=no", path, NULL};
    int rc = run_tool(argv, &out, &err);
    ck_assert_msg(rc == 0, "systemd-analyze verify exited %d:\n%.1500s%.1500s", rc, out, err);
    ck_assert_msg(strstr(out, "omnisync") == NULL && strstr(err, "omnisync") == NULL,
                  "systemd-analyze verify complains about the unit:\n%.1500s%.1500s", out, err);
    free(out);
    free(err);

    char *argv2[] = {tool, "verify", "--man=no", UNIT_PATH, NULL};
    rc = run_tool(argv2, &out, &err);
    if (rc != 0 || *err != '\0') {
        for (char *save = NULL, *line = strtok_r(err, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save))
            ck_assert_msg(strstr(line, "/usr/local/bin/omnisync") != NULL,
                          "the shipped unit has a problem besides the uninstalled binary: %s",
                          line);
    }
    free(out);
    free(err);
    free(copy);
    free(unit);
}
END_TEST

/* What the unit promises must be what the code does. */
START_TEST(test_unit_matches_code)
{
    char *unit = read_source(UNIT_PATH);

    char *type = unit_setting(unit, "Type");
    ck_assert_str_eq(type, "notify");
    char *notify = unit_setting(unit, "NotifyAccess");
    ck_assert_str_eq(notify, "main");
    char *restart = unit_setting(unit, "Restart");
    ck_assert_str_eq(restart, "on-failure");
    char *exec = unit_setting(unit, "ExecStart");
    ck_assert_msg(strstr(exec, " --config " CONFIG_DEFAULT_PATH " run") != NULL,
                  "ExecStart= does not run with --config %s: %s", CONFIG_DEFAULT_PATH, exec);
    char *reload = unit_setting(unit, "ExecReload");
    ck_assert_msg(strstr(reload, "-HUP $MAINPID") != NULL, "ExecReload= must send SIGHUP");
    char *watchdog = unit_setting(unit, "WatchdogSec");
    ck_assert_msg(atoi(watchdog) > 0, "WatchdogSec= must be set");

    /* The credential the unit loads is the one config_load_api_key() looks for. */
    char *cred = unit_setting(unit, "LoadCredential");
    char *colon = strchr(cred, ':');
    ck_assert_msg(colon != NULL, "LoadCredential= needs ID:PATH");
    *colon = '\0';
    char credfile[700], conf[600];
    snprintf(credfile, sizeof(credfile), "%s/%s", dir, cred);
    write_file(credfile, "unit-test-key\n", 0400);
    snprintf(conf, sizeof(conf), "%s/minimal.conf", dir);
    write_file(conf,
               "[omnidesk]\nbase_url = https://example.invalid\nbrand_id = 1\n"
               "[source customers]\ntable = customers\nprimary_id = id\n",
               0600);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    unsetenv("OMNISYNC_API_KEY");
    struct config cfg;
    int rc = config_load(&cfg, conf);
    if (rc == 0)
        rc = config_load_api_key(&cfg);
    if (rc != 0)
        config_print_errors(&cfg);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(cfg.api_key, "unit-test-key");

    /* SIGTERM drains for up to shutdown_timeout, then gives aborted requests 2 s more to be
     * recorded: systemd must not SIGKILL before. */
    char *stop = unit_setting(unit, "TimeoutStopSec");
    uint64_t stop_ms = 0;
    ck_assert_msg(config_parse_duration(stop, &stop_ms) == 0, "TimeoutStopSec=%s: use 45s", stop);
    ck_assert_msg(stop_ms >= cfg.shutdown_timeout_ms + 5000,
                  "TimeoutStopSec=%s is not longer than shutdown_timeout (%llu ms) plus 5 s", stop,
                  (unsigned long long)cfg.shutdown_timeout_ms);
    config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");

    /* The user the unit runs as is the one sysusers creates and tmpfiles gives the files to. */
    char *user = unit_setting(unit, "User");
    char *sysusers = read_source(SRC("systemd/omnisync.sysusers"));
    char *tmpfiles = read_source(SRC("systemd/omnisync.tmpfiles"));
    int created = 0;
    for (const char *line = sysusers; line != NULL && *line; line = strchr(line, '\n')) {
        char kind[4], name[64];
        if (*line == '\n')
            line++;
        if (sscanf(line, "%3s %63s", kind, name) == 2 && strcmp(kind, "u") == 0 &&
            strcmp(name, user) == 0)
            created = 1;
    }
    ck_assert_msg(created, "omnisync.sysusers does not create the unit's User=%s", user);
    ck_assert_msg(strstr(tmpfiles, " root omnisync ") != NULL, "tmpfiles does not use the group");

    free(type);
    free(notify);
    free(restart);
    free(exec);
    free(reload);
    free(watchdog);
    free(cred);
    free(stop);
    free(user);
    free(sysusers);
    free(tmpfiles);
    free(unit);
}
END_TEST

/* ---- sysusers and tmpfiles ---- */

static gid_t group_in(const char *root, const char *name)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/etc/group", root);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no %s", path);
    struct group *g;
    gid_t gid = (gid_t)-1;
    while ((g = fgetgrent(f)) != NULL) {
        if (strcmp(g->gr_name, name) == 0)
            gid = g->gr_gid;
    }
    fclose(f);
    ck_assert_msg(gid != (gid_t)-1, "group %s not created", name);
    return gid;
}

static void assert_mode(const char *path, mode_t mode, int check_owner, uid_t uid, gid_t gid)
{
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
    ck_assert_msg((st.st_mode & 07777) == mode, "%s has mode %04o, want %04o", path,
                  (unsigned)(st.st_mode & 07777), (unsigned)mode);
    if (check_owner)
        ck_assert_msg(st.st_uid == uid && st.st_gid == gid, "%s is owned by %u:%u, want %u:%u",
                      path, (unsigned)st.st_uid, (unsigned)st.st_gid, (unsigned)uid, (unsigned)gid);
}

/*
 * The snippets are applied to a scratch root (--root), never to this machine. Owners can only be
 * set by root; unprivileged, tmpfiles still creates the directory with its mode and fails on the
 * chown alone, which is all that is accepted then. scripts/test runs as root.
 */
START_TEST(test_sysusers_tmpfiles)
{
    char sysusers[4096], tmpfiles[4096];
    find_tool("systemd-sysusers", "systemd", sysusers, sizeof(sysusers));
    find_tool("systemd-tmpfiles", "systemd", tmpfiles, sizeof(tmpfiles));
    int root = geteuid() == 0;

    char etc[600], rootopt[600];
    snprintf(etc, sizeof(etc), "%s/etc", dir);
    ck_assert_int_eq(mkdir(etc, 0755), 0);
    snprintf(rootopt, sizeof(rootopt), "--root=%s", dir);

    char *out, *err;
    char *argv[] = {sysusers, rootopt, SRC("systemd/omnisync.sysusers"), NULL};
    int rc = run_tool(argv, &out, &err);
    ck_assert_msg(rc == 0, "systemd-sysusers exited %d:\n%.1500s%.1500s", rc, out, err);
    free(out);
    free(err);
    char passwd_path[700];
    snprintf(passwd_path, sizeof(passwd_path), "%s/passwd", etc);
    char *passwd = read_source(passwd_path);
    ck_assert_msg(strstr(passwd, "omnisync:x:") != NULL && strstr(passwd, "nologin") != NULL,
                  "no system user omnisync without login in:\n%s", passwd);
    free(passwd);
    gid_t gid = group_in(dir, "omnisync");

    char confdir[650], conf[700], key[700];
    snprintf(confdir, sizeof(confdir), "%s/omnisync", etc);
    snprintf(conf, sizeof(conf), "%s/omnisync.conf", confdir);
    snprintf(key, sizeof(key), "%s/omnidesk-api-key", confdir);
    char *argv2[] = {tmpfiles, rootopt, "--create", SRC("systemd/omnisync.tmpfiles"), NULL};
    for (int pass = 0; pass < 2; pass++) {
        rc = run_tool(argv2, &out, &err);
        if (root) {
            ck_assert_msg(rc == 0, "systemd-tmpfiles exited %d:\n%.1500s%.1500s", rc, out, err);
        } else if (rc != 0) {
            for (char *save = NULL, *line = strtok_r(err, "\n", &save); line != NULL;
                 line = strtok_r(NULL, "\n", &save))
                ck_assert_msg(strstr(line, "Operation not permitted") != NULL,
                              "systemd-tmpfiles failed for another reason than chown: %s", line);
        }
        free(out);
        free(err);
        assert_mode(confdir, 0750, root, 0, gid);
        if (pass == 0) {
            /* Files the operator copied with the wrong modes are put right by a second run. */
            write_file(conf, "[database]\n", 0666);
            write_file(key, "key\n", 0644);
        }
    }
    assert_mode(conf, 0640, root, 0, gid);
    assert_mode(key, 0600, root, 0, 0);
}
END_TEST

/* ---- the Debian package, installed into a scratch root ---- */

/*
 * OMNISYNC_DEB names the package to check (scripts/test --package builds it with scripts/package
 * and sets it); without it this test case is not run. The package is installed with dpkg into a
 * scratch root (--root, its own status database) and its maintainer scripts run outside a chroot
 * with DPKG_ROOT set (--force-script-chrootless), the way debhelper's snippets support: sysusers,
 * tmpfiles and deb-systemd-helper all act on the scratch root. The dependencies are this
 * machine's libraries, not packages of the scratch root (--force-depends at install). dpkg runs
 * in its own mount namespace with /run/systemd hidden, so that postinst's "systemctl
 * daemon-reload" and "start" never reach this machine's service manager.
 */
#define DPKG_PATH "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

/* Runs `dpkg --root=root ARGS...` as described above; fails the test unless it exits 0. */
static void dpkg_in(const char *root, const char *a1, const char *a2, const char *a3)
{
    char unshare[4096], rootopt[700];
    find_tool("unshare", "util-linux", unshare, sizeof(unshare));
    snprintf(rootopt, sizeof(rootopt), "--root=%s", root);
    char *argv[] = {unshare,
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-ec",
                    "if [ -d /run/systemd/system ]; then mount -t tmpfs tmpfs /run/systemd; fi\n"
                    "exec dpkg \"$@\"",
                    "sh",
                    rootopt,
                    "--force-script-chrootless",
                    (char *)a1,
                    (char *)a2,
                    (char *)a3,
                    NULL};
    char *env[] = {DPKG_PATH, NULL};
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, env, TOOL_TIMEOUT_MS, &out, &err);
    ck_assert_msg(rc == 0, "dpkg %s %s %s exited %d:\n%.3000s\n%.3000s", a1, a2 ? a2 : "",
                  a3 ? a3 : "", rc, out ? out : "", err ? err : "");
    free(out);
    free(err);
}

/* Every path under root that is not a directory, as "path\n" lines relative to root. */
static char *files_under(const char *root)
{
    char find[4096];
    find_tool("find", "findutils", find, sizeof(find));
    char *argv[] = {find, ".", "-mindepth", "1", "-not", "-type", "d", NULL};
    struct proc_opts opts = {.cwd = root};
    char *out = NULL, *err = NULL;
    int rc = proc_run_opts(argv, NULL, &opts, TOOL_TIMEOUT_MS, &out, &err);
    ck_assert_msg(rc == 0 && out != NULL, "find in %s failed: %s", root, err ? err : "");
    free(err);
    return out;
}

/* Is `line` ("./etc/passwd") in `list` (lines as files_under() writes them)? */
static int listed_line(const char *list, const char *line, size_t len)
{
    for (const char *p = list; (p = strstr(p, line)) != NULL; p++) {
        if ((p == list || p[-1] == '\n') && strncmp(p, line, len) == 0 && p[len] == '\n')
            return 1;
    }
    return 0;
}

/* What Debian policy lets a purged package leave: the user and group it created (never reused
 * or removed) with the files that hold them, and dpkg's own database. */
static int policy_keeps(const char *path, size_t len)
{
    static const char *const kept[] = {"./etc/passwd", "./etc/group", "./etc/shadow",
                                       "./etc/gshadow", "./etc/.pwd.lock"};
    if (strncmp(path, "./var/lib/dpkg/", 15) == 0)
        return 1;
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        size_t kl = strlen(kept[i]);
        /* passwd- and the like: the backups the tools keep */
        if (strncmp(path, kept[i], kl) == 0 && (len == kl || (len == kl + 1 && path[kl] == '-')))
            return 1;
    }
    return 0;
}

static int exists_in(const char *root, const char *rel)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s%s", root, rel);
    struct stat st;
    return lstat(path, &st) == 0;
}

START_TEST(test_deb_install_remove_purge)
{
    const char *deb = getenv("OMNISYNC_DEB");
    ck_assert_msg(deb != NULL && access(deb, R_OK) == 0, "OMNISYNC_DEB=%s is not readable",
                  deb ? deb : "");
    ck_assert_msg(geteuid() == 0, "installing a package into a scratch root needs root");
    char tool[4096], root[600], sh[4096];
    find_tool("systemd-analyze", "systemd", tool, sizeof(tool));
    find_tool("sh", "dash", sh, sizeof(sh));
    snprintf(root, sizeof(root), "%s/root", dir);

    /* The scratch root: dpkg's database, and what `systemd-analyze verify --root` loads besides
     * the unit (the targets it is ordered against, the /bin/kill of ExecReload=). */
    char *setup_argv[] = {sh,
                          "-ec",
                          "mkdir -p \"$1/var/lib/dpkg/info\" \"$1/var/lib/dpkg/updates\" "
                          "\"$1/bin\" \"$1/lib/systemd/system\"\n"
                          ": > \"$1/var/lib/dpkg/status\"\n"
                          "cp /bin/kill \"$1/bin/kill\"\n"
                          "cp -a /lib/systemd/system/*.target \"$1/lib/systemd/system/\"",
                          "sh",
                          root,
                          NULL};
    char *out, *err;
    int rc = run_tool(setup_argv, &out, &err);
    ck_assert_msg(rc == 0, "cannot prepare %s: %s", root, err);
    free(out);
    free(err);
    char *before = files_under(root);

    /* One version everywhere: CMake's project(VERSION), built into the test as into omnisync. */
    char dpkg_deb[4096];
    find_tool("dpkg-deb", "dpkg", dpkg_deb, sizeof(dpkg_deb));
    char *field_argv[] = {dpkg_deb, "--field", (char *)deb, "Version", NULL};
    rc = run_tool(field_argv, &out, &err);
    ck_assert_msg(rc == 0, "dpkg-deb --field: %s", err);
    ck_assert_msg(strcmp(out, OMNISYNC_VERSION "\n") == 0,
                  "the package is version %s, CMake says %s", out, OMNISYNC_VERSION);
    free(out);
    free(err);

    uint64_t started = testutil_now_ms();
    dpkg_in(root, "--force-depends", "--install", deb);

    /* postinst: systemd-sysusers created the user and group in the scratch root. */
    char passwd_path[700];
    snprintf(passwd_path, sizeof(passwd_path), "%s/etc/passwd", root);
    char *passwd = read_source(passwd_path);
    ck_assert_msg(strstr(passwd, "\nomnisync:x:") != NULL ||
                      strncmp(passwd, "omnisync:x:", 11) == 0,
                  "no user omnisync in the scratch root's /etc/passwd:\n%s", passwd);
    ck_assert_msg(strstr(passwd, "nologin") != NULL, "the user omnisync has a login shell");
    free(passwd);
    gid_t gid = group_in(root, "omnisync");

    /* ... then systemd-tmpfiles gave the conffile and its directory to the group. */
    char confdir[700], conf[800];
    snprintf(confdir, sizeof(confdir), "%s/etc/omnisync", root);
    snprintf(conf, sizeof(conf), "%s/omnisync.conf", confdir);
    assert_mode(confdir, 0750, 1, 0, gid);
    assert_mode(conf, 0640, 1, 0, gid);

    /* The binary in /usr/bin runs and says the version; the man page says it too. */
    char bin[700];
    snprintf(bin, sizeof(bin), "%s/usr/bin/omnisync", root);
    char *version_argv[] = {bin, "version", NULL};
    rc = run_tool(version_argv, &out, &err);
    ck_assert_msg(rc == 0, "%s version exited %d: %s", bin, rc, err);
    ck_assert_msg(strncmp(out, "omnisync " OMNISYNC_VERSION "\n", strlen(OMNISYNC_VERSION) + 10) ==
                      0,
                  "omnisync version printed: %.200s", out);
    free(out);
    free(err);
    char *man_argv[] = {sh,   "-ec", "gzip -dc \"$1/usr/share/man/man1/omnisync.1.gz\"",
                        "sh", root,  NULL};
    rc = run_tool(man_argv, &out, &err);
    ck_assert_msg(rc == 0, "no man page omnisync(1): %s", err);
    ck_assert_msg(strstr(out, "\n.TH OMNISYNC \"1\" ") != NULL &&
                      strstr(out, "\"omnisync " OMNISYNC_VERSION "\"") != NULL,
                  "omnisync(1) does not name version %s", OMNISYNC_VERSION);
    ck_assert_msg(strstr(out, "\n.SS run\n") != NULL && strstr(out, "\n.SS migrate\n") != NULL,
                  "omnisync(1) has no section per command");
    free(out);
    free(err);
    ck_assert_msg(exists_in(root, "/usr/share/doc/omnisync/alerts.yml.gz") ||
                      exists_in(root, "/usr/share/doc/omnisync/alerts.yml"),
                  "no alert rules in /usr/share/doc/omnisync");
    ck_assert_msg(exists_in(root, "/usr/share/doc/omnisync/grafana-dashboard.json.gz") ||
                      exists_in(root, "/usr/share/doc/omnisync/grafana-dashboard.json"),
                  "no dashboard in /usr/share/doc/omnisync");

    /* The installed unit: enabled, accepted by verify (ExecStart= is the scratch root's
     * /usr/bin/omnisync), and as tightly sandboxed as the source's. */
    ck_assert_msg(exists_in(root, "/etc/systemd/system/multi-user.target.wants/omnisync.service"),
                  "the unit is not enabled");
    char rootopt[700];
    snprintf(rootopt, sizeof(rootopt), "--root=%s", root);
    char *verify_argv[] = {tool, "verify", "--man=no", rootopt, "omnisync.service", NULL};
    rc = run_tool(verify_argv, &out, &err);
    ck_assert_msg(rc == 0 && *err == '\0', "systemd-analyze verify of the installed unit:\n%s%s",
                  out, err);
    free(out);
    free(err);
    char *security_argv[] = {
        tool, "security", "--offline=true", "--no-pager", rootopt, "omnisync.service", NULL};
    assert_exposure(security_argv, 1.5);

    /* The operator's key, which purge removes with the configuration. */
    char key[800];
    snprintf(key, sizeof(key), "%s/omnidesk-api-key", confdir);
    write_file(key, "key\n", 0600);

    /* remove: the program goes, the configuration stays (policy: conffiles and the key). */
    dpkg_in(root, "--remove", "omnisync", NULL);
    ck_assert_msg(!exists_in(root, "/usr/bin/omnisync"), "remove left the binary");
    ck_assert_msg(!exists_in(root, "/lib/systemd/system/omnisync.service"), "remove left the unit");
    ck_assert_msg(exists_in(root, "/etc/omnisync/omnisync.conf"), "remove took the configuration");
    ck_assert_msg(exists_in(root, "/etc/omnisync/omnidesk-api-key"), "remove took the key");

    /* purge: nothing left but what policy keeps. */
    dpkg_in(root, "--purge", "omnisync", NULL);
    fprintf(stderr, "install, remove and purge in a scratch root: %llu ms\n",
            (unsigned long long)(testutil_now_ms() - started));
    char *after = files_under(root);
    int stray = 0;
    for (const char *line = after; *line;) {
        size_t len = strcspn(line, "\n");
        if (!listed_line(before, line, len) && !policy_keeps(line, len)) {
            fprintf(stderr, "left after purge: %.*s\n", (int)len, line + 1);
            stray++;
        }
        line += len + (line[len] == '\n');
    }
    ck_assert_msg(stray == 0, "purge left %d files behind (listed above)", stray);
    ck_assert_msg(!exists_in(root, "/etc/omnisync"), "purge left /etc/omnisync");
    group_in(root, "omnisync"); /* the user and group stay (policy) */
    free(before);
    free(after);
}
END_TEST

/* ---- the example config ---- */

START_TEST(test_example_config_loads_with_defaults)
{
    struct config example, minimal;
    int rc = config_load(&example, EXAMPLE_PATH);
    if (rc != 0)
        config_print_errors(&example);
    ck_assert_msg(rc == 0, "systemd/omnisync.conf.example does not load");

    char conf[600];
    snprintf(conf, sizeof(conf), "%s/minimal.conf", dir);
    write_file(conf,
               "[omnidesk]\nbase_url = https://example.invalid\nbrand_id = 1\n"
               "[source customers]\ntable = customers\nprimary_id = id\n",
               0600);
    rc = config_load(&minimal, conf);
    if (rc != 0)
        config_print_errors(&minimal);
    ck_assert_int_eq(rc, 0);

    /* "Every key with its default": what the example sets equals what an empty file gives. */
#define SAME(field)                                                                                \
    ck_assert_msg(example.field == minimal.field, "example: %s is not the default", #field)
    SAME(timeout_ms);
    SAME(max_in_flight);
    SAME(rate_per_sec);
    SAME(purge_endpoint);
    SAME(max_attempts);
    SAME(backoff_initial_ms);
    SAME(backoff_max_ms);
    SAME(batch_size);
    SAME(on_delete);
    SAME(max_purges_per_hour);
    SAME(retention_ms);
    SAME(payload_retention_ms);
    SAME(poll_interval_ms);
    SAME(shutdown_timeout_ms);
    SAME(log_level);
    SAME(log_format);
    SAME(health_port);
#undef SAME
    ck_assert_str_eq(example.listen, minimal.listen);
    ck_assert_str_eq(example.health_host, minimal.health_host);
    ck_assert_str_eq(example.api_key_file, minimal.api_key_file);

    ck_assert_uint_eq(example.nsources, 1);
    const struct config_source *src = &example.sources[0];
    ck_assert_int_eq(src->normalize_names, minimal.sources[0].normalize_names);
    ck_assert_ptr_null(src->phone_default_prefix);
    ck_assert_ptr_null(src->brand_id_column);
    ck_assert_ptr_null(src->erase_flag);

    /* No secret in the example, and the service's credential is not shadowed by a key file. */
    ck_assert_msg(strstr(example.conninfo, "password") == NULL, "a password in the conninfo");
    ck_assert_str_eq(example.api_key_file, "");
    ck_assert_msg(strncmp(example.base_url, "https://", 8) == 0, "the example must use https");

    config_free(&example);
    config_free(&minimal);
}
END_TEST

/*
 * The key table of lib/config.c is the truth. Its entries look like
 *     {"delivery", "max_attempts", KEY_INT, ...
 * and the scan fails loudly if that shape ever changes, rather than checking nothing.
 */
START_TEST(test_every_key_documented)
{
    char *code = read_source(SRC("lib/config.c"));
    char *example = read_source(EXAMPLE_PATH);
    char *doc = read_source(SRC("docs/configuration.md"));
    size_t found = 0;
    for (const char *p = strstr(code, "{\""); p != NULL; p = strstr(p + 1, "{\"")) {
        char section[64], name[64], type[16];
        if (sscanf(p, "{\"%63[a-z_]\", \"%63[a-z_]\", %15[A-Z_]", section, name, type) != 3 ||
            strncmp(type, "KEY_", 4) != 0)
            continue;
        found++;
        char line[100], quoted[100];
        snprintf(line, sizeof(line), "%s =", name);
        snprintf(quoted, sizeof(quoted), "`%s`", name);
        ck_assert_msg(has_line_starting(example, line),
                      "systemd/omnisync.conf.example lacks [%s] %s", section, name);
        ck_assert_msg(strstr(doc, quoted) != NULL, "docs/configuration.md lacks [%s] %s", section,
                      name);
    }
    ck_assert_msg(found >= 25,
                  "only %zu keys found in lib/config.c: has the key table changed "
                  "shape? update test_packaging.c",
                  found);
    ck_assert_msg(has_line_starting(example, "custom."), "the example shows no custom.<field>");
    ck_assert_msg(strstr(doc, "`custom.<field>`") != NULL, "custom.<field> is not documented");
    free(code);
    free(example);
    free(doc);
}
END_TEST

/* ---- alert rules ---- */

START_TEST(test_alert_rules_check)
{
    char tool[4096];
    find_tool("promtool", "prometheus", tool, sizeof(tool));
    char *argv[] = {tool, "check", "rules", ALERTS_PATH, NULL};
    char *out, *err;
    int rc = run_tool(argv, &out, &err);
    ck_assert_msg(rc == 0, "promtool check rules exited %d:\n%.1500s%.1500s", rc, out, err);
    ck_assert_msg(strstr(out, "SUCCESS") != NULL, "promtool: %.1500s%.1500s", out, err);
    free(out);
    free(err);
}
END_TEST

/*
 * When each alert fires and when it must not. ALERTS{} is queried rather than the alerts' full
 * label and annotation sets, so rewording a description does not break the test; count() makes
 * "fires once per job, not once per process" part of the expectation.
 */
static const char alert_tests[] =
    "rule_files:\n"
    "  - " ALERTS_PATH "\n"
    "evaluation_interval: 1m\n"
    "tests:\n"
    /* Backlog: two processes report the same database figure; one alert, after 15 + 5 min. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_oldest_pending_age_seconds{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0+60x40'\n"
    "      - series: 'omnisync_oldest_pending_age_seconds{job=\"omnisync\",instance=\"b\"}'\n"
    "        values: '0+60x40'\n"
    "      - series: 'omnisync_paused{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0x40'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncOutboxBacklogOld\",alertstate=\"firing\"})\n"
    "        eval_time: 19m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncOutboxBacklogOld\",alertstate=\"firing\"})\n"
    "        eval_time: 25m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    /* A pause silences the backlog alert; a pause of 4 hours raises its own. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_oldest_pending_age_seconds{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0+60x300'\n"
    "      - series: 'omnisync_paused{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '1x300'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncOutboxBacklogOld\"})\n"
    "        eval_time: 30m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncPausedLong\",alertstate=\"firing\"})\n"
    "        eval_time: 3h\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncPausedLong\",alertstate=\"firing\"})\n"
    "        eval_time: 245m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    /* Held purges: at once, once. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_purges_held{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0 0 3 3 3'\n"
    "      - series: 'omnisync_purges_held{job=\"omnisync\",instance=\"b\"}'\n"
    "        values: '0 0 3 3 3'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncPurgesHeld\",alertstate=\"firing\"})\n"
    "        eval_time: 1m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncPurgesHeld\",alertstate=\"firing\"})\n"
    "        eval_time: 3m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    /* A refused key, after a minute; failing rows, at once; only failures count. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_api_key_refused{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0 0 1 1 1 1'\n"
    "      - series: "
    "'omnisync_deliveries_total{job=\"omnisync\",instance=\"a\",op=\"create\",result=\"failed\"}'\n"
    "        values: '0 0 0 1 1 1 1'\n"
    "      - series: "
    "'omnisync_deliveries_total{job=\"omnisync\",instance=\"a\",op=\"create\",result=\"done\"}'\n"
    "        values: '0+5x6'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncApiKeyRefused\",alertstate=\"firing\"})\n"
    "        eval_time: 2m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncApiKeyRefused\",alertstate=\"firing\"})\n"
    "        eval_time: 4m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncRowsFailing\",alertstate=\"firing\"})\n"
    "        eval_time: 2m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncRowsFailing\",alertstate=\"firing\"})\n"
    "        eval_time: 4m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    /* Rows pending and nothing ever delivered: after 30 + 5 min. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_last_success_timestamp_seconds{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0x60'\n"
    "      - series: 'omnisync_outbox_rows{job=\"omnisync\",instance=\"a\",status=\"pending\"}'\n"
    "        values: '5x60'\n"
    "      - series: 'omnisync_paused{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0x60'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncNoSuccess\",alertstate=\"firing\"})\n"
    "        eval_time: 20m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncNoSuccess\",alertstate=\"firing\"})\n"
    "        eval_time: 40m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    /* Pending rows that keep being delivered raise nothing. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_last_success_timestamp_seconds{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0+60x60'\n"
    "      - series: 'omnisync_outbox_rows{job=\"omnisync\",instance=\"a\",status=\"pending\"}'\n"
    "        values: '5x60'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncNoSuccess\"})\n"
    "        eval_time: 50m\n"
    "        exp_samples: []\n"
    /* Circuit open for 10 min; a lost database after 2 min, without a "not listening" too. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'omnisync_circuit_open{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '1x20'\n"
    "      - series: 'omnisync_db_connected{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0x20'\n"
    "      - series: 'omnisync_listening{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0x20'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncCircuitOpen\",alertstate=\"firing\"})\n"
    "        eval_time: 5m\n"
    "        exp_samples: []\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncCircuitOpen\",alertstate=\"firing\"})\n"
    "        eval_time: 11m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    "      - expr: "
    "count(ALERTS{alertname=\"OmnisyncDatabaseDisconnected\",alertstate=\"firing\"})\n"
    "        eval_time: 3m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncNotListening\"})\n"
    "        eval_time: 10m\n"
    "        exp_samples: []\n"
    /* A target down; no target at all. */
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'up{job=\"omnisync\",instance=\"a\"}'\n"
    "        values: '0x10'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncDown\",alertstate=\"firing\"})\n"
    "        eval_time: 6m\n"
    "        exp_samples:\n"
    "          - value: 1\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncAbsent\"})\n"
    "        eval_time: 10m\n"
    "        exp_samples: []\n"
    "  - interval: 1m\n"
    "    input_series:\n"
    "      - series: 'up{job=\"node\",instance=\"a\"}'\n"
    "        values: '1x15'\n"
    "    promql_expr_test:\n"
    "      - expr: count(ALERTS{alertname=\"OmnisyncAbsent\",alertstate=\"firing\"})\n"
    "        eval_time: 11m\n"
    "        exp_samples:\n"
    "          - value: 1\n";

START_TEST(test_alert_rules_behave)
{
    char tool[4096];
    find_tool("promtool", "prometheus", tool, sizeof(tool));
    char path[600];
    snprintf(path, sizeof(path), "%s/alerts_test.yml", dir);
    write_file(path, alert_tests, 0644);
    char *argv[] = {tool, "test", "rules", path, NULL};
    char *out, *err;
    int rc = run_tool(argv, &out, &err);
    ck_assert_msg(rc == 0, "promtool test rules exited %d:\n%.1500s%.1500s", rc, out, err);
    free(out);
    free(err);
}
END_TEST

/* ---- the dashboard ---- */

/* Collects every "expr" string of the dashboard into a NULL-terminated array. */
static void collect_exprs(struct json_object *obj, const char **exprs, size_t *n, size_t max)
{
    if (json_object_is_type(obj, json_type_object)) {
        json_object_object_foreach(obj, key, value)
        {
            if (strcmp(key, "expr") == 0 && json_object_is_type(value, json_type_string)) {
                ck_assert_msg(*n < max, "more than %zu expressions", max);
                exprs[(*n)++] = json_object_get_string(value);
            } else {
                collect_exprs(value, exprs, n, max);
            }
        }
    } else if (json_object_is_type(obj, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(obj); i++)
            collect_exprs(json_object_array_get_idx(obj, i), exprs, n, max);
    }
}

/* Replaces Grafana's variables by what Prometheus would see, into a malloc'd string. */
static char *expand_variables(const char *expr)
{
    static const struct {
        const char *var, *value;
    } vars[] = {{"$__rate_interval", "5m"}, {"$instance", ".*"}, {"$job", ".*"}};
    size_t cap = strlen(expr) * 2 + 16, len = 0;
    char *out = malloc(cap);
    ck_assert(out != NULL);
    for (const char *p = expr; *p;) {
        size_t i;
        for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
            size_t vl = strlen(vars[i].var);
            if (strncmp(p, vars[i].var, vl) == 0) {
                len += (size_t)snprintf(out + len, cap - len, "%s", vars[i].value);
                p += vl;
                break;
            }
        }
        if (i == sizeof(vars) / sizeof(vars[0]))
            out[len++] = *p++;
        out[len] = '\0';
    }
    ck_assert_msg(strchr(out, '$') == NULL, "unknown variable in %s", expr);
    return out;
}

START_TEST(test_dashboard)
{
    char *text = read_source(DASHBOARD_PATH);
    struct json_tokener *tok = json_tokener_new();
    ck_assert(tok != NULL);
    struct json_object *dash = json_tokener_parse_ex(tok, text, (int)strlen(text));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    ck_assert_msg(dash != NULL && jerr == json_tokener_success, "%s: %s at offset %zu",
                  DASHBOARD_PATH, json_tokener_error_desc(jerr), json_tokener_get_parse_end(tok));
    for (const char *rest = text + json_tokener_get_parse_end(tok); *rest; rest++)
        ck_assert_msg(isspace((unsigned char)*rest), "text after the JSON document");
    json_tokener_free(tok);

    struct json_object *v;
    ck_assert(json_object_object_get_ex(dash, "schemaVersion", &v));
    int schema = json_object_get_int(v);
    ck_assert_msg(schema >= 36 && schema <= 41, "schemaVersion %d", schema);
    ck_assert(json_object_object_get_ex(dash, "title", &v));
    ck_assert(json_object_object_get_ex(dash, "uid", &v));

    struct json_object *panels;
    ck_assert(json_object_object_get_ex(dash, "panels", &panels));
    size_t npanels = json_object_array_length(panels), graphs = 0;
    for (size_t i = 0; i < npanels; i++) {
        struct json_object *panel = json_object_array_get_idx(panels, i), *type, *title, *grid;
        ck_assert(json_object_object_get_ex(panel, "type", &type));
        ck_assert(json_object_object_get_ex(panel, "title", &title));
        ck_assert_msg(json_object_object_get_ex(panel, "gridPos", &grid), "panel %s has no gridPos",
                      json_object_get_string(title));
        if (strcmp(json_object_get_string(type), "row") == 0)
            continue;
        graphs++;
        struct json_object *targets, *ds, *uid;
        ck_assert_msg(json_object_object_get_ex(panel, "targets", &targets) &&
                          json_object_array_length(targets) > 0,
                      "panel %s has no query", json_object_get_string(title));
        ck_assert_msg(json_object_object_get_ex(panel, "datasource", &ds) &&
                          json_object_object_get_ex(ds, "uid", &uid) &&
                          strcmp(json_object_get_string(uid), "${datasource}") == 0,
                      "panel %s does not use the data source variable",
                      json_object_get_string(title));
    }
    ck_assert_msg(graphs >= 10, "only %zu panels", graphs);

    /* Every query must be valid PromQL: promtool parses them as recording rules. */
    char tool[4096];
    find_tool("promtool", "prometheus", tool, sizeof(tool));
    const char *exprs[128];
    size_t n = 0;
    collect_exprs(dash, exprs, &n, sizeof(exprs) / sizeof(exprs[0]));
    ck_assert_uint_ge(n, graphs);
    size_t cap = 64 * 1024, len = 0;
    char *rules = malloc(cap);
    ck_assert(rules != NULL);
    len += (size_t)snprintf(rules + len, cap - len, "groups:\n  - name: dashboard\n    rules:\n");
    for (size_t i = 0; i < n; i++) {
        char *expanded = expand_variables(exprs[i]);
        struct json_object *quoted = json_object_new_string(expanded);
        len +=
            (size_t)snprintf(rules + len, cap - len,
                             "      - record: omnisync_dashboard:query%zu\n        expr: %s\n", i,
                             json_object_to_json_string_ext(
                                 quoted, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        ck_assert_uint_lt(len, cap);
        json_object_put(quoted);
        free(expanded);
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/dashboard_rules.yml", dir);
    write_file(path, rules, 0644);
    char *argv[] = {tool, "check", "rules", path, NULL};
    char *out, *err;
    int rc = run_tool(argv, &out, &err);
    ck_assert_msg(rc == 0, "a dashboard query is not valid PromQL:\n%.1500s%.1500s", out, err);
    free(out);
    free(err);
    free(rules);
    json_object_put(dash);
    free(text);
}
END_TEST

/* ---- metric names ---- */

/* The families metrics_render() writes, from its "# TYPE name type" lines. */
static size_t rendered_families(char names[][80], char types[][16], size_t max)
{
    struct metrics m;
    metrics_init(&m);
    m.outbox_rows_known = 1; /* otherwise the database figures are left out */
    char *text = NULL;
    size_t len = 0, n = 0;
    ck_assert_int_eq(metrics_render(&m, "test", &text, &len), 0);
    for (const char *p = strstr(text, "# TYPE "); p != NULL; p = strstr(p + 1, "# TYPE ")) {
        ck_assert(n < max);
        ck_assert_int_eq(sscanf(p, "# TYPE %79s %15s", names[n], types[n]), 2);
        n++;
    }
    free(text);
    ck_assert_msg(n >= 10, "metrics_render() wrote only %zu families", n);
    return n;
}

/* Is `name` a series the daemon exposes (a family, or a histogram's _bucket/_sum/_count)? */
static int known_series(const char *name, char names[][80], char types[][16], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t fl = strlen(names[i]);
        if (strcmp(name, names[i]) == 0)
            return 1;
        if (strcmp(types[i], "histogram") == 0 && strncmp(name, names[i], fl) == 0 &&
            (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
             !strcmp(name + fl, "_count")))
            return 1;
    }
    return 0;
}

/* Every omnisync_* token in `path` must be a series the daemon exposes. */
static void assert_known_metrics(const char *path, char names[][80], char types[][16], size_t n)
{
    char *text = read_source(path);
    for (const char *p = strstr(text, "omnisync_"); p != NULL; p = strstr(p + 1, "omnisync_")) {
        if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
            continue;
        char name[100];
        size_t l = 0;
        while (l < sizeof(name) - 1 &&
               (islower((unsigned char)p[l]) || p[l] == '_' || isdigit((unsigned char)p[l])))
            name[l] = p[l], l++;
        name[l] = '\0';
        ck_assert_msg(known_series(name, names, types, n),
                      "%s names %s, which the daemon does not expose", path, name);
    }
    free(text);
}

START_TEST(test_metric_names)
{
    char names[64][80], types[64][16];
    size_t n = rendered_families(names, types, 64);
    assert_known_metrics(ALERTS_PATH, names, types, n);
    assert_known_metrics(DASHBOARD_PATH, names, types, n);
    assert_known_metrics(SRC("docs/operations.md"), names, types, n);

    /* And every family is documented and on the dashboard. */
    char *doc = read_source(SRC("docs/operations.md"));
    char *dash = read_source(DASHBOARD_PATH);
    for (size_t i = 0; i < n; i++) {
        char quoted[5200];
        snprintf(quoted, sizeof(quoted), "`%s", names[i]);
        ck_assert_msg(strstr(doc, quoted) != NULL, "docs/operations.md does not describe %s",
                      names[i]);
        ck_assert_msg(strstr(dash, names[i]) != NULL, "the dashboard does not show %s", names[i]);
    }
    free(doc);
    free(dash);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("packaging");

    TCase *unit = tcase_create("unit");
    tcase_add_checked_fixture(unit, setup, teardown);
    tcase_set_timeout(unit, 180);
    tcase_add_test(unit, test_unit_security_rating);
    tcase_add_test(unit, test_unit_verify);
    tcase_add_test(unit, test_unit_matches_code);
    tcase_add_test(unit, test_sysusers_tmpfiles);
    suite_add_tcase(s, unit);

    if (getenv("OMNISYNC_DEB") != NULL) {
        TCase *deb = tcase_create("deb");
        tcase_add_checked_fixture(deb, setup, teardown);
        tcase_set_timeout(deb, 300);
        tcase_add_test(deb, test_deb_install_remove_purge);
        suite_add_tcase(s, deb);
    }

    TCase *conf = tcase_create("config");
    tcase_add_checked_fixture(conf, setup, teardown);
    tcase_add_test(conf, test_example_config_loads_with_defaults);
    tcase_add_test(conf, test_every_key_documented);
    suite_add_tcase(s, conf);

    TCase *mon = tcase_create("monitoring");
    tcase_add_checked_fixture(mon, setup, teardown);
    tcase_set_timeout(mon, 180);
    tcase_add_test(mon, test_alert_rules_check);
    tcase_add_test(mon, test_alert_rules_behave);
    tcase_add_test(mon, test_dashboard);
    tcase_add_test(mon, test_metric_names);
    suite_add_tcase(s, mon);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
