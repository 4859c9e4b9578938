/*
 * forbidden.h -- operator-scope keys that must never reach a tenant.
 *
 * Source-control tokens, cloud credentials, infrastructure tokens,
 * keyrail's own admin token and master key, and any key under an
 * operator prefix from config. Every secret writer asks
 * kr_policy_check_key() before writing; the provisioner asks again for
 * every variable of an environment it builds, whatever its origin, so a key
 * written into the store behind keyrail's back still cannot reach a tenant.
 */
#ifndef KR_FORBIDDEN_H
#define KR_FORBIDDEN_H

#include <stddef.h>

#include "core/err.h"

#define KR_POLICY_MAX_PREFIXES 16

typedef struct kr_policy {
    char operator_prefixes[KR_POLICY_MAX_PREFIXES][64]; /* from config `operator_prefixes` */
    size_t nprefixes;
} kr_policy;

/* The built-in rules plus the default operator prefix "OPERATOR_". */
void kr_policy_init(kr_policy *p);
/* Adds a comma-separated list of operator prefixes. */
int kr_policy_add_prefixes(kr_policy *p, const char *list, kr_diag *d);
/* Why key is forbidden ("source-control token", …), or NULL when allowed. */
const char *kr_policy_reason(const kr_policy *p, const char *key);
/* 0, or KR_EFORBIDDEN_KEY with d naming the key and the reason. */
int kr_policy_check_key(const kr_policy *p, const char *key, kr_diag *d);

#endif
