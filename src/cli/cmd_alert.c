/*
 * cmd_alert.c -- `keyrail alert`: budget and balance alerts and the delivery
 * log of their webhooks (src/alerts; each runs its operation, src/ops).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

int kr_cmd_alert(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--url", true, "webhook URL (http:// or https://)"},
                                  {"--budget", true, "budget: the amount per period"},
                                  {"--period", true, "budget: day or month (default month)"},
                                  {"--percents", true, "budget: e.g. 50,80,100 (default 100)"},
                                  {"--ws", true, "budget: one workspace's spend (its name)"},
                                  {"--threshold", true, "balance: alert below this balance"},
                                  {"--limit", true, "deliveries: how many (default 20)"}};
    const char *usage =
        "usage: keyrail alert budget ORG --budget AMOUNT --url URL [--period day|month]\n"
        "                            [--percents 50,80,100] [--ws NAME]\n"
        "       keyrail alert balance ORG --threshold AMOUNT --url URL\n"
        "       keyrail alert list ORG\n"
        "       keyrail alert delete ORG ID\n"
        "       keyrail alert deliveries ORG [--limit N]\n\n"
        "Each crossing (a percent of the budget in a period; the balance falling below the\n"
        "threshold) is POSTed once to the URL, signed with the alert's secret (shown once).";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 2) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    cJSON_AddStringToObject(p, "org", a.pos[1]);
    const char *sub = a.pos[0];
    if ((!strcmp(sub, "budget") || !strcmp(sub, "balance")) && a.npos == 2) {
        cJSON_AddStringToObject(p, "kind", sub);
        static const char *const map[][2] = {{"--url", "url"},         {"--budget", "budget"},
                                             {"--period", "period"},   {"--percents", "percents"},
                                             {"--ws", "workspace"},    {"--threshold", "threshold"}};
        for (size_t i = 0; i < N(map); i++)
            if (kr_arg(&a, map[i][0])) cJSON_AddStringToObject(p, map[i][1], kr_arg(&a, map[i][0]));
        rc = kr_cli_op(&c, "alert.create", "alert create", p, &out);
        p = NULL; /* kr_cli_op frees it */
        if (rc) goto out;
        printf("alert %.0f (%s) created; its webhook secret, shown once: %s\n",
               cJSON_GetObjectItemCaseSensitive(out, "id")->valuedouble, sub,
               kr_cli_jstr(out, "secret"));
    } else if (!strcmp(sub, "list") && a.npos == 2) {
        rc = kr_cli_op(&c, "alert.list", "alert list", p, &out);
        p = NULL; /* kr_cli_op frees it */
        if (rc) goto out;
        printf("%-6s %-8s %-10s %-14s %-12s %s\n", "ID", "KIND", "SCOPE", "AMOUNT", "WHEN", "URL");
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(out, "items"))
        {
            bool budget = !strcmp(kr_cli_jstr(r, "kind"), "budget");
            char when[48] = "below";
            if (budget) {
                char *pc = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(r, "percents"));
                kr_snprintf(when, sizeof when, "%s %s%%", kr_cli_jstr(r, "period"), pc ? pc : "");
                free(pc);
            }
            char e1[600];
            const cJSON *ws = cJSON_GetObjectItemCaseSensitive(r, "workspace");
            printf("%-6.0f %-8s %-10s %-14s %-12s %s\n",
                   cJSON_GetObjectItemCaseSensitive(r, "id")->valuedouble, kr_cli_jstr(r, "kind"),
                   cJSON_IsString(ws) ? ws->valuestring : "org",
                   kr_cli_jstr(r, budget ? "budget" : "threshold"), when,
                   kr_esc(kr_cli_jstr(r, "url"), e1, sizeof e1));
        }
    } else if (!strcmp(sub, "delete") && a.npos == 3) {
        int64_t id;
        if (kr_parse_i64(a.pos[2], strlen(a.pos[2]), &id) || id <= 0) {
            kr_cli_errf("ID is an alert's number (keyrail alert list)");
            rc = 2;
            goto out;
        }
        cJSON_AddNumberToObject(p, "id", (double)id);
        rc = kr_cli_op(&c, "alert.delete", "alert delete", p, &out);
        p = NULL; /* kr_cli_op frees it */
        if (rc) goto out;
        printf("alert %lld deleted\n", (long long)id);
    } else if (!strcmp(sub, "deliveries") && a.npos == 2) {
        uint64_t lim = 20;
        if (kr_arg(&a, "--limit") &&
            (kr_parse_u64(kr_arg(&a, "--limit"), strlen(kr_arg(&a, "--limit")), &lim) || !lim ||
             lim > 1000)) {
            kr_cli_errf("--limit takes 1..1000");
            rc = 2;
            goto out;
        }
        cJSON_AddNumberToObject(p, "limit", (double)lim);
        rc = kr_cli_op(&c, "alert.deliveries", "alert deliveries", p, &out);
        p = NULL; /* kr_cli_op frees it */
        if (rc) goto out;
        printf("%-6s %-6s %-18s %-10s %-8s %-6s %s\n", "ID", "ALERT", "CROSSING", "STATUS",
               "ATTEMPTS", "LAST", "ERROR");
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(out, "items"))
        {
            char e1[300];
            printf("%-6.0f %-6.0f %-18s %-10s %-8.0f %-6.0f %s\n",
                   cJSON_GetObjectItemCaseSensitive(r, "id")->valuedouble,
                   cJSON_GetObjectItemCaseSensitive(r, "alert_id")->valuedouble,
                   kr_cli_jstr(r, "crossing"), kr_cli_jstr(r, "status"),
                   cJSON_GetObjectItemCaseSensitive(r, "attempts")->valuedouble,
                   cJSON_GetObjectItemCaseSensitive(r, "last_status")->valuedouble,
                   kr_esc(kr_cli_jstr(r, "last_error"), e1, sizeof e1));
        }
    } else {
        kr_cli_errf("%s", usage);
        rc = 2;
        goto out;
    }
out:
    cJSON_Delete(p);
    cJSON_Delete(out);
    kr_cli_free(&c);
    return rc;
}
