/*
 * The second half of the hostile-API cases (issue 18.2, the answers issue 17 fixed: 2xx error
 * bodies, ids beyond int64, the Retry-After cap, the too-large header's message), built as a
 * binary of its own so ctest runs the two halves side by side; see test_hostile_api.c.
 */
#define HOSTILE_ANSWERS 1
#include "test_hostile_api.c"
