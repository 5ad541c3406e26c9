/* errors: descriptions of the result codes. */
#include "errors.h"

const char *omnisync_strerror(int err)
{
    switch (err) {
    case OMNISYNC_OK:
        return "success";
    case OMNISYNC_ENOMEM:
        return "out of memory";
    case OMNISYNC_EINVAL:
        return "invalid input";
    case OMNISYNC_ECONFIG:
        return "invalid configuration";
    case OMNISYNC_EDB:
        return "database error";
    case OMNISYNC_EHTTP:
        return "HTTP transport error";
    case OMNISYNC_EJSON:
        return "malformed JSON";
    case OMNISYNC_EIO:
        return "I/O error";
    case OMNISYNC_ENOTFOUND:
        return "not found";
    case OMNISYNC_ETOOBIG:
        return "input too large";
    case OMNISYNC_EBUSY:
        return "resource busy";
    case OMNISYNC_ECANCELED:
        return "canceled";
    }
    return "unknown error";
}
