/*
 * cmd_billing.c -- operator commands for what the proxy enforces and
 * records: `keyrail credits`, `keyrail limits`, `keyrail usage`. Each runs
 * its operation (src/ops) and prints the result. Amounts are in currency
 * units with up to six decimals (micro-units internally).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

int kr_cmd_credits(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--reason", true, "ledger reason for add (default: topup)"},
                                  {"--limit", true, "history: entries to show (default 20)"}};
    const char *usage = "usage: keyrail credits add ORG AMOUNT [--reason R]   (AMOUNT may be negative)\n"
                        "       keyrail credits cap ORG AMOUNT                (overage allowed below zero)\n"
                        "       keyrail credits show ORG\n"
                        "       keyrail credits history ORG [--limit N]\n\n"
                        "A request is admitted while balance + cap > 0; its cost is debited when\n"
                        "its usage is known. Amounts are currency units (e.g. 12.50).";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos < 2) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    cJSON_AddStringToObject(p, "org", a.pos[1]);
    const char *op = NULL;
    if ((!strcmp(a.pos[0], "add") || !strcmp(a.pos[0], "cap")) && a.npos == 3) {
        cJSON_AddStringToObject(p, "amount", a.pos[2]);
        if (!strcmp(a.pos[0], "add") && kr_arg(&a, "--reason"))
            cJSON_AddStringToObject(p, "reason", kr_arg(&a, "--reason"));
        op = !strcmp(a.pos[0], "add") ? "credits.add" : "credits.cap";
    } else if (!strcmp(a.pos[0], "show") && a.npos == 2) {
        op = "credits.show";
    } else if (!strcmp(a.pos[0], "history") && a.npos == 2) {
        uint64_t lim = 20;
        if (kr_arg(&a, "--limit") &&
            (kr_parse_u64(kr_arg(&a, "--limit"), strlen(kr_arg(&a, "--limit")), &lim) || !lim ||
             lim > 1000)) {
            cJSON_Delete(p);
            kr_cli_errf("--limit takes 1..1000");
            goto out;
        }
        cJSON_AddNumberToObject(p, "limit", (double)lim);
        if ((rc = kr_cli_op(&c, "credits.history", "credits history", p, &out))) goto out;
        printf("%-8s %-22s %16s  %-10s %s\n", "ID", "WHEN", "AMOUNT", "REASON", "REQUEST");
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(out, "items"))
        {
            char e1[300], e2[200];
            printf("%-8.0f %-22s %16s  %-10s %s\n",
                   cJSON_GetObjectItemCaseSensitive(r, "id")->valuedouble, kr_cli_jstr(r, "at"),
                   kr_cli_jstr(r, "amount"), kr_esc(kr_cli_jstr(r, "reason"), e1, sizeof e1),
                   kr_esc(kr_cli_jstr(r, "request_id"), e2, sizeof e2));
        }
        goto out;
    } else {
        cJSON_Delete(p);
        kr_cli_errf("%s", usage);
        rc = 2;
        goto out;
    }
    char what[40];
    kr_snprintf(what, sizeof what, "credits %s", a.pos[0]);
    if ((rc = kr_cli_op(&c, op, what, p, &out))) goto out;
    char e1[200];
    printf("org %s: balance %s, overage cap %s, available %s%s\n",
           kr_esc(kr_cli_jstr(out, "org"), e1, sizeof e1), kr_cli_jstr(out, "balance"),
           kr_cli_jstr(out, "overage_cap"), kr_cli_jstr(out, "available"),
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(out, "refusing"))
               ? " (requests are refused with 402)"
               : "");
out:
    cJSON_Delete(out);
    kr_cli_free(&c);
    return rc;
}

/* ---- limits ---- */

