/*
 * wake-cost: what this machine charges a process for waking up, the floor under any CPU per row
 * measured at one request slot (bench/drain, section 1).
 *
 * At M = 1 every delivered row is one wake-up of the daemon after L ms asleep (the fake's
 * latency), and the code and data a row touches are cold by then: the other processes ran on
 * the same cores meanwhile. This loop does the same with nothing else: it sleeps SLEEP_MS in
 * epoll_wait (as libuv does), then reads and writes KB kilobytes of its own memory (a stand-in
 * for a row's working set: libcurl's and json-c's state, the delivery, the payload), and reports
 * its CPU per wake-up from /proc/self/schedstat (ns on a CPU, as bench/drain reads it). The same
 * loop without the sleep gives the cost of the touch alone, hot.
 *
 * Usage: wake-cost SLEEP_MS KB COUNT   (SLEEP_MS -1: no sleep); bench/drain runs KB 0, 256, 1024
 * Prints: sleep_ms kb us_per_wakeup
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

static long long cpu_ns(void)
{
    long long ns = -1;
    FILE *f = fopen("/proc/self/schedstat", "r");
    if (f != NULL) {
        if (fscanf(f, "%lld", &ns) != 1)
            ns = -1;
        fclose(f);
    }
    return ns;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: wake-cost SLEEP_MS KB COUNT\n");
        return 2;
    }
    int sleep_ms = atoi(argv[1]);
    long kb = atol(argv[2]);
    int count = atoi(argv[3]);
    if (kb < 0 || count < 1) {
        fprintf(stderr, "wake-cost: KB must be >= 0 and COUNT >= 1\n");
        return 2;
    }
    int ep = epoll_create1(0);
    unsigned char *mem = calloc((size_t)kb * 1024 + 1, 1);
    if (ep < 0 || mem == NULL) {
        perror("wake-cost");
        return 1;
    }
    struct epoll_event ev;
    volatile unsigned long sum = 0;
    long long t0 = cpu_ns();
    for (int i = 0; i < count; i++) {
        if (sleep_ms >= 0)
            (void)epoll_wait(ep, &ev, 1, sleep_ms);
        for (long j = 0; j < kb * 1024; j += 64)
            sum += mem[j]++;
    }
    long long t1 = cpu_ns();
    if (t0 < 0 || t1 < 0) {
        fprintf(stderr, "wake-cost: cannot read /proc/self/schedstat\n");
        return 1;
    }
    printf("%d %ld %.1f\n", sleep_ms, kb, (double)(t1 - t0) / 1e3 / count);
    close(ep);
    free(mem);
    return 0;
}
