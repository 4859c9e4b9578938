#include "provision/forbidden.h"
#include "core/ini.h"
#include "core/buf.h"

#include <string.h>

typedef struct {
    const char *name; /* exact name, or a prefix when it ends in '*' */
    const char *reason;
} rule;

static const rule rules[] = {
    /* source control */
    {"GITHUB_TOKEN", "source-control token"},
    {"GH_TOKEN", "source-control token"},
    {"GH_ENTERPRISE_TOKEN", "source-control token"},
    {"GITHUB_ENTERPRISE_TOKEN", "source-control token"},
    {"GITHUB_PAT", "source-control token"},
    {"GITHUB_APP_PRIVATE_KEY", "source-control token"},
    {"GITLAB_TOKEN", "source-control token"},
    {"GL_TOKEN", "source-control token"},
    {"GITLAB_PRIVATE_TOKEN", "source-control token"},
    {"CI_JOB_TOKEN", "source-control token"},
    {"BITBUCKET_TOKEN", "source-control token"},
    {"BITBUCKET_APP_PASSWORD", "source-control token"},
    {"GITEA_TOKEN", "source-control token"},
    /* cloud */
    {"AWS_ACCESS_KEY_ID", "cloud credential"},
    {"AWS_SECRET_ACCESS_KEY", "cloud credential"},
    {"AWS_SESSION_TOKEN", "cloud credential"},
    {"AWS_SECURITY_TOKEN", "cloud credential"},
    {"AWS_WEB_IDENTITY_TOKEN_FILE", "cloud credential"},
    {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "cloud credential"},
    {"GOOGLE_APPLICATION_CREDENTIALS", "cloud credential"},
    {"GOOGLE_CREDENTIALS", "cloud credential"},
    {"GCP_SERVICE_ACCOUNT_KEY", "cloud credential"},
    {"CLOUDSDK_AUTH_ACCESS_TOKEN", "cloud credential"},
    {"AZURE_CLIENT_SECRET", "cloud credential"},
    {"AZURE_CLIENT_CERTIFICATE_PATH", "cloud credential"},
    {"ARM_CLIENT_SECRET", "cloud credential"},
    {"ARM_ACCESS_KEY", "cloud credential"},
    {"AZURE_STORAGE_KEY", "cloud credential"},
    {"DIGITALOCEAN_TOKEN", "cloud credential"},
    {"DIGITALOCEAN_ACCESS_TOKEN", "cloud credential"},
    {"HCLOUD_TOKEN", "cloud credential"},
    {"LINODE_TOKEN", "cloud credential"},
    {"CLOUDFLARE_API_TOKEN", "cloud credential"},
    {"CLOUDFLARE_API_KEY", "cloud credential"},
    {"FLY_API_TOKEN", "cloud credential"},
    {"HEROKU_API_KEY", "cloud credential"},
    {"VERCEL_TOKEN", "cloud credential"},
    /* infrastructure */
    {"VAULT_TOKEN", "infrastructure token"},
    {"NOMAD_TOKEN", "infrastructure token"},
    {"CONSUL_HTTP_TOKEN", "infrastructure token"},
    {"KUBECONFIG", "infrastructure token"},
    {"KUBE_TOKEN", "infrastructure token"},
    {"DOCKER_AUTH_CONFIG", "infrastructure token"},
    {"DOCKER_PASSWORD", "infrastructure token"},
    {"REGISTRY_PASSWORD", "infrastructure token"},
    {"NPM_TOKEN", "infrastructure token"},
    {"NODE_AUTH_TOKEN", "infrastructure token"},
    {"PYPI_TOKEN", "infrastructure token"},
    {"TWINE_PASSWORD", "infrastructure token"},
    {"CARGO_REGISTRY_TOKEN", "infrastructure token"},
    {"TF_TOKEN_*", "infrastructure token"},
    {"TFE_TOKEN", "infrastructure token"},
    {"DATABASE_URL", "infrastructure token"},
    {"PGPASSWORD", "infrastructure token"},
    {"SENTRY_AUTH_TOKEN", "infrastructure token"},
    {"SLACK_BOT_TOKEN", "infrastructure token"},
    /* keyrail itself: its master key under every name keyrail documents
     * (KEYRAIL_MASTER_KEY, KEYRAIL_SECRETS_MASTER_KEY_FILE: KEYRAIL_*), and the
     * names operators commonly give such keys and admin credentials */
    {"KEYRAIL_*", "keyrail operator secret"},
    {"MASTER_KEY", "operator secret"},
    {"SECRETS_MASTER_KEY", "operator secret"},
    {"SECRETS_ENCRYPTION_KEY", "operator secret"},
    {"ENCRYPTION_KEY", "operator secret"},
    {"ADMIN_TOKEN", "operator secret"},
    {"ADMIN_API_KEY", "operator secret"},
    {"ADMIN_PASSWORD", "operator secret"},
};

void kr_policy_init(kr_policy *p)
{
    memset(p, 0, sizeof *p);
    kr_strlcpy(p->operator_prefixes[0], "OPERATOR_", sizeof p->operator_prefixes[0]);
    p->nprefixes = 1;
}

int kr_policy_add_prefixes(kr_policy *p, const char *list, kr_diag *d)
{
    const char *item;
    size_t len;
    while (kr_list_next(&list, &item, &len)) {
        if (p->nprefixes >= KR_POLICY_MAX_PREFIXES)
            return kr_fail(d, KR_ECONFIG, "at most %d operator prefixes", KR_POLICY_MAX_PREFIXES);
        if (kr_memlcpy(p->operator_prefixes[p->nprefixes], sizeof p->operator_prefixes[0], item, len))
            return kr_fail(d, KR_ECONFIG, "operator prefix too long");
        p->nprefixes++;
    }
    return 0;
}

static bool matches(const char *pattern, const char *key)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*') return strncmp(key, pattern, n - 1) == 0;
    return strcmp(key, pattern) == 0;
}

const char *kr_policy_reason(const kr_policy *p, const char *key)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (matches(rules[i].name, key)) return rules[i].reason;
    for (size_t i = 0; p && i < p->nprefixes; i++)
        if (p->operator_prefixes[i][0] &&
            !strncmp(key, p->operator_prefixes[i], strlen(p->operator_prefixes[i])))
            return "key under an operator prefix";
    return NULL;
}

int kr_policy_check_key(const kr_policy *p, const char *key, kr_diag *d)
{
    const char *why = kr_policy_reason(p, key);
    if (!why) return 0;
    return kr_fail(d, KR_EFORBIDDEN_KEY,
                   "forbidden key %s (%s): operator-scope credentials never reach a tenant",
                   key, why);
}
