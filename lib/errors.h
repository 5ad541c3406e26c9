/*
 * errors: the one set of result codes every libomnisync function returns.
 *
 * Functions return 0 on success and one of these negative codes on failure. libpq, libcurl,
 * json-c and system errors are translated into them at the module boundary, where the detail is
 * logged once; callers above only branch on the code.
 */
#ifndef OMNISYNC_ERRORS_H
#define OMNISYNC_ERRORS_H

#define OMNISYNC_MUST_CHECK __attribute__((warn_unused_result))

enum omnisync_err {
    OMNISYNC_OK = 0,
    OMNISYNC_ENOMEM = -1,    /* out of memory */
    OMNISYNC_EINVAL = -2,    /* invalid argument or input */
    OMNISYNC_ECONFIG = -3,   /* configuration is invalid */
    OMNISYNC_EDB = -4,       /* database error */
    OMNISYNC_EHTTP = -5,     /* HTTP transport error */
    OMNISYNC_EJSON = -6,     /* malformed JSON */
    OMNISYNC_EIO = -7,       /* file or socket I/O error */
    OMNISYNC_ENOTFOUND = -8, /* the thing asked for does not exist */
    OMNISYNC_ETOOBIG = -9,   /* input exceeds a hard size cap */
    OMNISYNC_EBUSY = -10,    /* resource in use, try again later */
    OMNISYNC_ECANCELED = -11 /* operation canceled (shutdown) */
};

/* A static, human-readable description of `err`; never NULL. */
const char *omnisync_strerror(int err);

#endif
