/* httpget: one GET over loopback (see httpget.h). */
#include "httpget.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    struct http_body *b = arg;
    size_t len = size * n;
    if (b->len + len >= sizeof(b->text))
        len = sizeof(b->text) - 1 - b->len;
    memcpy(b->text + b->len, p, len);
    b->len += len;
    b->text[b->len] = '\0';
    return size * n;
}

long http_get(int port, const char *path, struct http_body *b)
{
    char url[256];
    long status = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    b->len = 0;
    b->text[0] = '\0';
    CURL *c = curl_easy_init();
    if (c == NULL)
        return 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}
