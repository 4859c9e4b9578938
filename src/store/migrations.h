/* migrations.h -- the versioned schema for both engines (see migrations.c). */
#ifndef KR_MIGRATIONS_H
#define KR_MIGRATIONS_H

#include <stddef.h>

typedef struct kr_migration {
    int version;
    const char *what;
    const char *sqlite;
    const char *postgres;
} kr_migration;

const kr_migration *kr_migrations(size_t *n);

#endif
