/*
 * openapi.c -- the OpenAPI 3.1 document of the admin API, generated from
 * the operations table (src/ops/ops.c): what is implemented is what is
 * described. The session routes and this document are the only routes not
 * in the table. x-keyrail-scope says who may call an operation (operator,
 * org, any-admin); the access-matrix test reads it.
 */
#include "admin/admin.h"
#include "ops/ops.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *schema_of(kr_param_type t)
{
    cJSON *s = cJSON_CreateObject();
    switch (t) {
    case KR_P_STR: cJSON_AddStringToObject(s, "type", "string"); break;
    case KR_P_INT: cJSON_AddStringToObject(s, "type", "integer"); break;
    case KR_P_BOOL: cJSON_AddStringToObject(s, "type", "boolean"); break;
    case KR_P_LIST:
        cJSON_AddStringToObject(s, "type", "array");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(s, "items"), "type", "string");
        break;
    case KR_P_OBJECT:
        cJSON_AddStringToObject(s, "type", "object");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(s, "additionalProperties"), "type", "string");
        break;
    }
    return s;
}

static cJSON *json_response(const char *description, const char *ref)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "description", description);
    cJSON *sch = cJSON_AddObjectToObject(cJSON_AddObjectToObject(cJSON_AddObjectToObject(r, "content"),
                                                                 "application/json"),
                                         "schema");
    if (ref) cJSON_AddStringToObject(sch, "$ref", ref);
    else cJSON_AddStringToObject(sch, "type", "object");
    return r;
}

static const char *scope_name(kr_ops_scope s)
{
    return s == KR_OPS_OPERATOR ? "operator" : s == KR_OPS_ORG ? "org" : "any-admin";
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
}

static cJSON *operation(const kr_op *op)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "operationId", op->name);
    cJSON_AddStringToObject(o, "summary", op->summary);
    cJSON_AddStringToObject(o, "x-keyrail-scope", scope_name(op->scope));
    cJSON_AddBoolToObject(o, "x-keyrail-mutates", op->mutates);
    cJSON *params = cJSON_AddArrayToObject(o, "parameters");
    cJSON *body = NULL, *req = NULL;
    for (size_t i = 0; i < op->nparams; i++) {
        const kr_op_param *p = &op->params[i];
        if (p->in == KR_IN_BODY) {
            if (!body) {
                cJSON *rb = cJSON_AddObjectToObject(o, "requestBody");
                cJSON_AddBoolToObject(rb, "required", true);
                body = cJSON_AddObjectToObject(
                    cJSON_AddObjectToObject(cJSON_AddObjectToObject(rb, "content"), "application/json"),
                    "schema");
                cJSON_AddStringToObject(body, "type", "object");
                cJSON_AddBoolToObject(body, "additionalProperties", false);
                req = cJSON_AddArrayToObject(body, "required");
                cJSON_AddObjectToObject(body, "properties");
            }
            cJSON *s = schema_of(p->type);
            cJSON_AddStringToObject(s, "description", p->help);
            if (!strcmp(p->name, "value")) cJSON_AddBoolToObject(s, "writeOnly", true);
            cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(body, "properties"), p->name, s);
            if (p->required) cJSON_AddItemToArray(req, cJSON_CreateString(p->name));
            continue;
        }
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "name", p->name);
        cJSON_AddStringToObject(q, "in", p->in == KR_IN_PATH ? "path" : "query");
        cJSON_AddBoolToObject(q, "required", p->in == KR_IN_PATH || p->required);
        cJSON_AddStringToObject(q, "description", p->help);
        cJSON_AddItemToObject(q, "schema", schema_of(p->type));
        cJSON_AddItemToArray(params, q);
    }
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "name", "Idempotency-Key");
    cJSON_AddStringToObject(h, "in", "header");
    cJSON_AddBoolToObject(h, "required", false);
    cJSON_AddStringToObject(h, "description", "a repeat with the same key returns the first response");
    cJSON_AddItemToObject(h, "schema", schema_of(KR_P_STR));
    if (op->creates) cJSON_AddItemToArray(params, h);
    else cJSON_Delete(h);
    cJSON *resp = cJSON_AddObjectToObject(o, "responses");
    char code[8];
    snprintf(code, sizeof code, "%d", op->ok_status);
    cJSON_AddItemToObject(resp, code, json_response(op->list ? "a page: items and next_cursor" : "the result",
                                                    op->list ? "#/components/schemas/Page" : NULL));
    cJSON_AddItemToObject(resp, "4XX", json_response("an error", "#/components/schemas/Error"));
    cJSON_AddItemToObject(resp, "5XX", json_response("an error", "#/components/schemas/Error"));
    return o;
}

static cJSON *plain(const char *id, const char *summary, bool auth)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "operationId", id);
    cJSON_AddStringToObject(o, "summary", summary);
    cJSON_AddStringToObject(o, "x-keyrail-scope", auth ? "any-admin" : "public");
    if (!auth) cJSON_AddItemToObject(o, "security", cJSON_CreateArray());
    cJSON *resp = cJSON_AddObjectToObject(o, "responses");
    cJSON_AddItemToObject(resp, "200", json_response("the result", NULL));
    cJSON_AddItemToObject(resp, "4XX", json_response("an error", "#/components/schemas/Error"));
    return o;
}

