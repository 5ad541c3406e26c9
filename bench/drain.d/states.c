/* bench/drain.d/states: how often each joint state of a few processes occurs, for bench/drain
 * --zero-perf's question "when the cores idle, who is waiting for whom".
 *
 * Usage: states INTERVAL_US NAME=PID[,PID...] ...
 * Every INTERVAL_US microseconds (absolute deadlines, CLOCK_MONOTONIC) it reads the state letter
 * of every thread of each named group from /proc/PID/task/TID/stat (threads listed once, at the
 * start) and reduces the group to one letter: R if a thread is running or runnable, else D if
 * one is in an uninterruptible wait (the disk), else S (asleep: a socket, a lock, a timer).
 * On SIGTERM or SIGINT it prints the number of samples, then one line per joint state seen:
 * count, percent and the groups' letters in the order given, most frequent first.
 * Up to 6 groups of up to 16 threads each. Exits 1 on a usage or /proc error. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_GROUPS 6
#define MAX_THREADS 16
#define NCOMBOS 729 /* 3^MAX_GROUPS */

struct group {
    const char *name;
    int fds[MAX_THREADS];
    int nfds;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* add_threads: opens the stat file of every thread of PID into G; 0, or -1 when none is open. */
static int add_threads(struct group *g, const char *pid)
{
    char path[64];
    DIR *dir;

    if (strlen(pid) > 20)
        return -1;
    struct dirent *e;

    snprintf(path, sizeof(path), "/proc/%s/task", pid);
    dir = opendir(path);
    if (dir == NULL)
        return -1;
    while ((e = readdir(dir)) != NULL && g->nfds < MAX_THREADS) {
        char stat_path[320];
        int fd;

        if (e->d_name[0] == '.')
            continue;
        snprintf(stat_path, sizeof(stat_path), "/proc/%s/task/%s/stat", pid, e->d_name);
        fd = open(stat_path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0)
            g->fds[g->nfds++] = fd;
    }
    closedir(dir);
    return g->nfds > 0 ? 0 : -1;
}

/* group_state: 0 (S), 1 (D) or 2 (R) for the group; a thread that has gone reads as asleep. */
static int group_state(const struct group *g)
{
    int best = 0;

    for (int i = 0; i < g->nfds; i++) {
        char buf[512];
        ssize_t n = pread(g->fds[i], buf, sizeof(buf) - 1, 0);
        char *p;

        if (n <= 0)
            continue;
        buf[n] = '\0';
        p = strrchr(buf, ')');
        if (p == NULL || p[1] == '\0' || p[2] == '\0')
            continue;
        if (p[2] == 'R')
            return 2;
        if (p[2] == 'D')
            best = 1;
    }
    return best;
}

int main(int argc, char **argv)
{
    static const char letters[] = "SDR";
    static unsigned long counts[NCOMBOS];
    struct group groups[MAX_GROUPS];
    int ngroups = 0;
    unsigned long samples = 0;
    long interval_us;
    struct timespec next;
    struct sigaction sa;

    if (argc < 3 || argc - 2 > MAX_GROUPS) {
        fprintf(stderr, "usage: states INTERVAL_US NAME=PID[,PID...] ... (1 to %d groups)\n", MAX_GROUPS);
        return 1;
    }
    interval_us = strtol(argv[1], NULL, 10);
    if (interval_us < 100) {
        fprintf(stderr, "states: INTERVAL_US must be >= 100\n");
        return 1;
    }
    for (int a = 2; a < argc; a++) {
        struct group *g = &groups[ngroups++];
        char *eq = strchr(argv[a], '='), *pid, *save = NULL;

        if (eq == NULL) {
            fprintf(stderr, "states: %s is not NAME=PID\n", argv[a]);
            return 1;
        }
        *eq = '\0';
        g->name = argv[a];
        g->nfds = 0;
        for (pid = strtok_r(eq + 1, ",", &save); pid != NULL; pid = strtok_r(NULL, ",", &save))
            add_threads(g, pid);
        if (g->nfds == 0) {
            fprintf(stderr, "states: no thread of %s found\n", g->name);
            return 1;
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!stop_requested) {
        int combo = 0;

        for (int i = ngroups - 1; i >= 0; i--)
            combo = combo * 3 + group_state(&groups[i]);
        counts[combo]++;
        samples++;
        next.tv_nsec += interval_us * 1000;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR && !stop_requested)
            ;
    }

    printf("samples %lu\n", samples);
    for (;;) {
        int best = -1;

        for (int c = 0; c < NCOMBOS; c++)
            if (counts[c] > 0 && (best < 0 || counts[c] > counts[best]))
                best = c;
        if (best < 0)
            break;
        printf("%8lu %5.1f", counts[best], samples ? 100.0 * (double)counts[best] / (double)samples : 0.0);
        for (int i = 0, c = best; i < ngroups; i++, c /= 3)
            printf(" %s=%c", groups[i].name, letters[c % 3]);
        printf("\n");
        counts[best] = 0;
    }
    return 0;
}
