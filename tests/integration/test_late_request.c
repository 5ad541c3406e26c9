/*
 * A request given up during a network block must not reach the API after it (issue 18, soak
 * Finding 1; bench/README.md). The real `omnisync run`, a real PostgreSQL and the fake Omnidesk.
 *
 * The mechanism: the daemon sends a request on a kept-alive connection while packets to the API
 * are dropped, gives up after timeout_ms and closes the connection, then retries with the
 * customer's newer state on a new connection once the path is back. With a plain close() the
 * kernel keeps the unacknowledged request in the orphaned socket and retransmits it (0.2, 0.6,
 * 1.4, 3.0, 6.2 ... s after sending); the API receives and applies it after the newer state:
 * an older update overwrites the newer one and a create arrives twice.
 *
 * The block is an iptables DROP of the packets of the daemon's two established connections
 * (their source ports), so it needs root: without root or a working iptables the test exits 77
 * (ctest: skipped). Only those connections are blocked, not the port: the retries go out on new
 * connections and are applied first, and the order the finding is about (old copy after new
 * state) does not depend on timing. Once the retries are in, the block is lifted; the test then
 * waits until the kernel holds no socket of the blocked connections any more (with the bug: the
 * orphan delivers its copy, the fake answers, the orphan is reset; with the fix: gone at the
 * close) and checks the fake: the newest data, each create once, every row done.
 *
 * The rules carry the comment "omnisync-test-late-request-<pid>". A guard process (own session,
 * reading a pipe only this test process holds) deletes them when the process ends however it
 * ends; at start, rules left by a test process that no longer runs are deleted too.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scenario.h"
#include "testutil.h"

#define RULE_TAG "omnisync-test-late-request-"
#define MAX_BLOCKED 8

static struct scenario sc;
static struct proc omnisync_daemon;
static char rule_tag[64];
static unsigned blocked[MAX_BLOCKED]; /* source ports of the blocked connections */
static int nblocked;

/* ---- iptables ---- */

static const char *iptables_bin(void)
{
    return access("/usr/sbin/iptables", X_OK) == 0 ? "/usr/sbin/iptables" : "iptables";
}

