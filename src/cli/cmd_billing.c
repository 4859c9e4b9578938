/*
 * cmd_billing.c -- operator commands for what the proxy enforces and
 * records: `keyrail credits`, `keyrail limits`, `keyrail usage`.
 * Amounts are in currency units with up to six decimals (micro-units
 * internally).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void money(int64_t micros, char *out, size_t cap)
{
    const char *sign = micros < 0 ? "-" : "";
    uint64_t m = micros < 0 ? (uint64_t)(-(micros + 1)) + 1 : (uint64_t)micros;
    snprintf(out, cap, "%s%llu.%06llu", sign, (unsigned long long)(m / 1000000),
             (unsigned long long)(m % 1000000));
}

static int parse_money(const char *s, int64_t *out)
{
    bool neg = s[0] == '-';
    int64_t v;
    if (kr_parse_micros(s + neg, strlen(s + neg), &v)) return -1;
    *out = neg ? -v : v;
    return 0;
}

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
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    kr_org o;
    int e = kr_org_find(c.st, a.pos[1], &o, &d);
    if (e) {
        kr_cli_errf("credits: %s", kr_diag_msg(&d, e));
        goto out;
    }
    if ((!strcmp(a.pos[0], "add") || !strcmp(a.pos[0], "cap")) && a.npos == 3) {
        int64_t amt;
        if (parse_money(a.pos[2], &amt)) {
            kr_cli_errf("AMOUNT '%s' is not a decimal like 10 or 12.50", a.pos[2]);
            goto out;
        }
        if (!strcmp(a.pos[0], "add")) {
            const char *reason = kr_arg(&a, "--reason") ? kr_arg(&a, "--reason") : "topup";
            e = kr_credits_add(c.st, o.id, amt, reason, &d);
        } else {
            if (amt < 0) {
                kr_cli_errf("a cap cannot be negative");
                goto out;
            }
            e = kr_credits_set_cap(c.st, o.id, amt, &d);
        }
        if (e) {
            kr_cli_errf("credits %s: %s", a.pos[0], kr_diag_msg(&d, e));
            goto out;
        }
    } else if (!strcmp(a.pos[0], "history") && a.npos == 2) {
        uint64_t lim = 20;
        if (kr_arg(&a, "--limit") && kr_parse_u64(kr_arg(&a, "--limit"), strlen(kr_arg(&a, "--limit")), &lim)) {
            kr_cli_errf("--limit takes a number");
            goto out;
        }
        kr_ledger_row *rows;
        size_t n;
        if ((e = kr_credits_history(c.st, o.id, (size_t)lim, &rows, &n, &d))) {
            kr_cli_errf("credits history: %s", kr_diag_msg(&d, e));
            goto out;
        }
        printf("%-8s %-22s %16s  %-10s %s\n", "ID", "WHEN", "AMOUNT", "REASON", "REQUEST");
        for (size_t i = 0; i < n; i++) {
            char m[40], t[32];
            money(rows[i].delta_micros, m, sizeof m);
            time_t tt = (time_t)(rows[i].created_at / 1000);
            struct tm tm;
            gmtime_r(&tt, &tm);
            strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
            char e1[300], e2[200];
            printf("%-8lld %-22s %16s  %-10s %s\n", (long long)rows[i].id, t, m,
                   kr_esc(rows[i].reason, e1, sizeof e1),
                   rows[i].request_id[0] ? kr_esc(rows[i].request_id, e2, sizeof e2) : "-");
        }
        free(rows);
        rc = 0;
        goto out;
    } else if (!(!strcmp(a.pos[0], "show") && a.npos == 2)) {
        kr_cli_errf("%s", usage);
        rc = 2;
        goto out;
    }
    int64_t bal, cap;
    if ((e = kr_credits_get(c.st, o.id, &bal, &cap, &d))) {
        kr_cli_errf("credits: %s", kr_diag_msg(&d, e));
        goto out;
    }
    char b1[40], b2[40], b3[40];
    money(bal, b1, sizeof b1);
    money(cap, b2, sizeof b2);
    money(bal + cap, b3, sizeof b3);
    printf("org %s: balance %s, overage cap %s, available %s%s\n", o.slug, b1, b2, b3,
           bal + cap > 0 ? "" : " (requests are refused with 402)");
    rc = 0;
out:
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
    if (a.npos != 1) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    kr_scope scope = KR_SCOPE_ORG;
    int64_t owner = 0;
    char label[200];
    if (kr_cli_scope(&c, &a, &scope, &owner, label, sizeof label)) goto out;
    int64_t rpm, tpm;
    int e = kr_limits_get(c.st, scope, owner, &rpm, &tpm, &d);
    if (e) {
        kr_cli_errf("limits: %s", kr_diag_msg(&d, e));
        goto out;
    }
    if (!strcmp(a.pos[0], "set")) {
        const char *sr = kr_arg(&a, "--rpm"), *st = kr_arg(&a, "--tpm"), *sm = kr_arg(&a, "--models");
        uint64_t v;
        if (sr) {
            if (kr_parse_u64(sr, strlen(sr), &v) || v > (uint64_t)INT64_MAX) {
                kr_cli_errf("--rpm takes a number");
                goto out;
            }
            rpm = (int64_t)v;
        }
        if (st) {
            if (kr_parse_u64(st, strlen(st), &v) || v > (uint64_t)INT64_MAX) {
                kr_cli_errf("--tpm takes a number");
                goto out;
            }
            tpm = (int64_t)v;
        }
        if ((sr || st) && (e = kr_limits_set(c.st, scope, owner, rpm, tpm, &d))) {
            kr_cli_errf("limits set: %s", kr_diag_msg(&d, e));
            goto out;
        }
        if (sm) {
            if (kr_cli_registry(&c)) goto out;
            char *copy = kr_strdup(sm), *save = NULL;
            const char *list[64];
            size_t n = 0;
            for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
                const kr_model *m = kr_registry_model(c.reg, t);
                if (!m) {
                    kr_cli_errf("model '%s' is not in the registry", t);
                    free(copy);
                    goto out;
                }
                if (n == 64) {
                    kr_cli_errf("at most 64 models");
                    free(copy);
                    goto out;
                }
                list[n++] = m->id; /* aliases resolve to the canonical id */
            }
            e = kr_allow_set(c.st, scope, owner, list, n, &d);
            free(copy);
            if (e) {
                kr_cli_errf("limits set: %s", kr_diag_msg(&d, e));
                goto out;
            }
        }
    } else if (strcmp(a.pos[0], "show")) {
        kr_cli_errf("%s", usage);
        rc = 2;
        goto out;
    }
    char **models;
    size_t nm;
    if ((e = kr_allow_get(c.st, scope, owner, &models, &nm, &d))) {
        kr_cli_errf("limits: %s", kr_diag_msg(&d, e));
        goto out;
    }
    char rs[32] = "unlimited", ts[32] = "unlimited";
    if (rpm) snprintf(rs, sizeof rs, "%lld", (long long)rpm);
    if (tpm) snprintf(ts, sizeof ts, "%lld", (long long)tpm);
    printf("%s: rpm %s, tpm %s, models ", label, rs, ts);
    if (!nm) printf("(every priced platform model)");
    for (size_t i = 0; i < nm; i++) {
        char em[600];
        printf("%s%s", i ? "," : "", kr_esc(models[i], em, sizeof em));
    }
    printf("\n");
    kr_strv_free(models, nm);
    rc = 0;