void kr_admin_openapi(kr_buf *out)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "openapi", "3.1.0");
    cJSON *info = cJSON_AddObjectToObject(d, "info");
    cJSON_AddStringToObject(info, "title", "keyrail admin API");
    cJSON_AddStringToObject(info, "version", "1");
    cJSON_AddStringToObject(info, "description",
                            "The operations of keyrail's control plane (the same the command line "
                            "runs), for operators and org admins. See docs/ADMIN-API.md.");
    cJSON *srv = cJSON_CreateObject();
    cJSON_AddStringToObject(srv, "url", "/admin/v1");
    cJSON *servers = cJSON_AddArrayToObject(d, "servers");
    cJSON_AddItemToArray(servers, srv);
    cJSON *sec = cJSON_AddArrayToObject(d, "security");
    cJSON *s1 = cJSON_CreateObject(), *s2 = cJSON_CreateObject();
    cJSON_AddArrayToObject(s1, "adminToken");
    cJSON_AddArrayToObject(s2, "session");
    cJSON_AddItemToArray(sec, s1);
    cJSON_AddItemToArray(sec, s2);
    cJSON *comp = cJSON_AddObjectToObject(d, "components");
    cJSON *ss = cJSON_AddObjectToObject(comp, "securitySchemes");
    cJSON *at = cJSON_AddObjectToObject(ss, "adminToken");
    cJSON_AddStringToObject(at, "type", "http");
    cJSON_AddStringToObject(at, "scheme", "bearer");
    cJSON_AddStringToObject(at, "description", "an admin token, kradm_…");
    cJSON *se = cJSON_AddObjectToObject(ss, "session");
    cJSON_AddStringToObject(se, "type", "apiKey");
    cJSON_AddStringToObject(se, "in", "cookie");
    cJSON_AddStringToObject(se, "name", "kr_session");
    cJSON_AddStringToObject(se, "description",
                            "the console's session (POST /session); mutations also need the "
                            "X-CSRF-Token header");
    cJSON *schemas = cJSON_AddObjectToObject(comp, "schemas");
    cJSON *err = cJSON_Parse(
        "{\"type\":\"object\",\"required\":[\"error\",\"request_id\"],\"properties\":{\"error\":"
        "{\"type\":\"object\",\"required\":[\"code\",\"message\"],\"properties\":{\"code\":{"
        "\"type\":\"string\",\"description\":\"stable: FORBIDDEN_KEY, MISSING_MODEL, "
        "SECRET_UNREADABLE, DENIED, NOTFOUND, …\"},\"message\":{\"type\":\"string\"}}},"
        "\"request_id\":{\"type\":\"string\"}}}");
    cJSON_AddItemToObject(schemas, "Error", err);
    cJSON_AddItemToObject(schemas, "Page",
                          cJSON_Parse("{\"type\":\"object\",\"required\":[\"items\",\"next_cursor\"],"
                                      "\"properties\":{\"items\":{\"type\":\"array\"},"
                                      "\"next_cursor\":{\"type\":[\"string\",\"null\"]}}}"));
    cJSON *paths = cJSON_AddObjectToObject(d, "paths");
    size_t n;
    const kr_op *ops = kr_ops_table(&n);
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].method) continue; /* command line only */
        cJSON *pi = cJSON_GetObjectItemCaseSensitive(paths, ops[i].path);
        if (!pi) pi = cJSON_AddObjectToObject(paths, ops[i].path);
        char m[16];
        kr_strlcpy(m, ops[i].method, sizeof m);
        lower(m);
        cJSON_AddItemToObject(pi, m, operation(&ops[i]));
    }
    cJSON *sp = cJSON_AddObjectToObject(paths, "/session");
    cJSON *post = plain("session.create", "Sign in with an admin token: sets the session cookie",
                        false);
    cJSON *rb = cJSON_AddObjectToObject(post, "requestBody");
    cJSON_AddItemToObject(
        cJSON_AddObjectToObject(cJSON_AddObjectToObject(rb, "content"), "application/json"),
        "schema",
        cJSON_Parse("{\"type\":\"object\",\"required\":[\"token\"],\"properties\":{\"token\":"
                    "{\"type\":\"string\",\"writeOnly\":true}}}"));
    cJSON_AddItemToObject(sp, "post", post);
    cJSON_AddItemToObject(sp, "get", plain("session.get", "Who is signed in (and the CSRF token)", true));
    cJSON_AddItemToObject(sp, "delete", plain("session.delete", "Sign out", true));
    cJSON *op = cJSON_AddObjectToObject(paths, "/openapi.json");
    cJSON_AddItemToObject(op, "get", plain("openapi", "This document", false));
    char *s = cJSON_PrintUnformatted(d);
    kr_buf_puts(out, s ? s : "{}");
    free(s);
    cJSON_Delete(d);
}