/* Runs iptables with `args` (NULL-terminated); 0 when it exited 0. *out gets stdout if asked. */
static int iptables(const char *const *args, char **out)
{
    char *argv[32];
    char *err = NULL;
    int n = 0, rc;

    argv[n++] = (char *)iptables_bin();
    argv[n++] = "-w";
    for (; *args != NULL && n < 31; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    rc = proc_run(argv, NULL, 20000, out, &err);
    if (rc != 0 && err != NULL && out == NULL)
        fprintf(stderr, "iptables exited %d: %s", rc, err);
    free(err);
    return rc == 0 ? 0 : -1;
}

/* Deletes the OUTPUT rules whose comment is RULE_TAG<pid>: those of `only_pid` when it is > 0,
 * else those of processes that no longer run. */
static void delete_rules(pid_t only_pid)
{
    char *listing = NULL;

    if (iptables((const char *[]){"-S", "OUTPUT", NULL}, &listing) != 0 || listing == NULL) {
        free(listing);
        return;
    }
    for (char *line = strtok(listing, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *tag = strstr(line, RULE_TAG), *words[32], *save = NULL;
        int n = 0;

        if (tag == NULL || strncmp(line, "-A OUTPUT ", 10) != 0)
            continue;
        pid_t pid = (pid_t)atol(tag + strlen(RULE_TAG));
        if (only_pid > 0 ? pid != only_pid : (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH))
            continue;
        /* The tag needs no quotes, so `iptables -S` printed the rule as plain words. */
        char *copy = strdup(line);
        if (copy == NULL)
            break;
        for (char *w = strtok_r(copy, " ", &save); w != NULL && n < 31;
             w = strtok_r(NULL, " ", &save))
            words[n++] = w;
        words[n] = NULL;
        words[0] = "-D";
        if (iptables((const char *const *)words, NULL) == 0 && only_pid == 0)
            fprintf(stderr, "deleted a rule left by process %d: %s\n", (int)pid, line);
        free(copy);
    }
    free(listing);
}

/*
 * Starts the guard: a process in its own session that waits for EOF on a pipe whose only writer
 * is this process (close-on-exec, so no child inherits it), then deletes this process's rules.
 * Only async-signal-safe calls between fork and exec.
 */
static void start_guard(void)
{
    static const char script[] =
        "PATH=/usr/sbin:/sbin:/usr/bin:/bin:$PATH; cat >/dev/null; "
        "iptables -w -S OUTPUT | grep -F -- \" $1 \" | sed 's/^-A /-D /' | "
        "while read -r rule; do eval \"iptables -w $rule\"; done";
    int fds[2];
    pid_t pid;

    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        setsid();
        if (fork() != 0)
            _exit(0);
        dup2(fds[0], 0);
        dup2(null, 1);
        dup2(null, 2);
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
        execl("/bin/sh", "sh", "-c", script, "guard", rule_tag, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    /* Kept open until this process ends: its end is the guard's signal. */
    (void)fds[1];
}

static void block_port(unsigned sport)
{
    char sport_text[16], dport_text[16];

    snprintf(sport_text, sizeof(sport_text), "%u", sport);
    snprintf(dport_text, sizeof(dport_text), "%d", sc.fake.port);
    ck_assert_int_eq(
        iptables((const char *[]){"-I", "OUTPUT", "-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1",
                                  "--sport", sport_text, "--dport", dport_text, "-m", "comment",
                                  "--comment", rule_tag, "-j", "DROP", NULL},
                 NULL),
        0);
}

static void lift_block(void)
{
    delete_rules(getpid());
}

/* ---- the kernel's view of the connections ---- */

struct tcp_socket {
    unsigned local_port, remote_port;
    unsigned state; /* 1 established, 4 fin-wait-1, 5 fin-wait-2, 6 time-wait, 7 close ... */
    unsigned long tx_queue;
    unsigned long inode; /* 0 for an orphan */
};

/* The IPv4 TCP sockets from /proc/net/tcp (thousands on a busy machine), into *out (malloc'd,
 * the caller frees); their number. */
static int tcp_sockets(struct tcp_socket **out)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    int n = 0, cap = 0;

    ck_assert_ptr_nonnull(f);
    *out = NULL;
    if (fgets(line, sizeof(line), f) != NULL) /* the header */
        while (fgets(line, sizeof(line), f) != NULL) {
            struct tcp_socket s;
            if (sscanf(line, " %*d: %*x:%x %*x:%x %x %lx:%*x %*x:%*x %*x %*u %*u %lu",
                       &s.local_port, &s.remote_port, &s.state, &s.tx_queue, &s.inode) != 5)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                *out = realloc(*out, (size_t)cap * sizeof(**out));
                ck_assert_ptr_nonnull(*out);
            }
            (*out)[n++] = s;
        }
    fclose(f);
    return n;
}

static int owned_by(pid_t pid, unsigned long inode)
{
    char dir[64], path[600], target[128], expect[64];
    struct dirent *e;
    DIR *d;
    int found = 0;

    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    snprintf(expect, sizeof(expect), "socket:[%lu]", inode);
    d = opendir(dir);
    if (d == NULL)
        return 0;
    while (!found && (e = readdir(d)) != NULL) {
        ssize_t len;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        len = readlink(path, target, sizeof(target) - 1);
        if (len > 0) {
            target[len] = '\0';
            found = strcmp(target, expect) == 0;
        }
    }
    closedir(d);
    return found;
}

/* Source ports of the daemon's established connections to the fake, into `ports`. */
static int daemon_connections(unsigned *ports, int max)
{
    struct tcp_socket *s;
    int n = tcp_sockets(&s), found = 0;

    for (int i = 0; i < n && found < max; i++)
        if (s[i].remote_port == (unsigned)sc.fake.port && s[i].state == 1 && s[i].inode != 0 &&
            owned_by(omnisync_daemon.pid, s[i].inode))
            ports[found++] = s[i].local_port;
    free(s);
    return found;
}

/* How many blocked connections hold bytes the fake has not acknowledged. */
static int blocked_with_unacked(void)
{
    struct tcp_socket *s;
    int n = tcp_sockets(&s), count = 0;

    for (int i = 0; i < n; i++)
        for (int b = 0; b < nblocked; b++)
            if (s[i].local_port == blocked[b] && s[i].remote_port == (unsigned)sc.fake.port &&
                s[i].tx_queue > 0)
                count++;
    free(s);
    return count;
}

/* Sockets of the blocked connections the kernel still keeps open (TIME_WAIT and CLOSE aside):
 * what could still send something to the fake. */
static int blocked_alive(int print)
{
    struct tcp_socket *s;
    int n = tcp_sockets(&s), count = 0;

    for (int i = 0; i < n; i++)
        for (int b = 0; b < nblocked; b++)
            if (s[i].local_port == blocked[b] && s[i].remote_port == (unsigned)sc.fake.port &&
                s[i].state != 6 && s[i].state != 7) {
                count++;
                if (print)
                    fprintf(stderr, "port %u: state %u, %lu bytes unacknowledged, %s\n",
                            s[i].local_port, s[i].state, s[i].tx_queue,
                            s[i].inode == 0 ? "orphaned (closed by the daemon)" : "open");
            }
    free(s);
    return count;
}

/* ---- the test ---- */

START_TEST(test_request_given_up_in_block_never_arrives)
{
    uint64_t started = testutil_now_ms();
    int creates[4];
    char why[512];

    snprintf(rule_tag, sizeof(rule_tag), RULE_TAG "%d", (int)getpid());
    start_guard();
    /* Two connections at most, each request given up after one second; retries come quickly. */
    ck_assert_msg(scenario_setup(&sc,
                                 "[omnidesk]\ntimeout_ms = 1000\nmax_in_flight = 2\n"
                                 "[delivery]\nbackoff_initial_ms = 100\nbackoff_max_ms = 500\n",
                                 NULL) == 0,
                  "scenario setup failed");
    ck_assert_msg(scenario_start_daemon(&sc, &omnisync_daemon) == 0, "daemon did not start");

    /* Two creates that overlap (the fake takes 300 ms each) open two kept-alive connections. */
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"latency_ms\": 300}"), 0);
    scenario_exec(&sc, "INSERT INTO customers (customer_no, first_name, last_name, email, "
                       "loyalty_tier) VALUES ('L1', 'Ann', 'Lee', 'l1@example.com', 'v01'), "
                       "('L2', 'Bob', 'Lee', 'l2@example.com', 'v01')");
    ck_assert_msg(WAIT_UNTIL(fake_customer_count(&sc.fake) == 2, 15000), "L1, L2 not created");
    ck_assert_int_eq(fake_set_faults(&sc.fake, "{\"latency_ms\": 0}"), 0);
    ck_assert_msg(WAIT_UNTIL((nblocked = daemon_connections(blocked, MAX_BLOCKED)) == 2, 10000),
                  "the daemon holds %d connections to the fake, not 2", nblocked);

    /* The block: packets of both connections dropped. An update and a create go out on them. */
    for (int b = 0; b < nblocked; b++)
        block_port(blocked[b]);
    scenario_exec(&sc, "BEGIN; UPDATE customers SET loyalty_tier = 'v02' WHERE customer_no = 'L1'; "
                       "INSERT INTO customers (customer_no, first_name, last_name, email, "
                       "loyalty_tier) VALUES ('L3', 'Zoë', 'Lee', 'l3@example.com', 'v03'); "
                       "COMMIT");
    ck_assert_msg(WAIT_UNTIL(blocked_with_unacked() == 2, 10000),
                  "the update and the create did not both go out on the blocked connections");
    /* The newer state, committed while the old one is on its way: the retries carry it. */
    scenario_exec(&sc,
                  "UPDATE customers SET loyalty_tier = 'v03' WHERE customer_no IN ('L1', 'L2')");
    if (!WAIT_UNTIL(proc_count_lines(&omnisync_daemon, "delivery will be retried", NULL) >= 2,
                    10000)) {
        proc_dump_tail(&omnisync_daemon, "omnisync run", 60);
        ck_abort_msg("the two requests of the block were not given up");
    }

    /* The retries, on new connections, deliver everything while the old copies are held. */
    if (!scenario_wait_quiet(&sc, 30000)) {
        scenario_dump_outbox(&sc);
        proc_dump_tail(&omnisync_daemon, "omnisync run", 60);
        ck_abort_msg("the retries were not delivered during the block");
    }
    ck_assert_msg(scenario_compare(&sc, NULL, why, sizeof(why)) == 0, "before the lift: %s", why);
    fprintf(stderr,
            "late request: retries delivered after %.1f s; sockets of the blocked "
            "connections before the lift:\n",
            (testutil_now_ms() - started) / 1000.0);
    int alive = blocked_alive(1);

    /* The block ends. Whatever the kernel still keeps of the given-up requests now arrives;
     * wait until nothing of those connections is left that could still send. */
    lift_block();
    if (!WAIT_UNTIL(blocked_alive(0) == 0, 30000)) {
        blocked_alive(1);
        ck_abort_msg("the blocked connections still live 30 s after the block");
    }
    ck_assert(WAIT_UNTIL(fake_stat(&sc.fake, "in_flight") == 0, 10000));
    fprintf(stderr,
            "late request: %d socket(s) of the given-up requests were left at the lift; "
            "%lld requests, %lld duplicate creates; %.1f s\n",
            alive, fake_stat(&sc.fake, "requests"), fake_stat(&sc.fake, "duplicate_creates"),
            (testutil_now_ms() - started) / 1000.0);

    /* The newest state stays, each customer was created once, nothing older came after newer. */
    scenario_assert_tier_order(&sc, 3, 3, creates);
    ck_assert_int_eq(fake_stat(&sc.fake, "duplicate_creates"), 0);
    for (int k = 1; k <= 3; k++)
        ck_assert_msg(creates[k] == 1, "L%d created %d times", k, creates[k]);
    ck_assert_msg(scenario_compare(&sc, NULL, why, sizeof(why)) == 0, "after the lift: %s", why);
    ck_assert_int_eq(scenario_open_rows(&sc), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "failed"), 0);
    ck_assert_int_eq(scenario_count_status(&sc, "done"),
                     pgrig_query_int(sc.conn, "SELECT count(*) FROM omnisync.outbox"));

    ck_assert_int_eq(proc_stop(&omnisync_daemon, 20000), 0);
    ck_assert_int_eq(proc_stderr_contains(&omnisync_daemon, SCENARIO_API_KEY), 0);
    ck_assert_int_eq(proc_stderr_contains(&omnisync_daemon, "@example.com"), 0);
    proc_free(&omnisync_daemon);
    scenario_teardown(&sc);
}
END_TEST

/* 0 when the test can block packets here: root and an iptables that works. */
static int can_block(void)
{
    char *listing = NULL;
    int rc;

    if (geteuid() != 0) {
        fprintf(stderr, "test_late_request: skipped: needs root for iptables\n");
        return -1;
    }
    rc = iptables((const char *[]){"-S", "OUTPUT", NULL}, &listing);
    free(listing);
    if (rc != 0) {
        fprintf(stderr, "test_late_request: skipped: iptables is missing or does not work\n");
        return -1;
    }
    return 0;
}

int main(void)
{
    if (can_block() != 0)
        return 77;
    delete_rules(0);
    if (pgrig_global() == NULL)
        return 1;
    Suite *s = suite_create("late_request");
    TCase *tc = tcase_create("late_request");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_request_given_up_in_block_never_arrives);
    suite_add_tcase(s, tc);
    return pgrig_run_suite(s);
}