out:
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
                                  {"--by", true, "group by: org,workspace,model,day (default org,workspace,model,day)"},
                                  {"--format", true, "table (default) or csv"}};
    const char *usage = "usage: keyrail usage [--org ORG] [--ws ORG/NAME] [--model M] [--from DAY] "
                        "[--to DAY] [--by org,workspace,model,day] [--format table|csv]\n\n"
                        "Tokens and cost from the daily rollup of the usage ledger.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, N(opts), argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos) return kr_cli_errf("%s", usage), 2;
    const char *fmt = kr_arg(&a, "--format") ? kr_arg(&a, "--format") : "table";
    if (strcmp(fmt, "table") && strcmp(fmt, "csv")) return kr_cli_errf("--format is table or csv"), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a) || kr_cli_store(&c)) return 1;
    int rc = 1;
    kr_diag d = {{0}};
    kr_usage_filter f = {0};
    f.model = kr_arg(&a, "--model");
    f.from_day = kr_arg(&a, "--from");
    f.to_day = kr_arg(&a, "--to");
    int e;
    if (kr_arg(&a, "--org")) {
        kr_org o;
        if ((e = kr_org_find(c.st, kr_arg(&a, "--org"), &o, &d))) {
            kr_cli_errf("usage: %s", kr_diag_msg(&d, e));
            goto out;
        }
        f.org_id = o.id;
    }
    if (kr_arg(&a, "--ws")) {
        kr_workspace w;
        if ((e = kr_ws_find(c.st, kr_arg(&a, "--ws"), &w, &d))) {
            kr_cli_errf("usage: %s", kr_diag_msg(&d, e));
            goto out;
        }
        f.workspace_id = w.id;
    }
    const char *by = kr_arg(&a, "--by") ? kr_arg(&a, "--by") : "org,workspace,model,day";
    kr_dbres r;
    if ((e = kr_usage_report(c.st, &f, by, &r, &d))) {
        kr_cli_errf("usage: %s", kr_diag_msg(&d, e));
        goto out;
    }
    /* header: the grouping columns in table order, then the sums */
    const char *names[10];
    size_t nn = 0;
    static const char *const order[] = {"org", "workspace", "model", "day"};
    for (size_t i = 0; i < 4; i++) {
        const char *p = strstr(by, order[i]);
        size_t l = strlen(order[i]);
        if (p && (p == by || p[-1] == ',') && (p[l] == 0 || p[l] == ',')) names[nn++] = order[i];
    }
    static const char *const sums[] = {"requests", "input_tokens", "output_tokens", "cache_read_tokens",
                                       "cache_write_tokens", "cost"};
    for (size_t i = 0; i < 6; i++) names[nn++] = sums[i];
    bool csv = !strcmp(fmt, "csv");
    for (size_t i = 0; i < nn; i++)
        printf(csv ? "%s%s" : "%s%-18s", i ? (csv ? "," : " ") : "", names[i]);
    printf("\n");
    for (size_t row = 0; row < r.nrows; row++) {
        if (!kr_dbres_get(&r, row, r.ncols - 6)) continue; /* no rows at all */
        for (size_t col = 0; col < r.ncols; col++) {
            char cell[600];
            const char *v = kr_dbres_get(&r, row, col);
            if (col == r.ncols - 1) {
                money(kr_dbres_int(&r, row, col), cell, sizeof cell);
                v = cell;
            } else {
                v = kr_esc(v ? v : "", cell, sizeof cell); /* names and models: shown escaped */
            }
            if (csv && strpbrk(v, ",\"")) { /* RFC 4180 quoting */
                if (col) putchar(',');
                putchar('"');
                for (const char *p = v; *p; p++) {
                    if (*p == '"') putchar('"');
                    putchar(*p);
                }
                putchar('"');
                continue;
            }
            printf(csv ? "%s%s" : "%s%-18s", col ? (csv ? "," : " ") : "", v);
        }
        printf("\n");
    }
    kr_dbres_free(&r);
    rc = 0;
out:
    kr_cli_free(&c);
    return rc;
}