int kr_cmd_limits(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--org", true, "org scope"},
                                  {"--ws", true, "workspace scope (ORG/NAME)"},
                                  {"--rpm", true, "requests per minute (0 = unlimited)"},
                                  {"--tpm", true, "tokens per minute (0 = unlimited)"},
                                  {"--models", true, "allow-list: comma-separated models or aliases; '' clears"}};
    const char *usage = "usage: keyrail limits set (--org ORG | --ws ORG/NAME) [--rpm N] [--tpm N] [--models M,M]\n"
                        "       keyrail limits show (--org ORG | --ws ORG/NAME)\n\n"
                        "A workspace is bound by its own limits and its org's; with allow-lists on\n"
                        "both, it may use the models on both. No allow-list: every priced platform model.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos != 1 || (strcmp(a.pos[0], "set") && strcmp(a.pos[0], "show")))
        return kr_cli_errf("%s", usage), 2;
    const char *org = kr_arg(&a, "--org"), *ws = kr_arg(&a, "--ws");
    if (!!org == !!ws) return kr_cli_errf("give exactly one of --org ORG or --ws ORG/NAME"), 2;
    bool set = !strcmp(a.pos[0], "set");
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    int rc = 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    char label[200];
    if (org) {
        cJSON_AddStringToObject(p, "org", org);
        kr_snprintf(label, sizeof label, "org %s", org);
    } else {
        if (kr_cli_ws_ref(&c, "limits", ws, p, "ws")) {
            cJSON_Delete(p);
            goto out;
        }
        kr_snprintf(label, sizeof label, "workspace %s", ws);
    }
    if (set) {
        const char *names[2] = {"--rpm", "--tpm"};
        for (int i = 0; i < 2; i++) {
            const char *v = kr_arg(&a, names[i]);
            uint64_t x;
            if (!v) continue;
            if (kr_parse_u64(v, strlen(v), &x) || x > (uint64_t)INT64_MAX / 2) {
                cJSON_Delete(p);
                kr_cli_errf("%s takes a number", names[i]);
                goto out;
            }
            cJSON_AddNumberToObject(p, names[i] + 2, (double)x);
        }
        const char *sm = kr_arg(&a, "--models");
        if (sm) {
            cJSON *m = cJSON_AddArrayToObject(p, "models");
            char *copy = kr_strdup(sm), *save = NULL;
            for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
                cJSON_AddItemToArray(m, cJSON_CreateString(t));
            free(copy);
        }
    }
    const char *op = set ? (org ? "limits.set" : "ws.limits.set") : (org ? "limits.show" : "ws.limits.show");
    char what[40];
    kr_snprintf(what, sizeof what, "limits %s", a.pos[0]);
    if ((rc = kr_cli_op(&c, op, what, p, &out))) goto out;
    double rpm = cJSON_GetObjectItemCaseSensitive(out, "rpm")->valuedouble;
    double tpm = cJSON_GetObjectItemCaseSensitive(out, "tpm")->valuedouble;
    char rs[32] = "unlimited", ts[32] = "unlimited", el[400];
    if (rpm > 0) snprintf(rs, sizeof rs, "%.0f", rpm);
    if (tpm > 0) snprintf(ts, sizeof ts, "%.0f", tpm);
    printf("%s: rpm %s, tpm %s, models ", kr_esc(label, el, sizeof el), rs, ts);
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(out, "models"), *m;
    if (!cJSON_GetArraySize(models)) printf("(every priced platform model)");
    int i = 0;
    cJSON_ArrayForEach(m, models)
    {
        char em[600];
        printf("%s%s", i++ ? "," : "", kr_esc(m->valuestring, em, sizeof em));
    }
    printf("\n");
out:
    cJSON_Delete(out);
    kr_cli_free(&c);
    return rc;
}

/* ---- usage ---- */

int kr_cmd_usage(int argc, char **argv)
{
    static const kr_opt opts[] = {KR_COMMON_OPTS,
                                  {"--org", true, "only this org"},
                                  {"--ws", true, "only this workspace (ORG/NAME)"},
                                  {"--model", true, "only this model"},
                                  {"--from", true, "first day, YYYY-MM-DD (UTC)"},
                                  {"--to", true, "last day, YYYY-MM-DD (UTC)"},
                                  {"--by", true, "group by: org,workspace,model,route,day (default: all five)"},
                                  {"--format", true, "table (default) or csv"}};
    const char *usage = "usage: keyrail usage [--org ORG] [--ws ORG/NAME] [--model M] [--from DAY] "
                        "[--to DAY] [--by org,workspace,model,route,day] [--format table|csv]\n\n"
                        "Tokens and cost from the daily rollup of the usage ledger. route is platform\n"
                        "(debited from the org's credits) or byok (the org's own key through keyrail's\n"
                        "proxy: metered and priced at list price for information, never debited).";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos) return kr_cli_errf("%s", usage), 2;
    const char *fmt = kr_arg(&a, "--format") ? kr_arg(&a, "--format") : "table";
    if (strcmp(fmt, "table") && strcmp(fmt, "csv")) return kr_cli_errf("--format is table or csv"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    cJSON *p = cJSON_CreateObject(), *out = NULL;
    static const char *const map[][2] = {{"--org", "org"},   {"--ws", "workspace"}, {"--model", "model"},
                                         {"--from", "from"}, {"--to", "to"},        {"--by", "by"}};
    for (size_t i = 0; i < N(map); i++)
        if (kr_arg(&a, map[i][0])) cJSON_AddStringToObject(p, map[i][1], kr_arg(&a, map[i][0]));
    int rc = kr_cli_op(&c, "usage", "usage", p, &out);
    if (rc) goto out;
    bool csv = !strcmp(fmt, "csv");
    const cJSON *cols = cJSON_GetObjectItemCaseSensitive(out, "columns"), *col;
    int i = 0;
    cJSON_ArrayForEach(col, cols) printf(csv ? "%s%s" : "%s%-18s", i++ ? (csv ? "," : " ") : "", col->valuestring);
    printf("\n");
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(out, "rows"))
    {
        i = 0;
        cJSON_ArrayForEach(col, cols)
        {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, col->valuestring);
            char cell[600];
            if (cJSON_IsNumber(v)) snprintf(cell, sizeof cell, "%.0f", v->valuedouble);
            else kr_esc(cJSON_IsString(v) ? v->valuestring : "", cell, sizeof cell); /* names: escaped */
            if (i) putchar(csv ? ',' : ' ');
            i++;
            if (csv && strpbrk(cell, ",\"")) { /* RFC 4180 quoting */
                putchar('"');
                for (const char *q = cell; *q; q++) {
                    if (*q == '"') putchar('"');
                    putchar(*q);
                }
                putchar('"');
                continue;
            }
            printf(csv ? "%s" : "%-18s", cell);
        }
        printf("\n");
    }
out:
    cJSON_Delete(out);
    kr_cli_free(&c);
    return rc;
}
