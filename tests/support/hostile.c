/* hostile: see hostile.h. */
#include "hostile.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

#define REQUEST_MAX (1024 * 1024)

struct conn {
    struct hostile *h;
    int fd;
};

static int send_all(struct hostile *h, int fd, const char *data, size_t len, int count)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        if (count) {
            pthread_mutex_lock(&h->lock);
            h->body_bytes_sent += (unsigned long long)n;
            pthread_mutex_unlock(&h->lock);
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one request: head, then Content-Length bytes. Returns its length, or -1. */
static ssize_t read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t got;
        char *end;

        if (poll(&p, 1, 10000) <= 0)
            return -1;
        got = recv(fd, buf + n, cap - 1 - n, 0);
        if (got <= 0)
            return -1;
        n += (size_t)got;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t body = cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (n >= (size_t)(end - buf) + 4 + body)
                return (ssize_t)n;
        }
        if (n + 1 >= cap)
            return -1;
    }
}

static void record(struct hostile *h, const char *req, size_t len, char *method, size_t mlen,
                   char *path, size_t plen)
{
    const char *key = strcasestr(req, "\r\napiKey:");
    struct hostile_record r;

    memset(&r, 0, sizeof(r));
    sscanf(req, "%15s %255s", r.method, r.path);
    if (key != NULL) {
        key += 9;
        while (*key == ' ')
            key++;
        size_t klen = strcspn(key, "\r\n");
        if (klen >= sizeof(r.api_key))
            klen = sizeof(r.api_key) - 1;
        memcpy(r.api_key, key, klen);
    }
    r.bytes = len;
    snprintf(method, mlen, "%s", r.method);
    snprintf(path, plen, "%s", r.path);
    pthread_mutex_lock(&h->lock);
    h->requests++;
    if (h->nrecords < HOSTILE_MAX_RECORDS)
        h->records[h->nrecords++] = r;
    if (r.api_key[0] != '\0') {
        char line[140];
        snprintf(line, sizeof(line), "%s\n", r.api_key);
        if (strstr(h->keys_seen, line) == NULL &&
            strlen(h->keys_seen) + strlen(line) < sizeof(h->keys_seen))
            strcat(h->keys_seen, line);
    }
    pthread_mutex_unlock(&h->lock);
}

static int find_answer(struct hostile *h, const char *method, const char *path, const char *req,
                       struct hostile_answer *out)
{
    int found = 0;

    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->nanswers && !found; i++) {
        const struct hostile_answer *a = &h->answers[i];
        if ((a->method == NULL || strcmp(a->method, method) == 0) &&
            strncmp(path, a->path_prefix, strlen(a->path_prefix)) == 0 &&
            (a->contains == NULL || strstr(req, a->contains) != NULL)) {
            *out = *a;
            found = 1;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return found;
}

static void answer(struct hostile *h, int fd, const struct hostile_answer *a)
{
    char head[1024];
    size_t body_len =
        a->kind == HOSTILE_BODY_FIXED ? (a->body ? strlen(a->body) : 0) : a->flood_bytes;

    snprintf(head, sizeof(head), "%s\r\n%sContent-Type: application/json\r\nConnection: close\r\n",
             a->status_line, a->headers ? a->headers : "");
    if (send_all(h, fd, head, strlen(head), 0) != 0)
        return;
    for (unsigned i = 0; i < a->many_headers; i++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "X-Filler-%u: %u\r\n", i, i);
        if (send_all(h, fd, line, (size_t)n, 0) != 0)
            return;
    }
    if (a->huge_header > 0) {
        char *line = malloc(a->huge_header + 16);
        memcpy(line, "X-Huge: ", 8);
        memset(line + 8, 'h', a->huge_header);
        memcpy(line + 8 + a->huge_header, "\r\n", 2);
        int rc = send_all(h, fd, line, a->huge_header + 10, 0);
        free(line);
        if (rc != 0)
            return;
    }
    if (a->kind == HOSTILE_BODY_CHUNKED_FOREVER) {
        static const char te[] = "Transfer-Encoding: chunked\r\n\r\n";
        char chunk[8192 + 16];
        int n = snprintf(chunk, sizeof(chunk), "%x\r\n", 8192);
        memset(chunk + n, '[', 8192);
        memcpy(chunk + n + 8192, "\r\n", 2);
        if (send_all(h, fd, te, sizeof(te) - 1, 0) != 0)
            return;
        while (!__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE) &&
               send_all(h, fd, chunk, (size_t)n + 8194, 1) == 0)
            ;
        return;
    }
    snprintf(head, sizeof(head), "Content-Length: %zu\r\n\r\n", body_len);
    if (send_all(h, fd, head, strlen(head), 0) != 0)
        return;
    if (a->kind == HOSTILE_BODY_FIXED) {
        send_all(h, fd, a->body ? a->body : "", body_len, 1);
        return;
    }
    {
        char block[65536];
        size_t left = a->flood_bytes;
        memset(block, ' ', sizeof(block));
        block[0] = '{';
        while (left > 0 && !__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE)) {
            size_t n = left < sizeof(block) ? left : sizeof(block);
            if (send_all(h, fd, block, n, 1) != 0)
                return;
            left -= n;
        }
    }
}

