/*
 * console.c -- the web console's assets, built into the binary from
 * src/admin/console/ (scripts/embed.py): one binary to deploy. Plain HTML,
 * CSS and ES modules; no inline script (the Content-Security-Policy admin
 * responses carry forbids it).
 */
#include "admin/admin.h"

#include <string.h>

extern const char kr_console_index_html[], kr_console_app_js[], kr_console_app_css[],
    kr_console_api_js[], kr_console_dom_js[], kr_console_chart_js[], kr_console_pages_org_js[],
    kr_console_pages_billing_js[], kr_console_pages_usage_js[], kr_console_pages_admin_js[];

#define JS "text/javascript; charset=utf-8"

static const struct {
    const char *path;
    const char *data;
    const char *ctype;
} assets[] = {
    {"/console", kr_console_index_html, "text/html; charset=utf-8"},
    {"/console/", kr_console_index_html, "text/html; charset=utf-8"},
    {"/console/index.html", kr_console_index_html, "text/html; charset=utf-8"},
    {"/console/app.css", kr_console_app_css, "text/css; charset=utf-8"},
    {"/console/app.js", kr_console_app_js, JS},
    {"/console/api.js", kr_console_api_js, JS},
    {"/console/dom.js", kr_console_dom_js, JS},
    {"/console/chart.js", kr_console_chart_js, JS},
    {"/console/pages_org.js", kr_console_pages_org_js, JS},
    {"/console/pages_billing.js", kr_console_pages_billing_js, JS},
    {"/console/pages_usage.js", kr_console_pages_usage_js, JS},
    {"/console/pages_admin.js", kr_console_pages_admin_js, JS},
};

const char *kr_console_asset(const char *path, size_t plen, size_t *len, const char **ctype)
{
    for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++)
        if (strlen(assets[i].path) == plen && !memcmp(assets[i].path, path, plen)) {
            *len = strlen(assets[i].data);
            *ctype = assets[i].ctype;
            return assets[i].data;
        }
    return NULL;
}
