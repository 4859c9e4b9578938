/* db_pg.c -- PostgreSQL driver (libpq). Not yet implemented: see issue 8. */
#include "store/db.h"

int kr_db_open_pg(const char *conninfo, kr_db **out, kr_diag *d)
{
    (void)conninfo;
    (void)out;
    return kr_fail(d, KR_ECONFIG, "PostgreSQL store is not built yet");
}
