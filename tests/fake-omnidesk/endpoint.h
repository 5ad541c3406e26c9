/*
 * endpoint: the routing table of the fake Omnidesk.
 *
 * Maps (method, path) to one of the customer endpoints the fake implements, exactly as the API
 * document spells the paths (case-sensitive), plus the lower-case `addchannelonly` of the older
 * guide. Everything else is `unknown` and answers 404.
 */
#ifndef FAKE_ENDPOINT_H
#define FAKE_ENDPOINT_H

enum endpoint {
    ENDPOINT_CREATE,
    ENDPOINT_UPDATE,
    ENDPOINT_ADD_CHANNEL,
    ENDPOINT_PURGE_ID,
    ENDPOINT_PURGE_LEGACY,
    ENDPOINT_SEARCH,
    ENDPOINT_SEARCH_CHANNEL,
    ENDPOINT_INDEX,
    ENDPOINT_ITEM,
    ENDPOINT_UNKNOWN,
    ENDPOINT_COUNT
};

/* The name used in the log, the stats and the `paths` setting; never NULL. */
const char *endpoint_name(enum endpoint ep);

/* The endpoint called `name`, or -1 when there is none. */
int endpoint_from_name(const char *name);

/* Routes one request. `path` has no query string. For purgeData/{id} and item, *id receives the
   numeric customer id from the path (otherwise 0). */
enum endpoint endpoint_route(const char *method, const char *path, long long *id);

#endif
