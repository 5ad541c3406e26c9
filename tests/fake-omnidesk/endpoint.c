/*
 * endpoint: the routing table of the fake Omnidesk (see endpoint.h).
 *
 * Paths are compared byte for byte: the real server is case-sensitive, and a client that sends
 * `updatecustomer` must find out here, not in production. The one exception is the older guide's
 * lower-case `addchannelonly`, which the real server is documented to answer.
 */
#include "endpoint.h"

#include <stdlib.h>
#include <string.h>

static const char *const endpoint_names[ENDPOINT_COUNT] = {
    [ENDPOINT_CREATE] = "create",
    [ENDPOINT_UPDATE] = "updateCustomer",
    [ENDPOINT_ADD_CHANNEL] = "addChannelOnly",
    [ENDPOINT_PURGE_ID] = "purgeData",
    [ENDPOINT_PURGE_LEGACY] = "purgedata",
    [ENDPOINT_SEARCH] = "search",
    [ENDPOINT_SEARCH_CHANNEL] = "searchByChannel",
    [ENDPOINT_INDEX] = "index",
    [ENDPOINT_ITEM] = "item",
    [ENDPOINT_UNKNOWN] = "unknown",
};

const char *endpoint_name(enum endpoint ep)
{
    if ((int)ep < 0 || ep >= ENDPOINT_COUNT)
        return "unknown";
    return endpoint_names[ep];
}

int endpoint_from_name(const char *name)
{
    for (int i = 0; i < ENDPOINT_COUNT; i++)
        if (strcmp(endpoint_names[i], name) == 0)
            return i;
    return -1;
}

/* A customer id in a path: 1 to 18 decimal digits, so it always fits a long long. */
static int parse_id(const char *s, long long *id)
{
    size_t n = strlen(s);

    if (n == 0 || n > 18 || strspn(s, "0123456789") != n)
        return -1;
    *id = strtoll(s, NULL, 10);
    return 0;
}

enum endpoint endpoint_route(const char *method, const char *path, long long *id)
{
    static const char base[] = "/api/v2/customer";
    const char *rest;

    *id = 0;
    if (strncmp(path, base, sizeof(base) - 1) != 0)
        return ENDPOINT_UNKNOWN;
    rest = path + sizeof(base) - 1;
    if (*rest == '\0') {
        if (strcmp(method, "POST") == 0)
            return ENDPOINT_CREATE;
        if (strcmp(method, "GET") == 0)
            return ENDPOINT_INDEX;
        return ENDPOINT_UNKNOWN;
    }
    if (*rest != '/')
        return ENDPOINT_UNKNOWN;
    rest++;
    if (strcmp(method, "PUT") == 0 && strcmp(rest, "updateCustomer") == 0)
        return ENDPOINT_UPDATE;
    if (strcmp(method, "POST") == 0) {
        if (strcmp(rest, "addChannelOnly") == 0 || strcmp(rest, "addchannelonly") == 0)
            return ENDPOINT_ADD_CHANNEL;
        if (strcmp(rest, "SearchByPrimaryExternalID") == 0)
            return ENDPOINT_SEARCH;
        if (strcmp(rest, "SearchByCustomerChannelValue") == 0)
            return ENDPOINT_SEARCH_CHANNEL;
        return ENDPOINT_UNKNOWN;
    }
    if (strcmp(method, "DELETE") == 0) {
        if (strcmp(rest, "purgedata") == 0)
            return ENDPOINT_PURGE_LEGACY;
        if (strncmp(rest, "purgeData/", 10) == 0 && parse_id(rest + 10, id) == 0)
            return ENDPOINT_PURGE_ID;
        return ENDPOINT_UNKNOWN;
    }
    if (strcmp(method, "GET") == 0 && parse_id(rest, id) == 0)
        return ENDPOINT_ITEM;
    return ENDPOINT_UNKNOWN;
}