static void *serve(void *arg)
{
    struct conn *c = arg;
    struct hostile *h = c->h;
    char *req = malloc(REQUEST_MAX);
    ssize_t len = req ? read_request(c->fd, req, REQUEST_MAX) : -1;

    if (len > 0) {
        char method[16], path[256];
        struct hostile_answer a;
        record(h, req, (size_t)len, method, sizeof(method), path, sizeof(path));
        if (!find_answer(h, method, path, req, &a)) {
            memset(&a, 0, sizeof(a));
            a.status_line = "HTTP/1.1 200 OK";
            a.body = "{}";
        }
        answer(h, c->fd, &a);
    }
    free(req);
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    pthread_mutex_lock(&h->lock);
    h->active--;
    pthread_mutex_unlock(&h->lock);
    free(c);
    return NULL;
}

static void *accept_loop(void *arg)
{
    struct hostile *h = arg;

    for (;;) {
        struct pollfd p = {.fd = h->listen_fd, .events = POLLIN};
        int fd;
        pthread_t t;
        struct conn *c;

        if (__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE))
            return NULL;
        if (poll(&p, 1, 100) <= 0)
            continue;
        fd = accept(h->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        c = malloc(sizeof(*c));
        c->h = h;
        c->fd = fd;
        pthread_mutex_lock(&h->lock);
        h->connections++;
        h->active++;
        pthread_mutex_unlock(&h->lock);
        if (pthread_create(&t, NULL, serve, c) != 0) {
            close(fd);
            free(c);
            pthread_mutex_lock(&h->lock);
            h->active--;
            pthread_mutex_unlock(&h->lock);
            continue;
        }
        pthread_detach(t);
    }
}

int hostile_start(struct hostile *h)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);

    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->listen_fd < 0 || bind(h->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(h->listen_fd, 64) != 0 ||
        getsockname(h->listen_fd, (struct sockaddr *)&addr, &len) != 0) {
        fprintf(stderr, "hostile: cannot listen: %s\n", strerror(errno));
        if (h->listen_fd >= 0)
            close(h->listen_fd);
        return -1;
    }
    h->port = ntohs(addr.sin_port);
    snprintf(h->url, sizeof(h->url), "http://127.0.0.1:%d", h->port);
    if (pthread_create(&h->acceptor, NULL, accept_loop, h) != 0) {
        close(h->listen_fd);
        return -1;
    }
    return 0;
}

void hostile_add(struct hostile *h, const struct hostile_answer *a)
{
    pthread_mutex_lock(&h->lock);
    if (h->nanswers < HOSTILE_MAX_ANSWERS)
        h->answers[h->nanswers++] = *a;
    pthread_mutex_unlock(&h->lock);
}

unsigned long long hostile_count(struct hostile *h, const char *method, const char *path_prefix)
{
    unsigned long long n = 0;

    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->nrecords; i++)
        if ((method == NULL || strcmp(h->records[i].method, method) == 0) &&
            (path_prefix == NULL ||
             strncmp(h->records[i].path, path_prefix, strlen(path_prefix)) == 0))
            n++;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void hostile_stop(struct hostile *h)
{
    if (h->listen_fd <= 0 || h->stopping)
        return;
    __atomic_store_n(&h->stopping, 1, __ATOMIC_RELEASE);
    pthread_join(h->acceptor, NULL);
    close(h->listen_fd);
    for (int i = 0; i < 1000; i++) {
        unsigned active;
        pthread_mutex_lock(&h->lock);
        active = h->active;
        pthread_mutex_unlock(&h->lock);
        if (active == 0)
            break;
        testutil_sleep_ms(10);
    }
}
