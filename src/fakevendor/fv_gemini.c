/*
 * fv_gemini.c -- the fake vendor's Google Gemini API (the Generative
 * Language API, generativelanguage.googleapis.com shapes): generateContent,
 * streamGenerateContent (SSE with alt=sse, else a JSON array), countTokens,
 * the model list and one model, Google-shaped errors.  See fv.h (ENDPOINTS,
 * DETERMINISM, OVERRIDES, SCRIPTED TOOL CALLS, FAULT MODES, RECORD) for what
 * it shares with the other protocols.
 *
 * GEMINI API, the real API's shapes (checked against the official
 * @google/genai 3.6.1 SDK and Gemini CLI 0.61.0):
 *   Paths: .../v1beta/models/{model}:ACTION and .../v1/models/{model}:ACTION,
 *   ACTION generateContent, streamGenerateContent (POST) or countTokens
 *   (POST); GET .../v1beta/models and GET .../v1beta/models/{model}, and
 *   the same under v1 when the request carries a Google credential
 *   (x-goog-api-key, ?key= or a ya29. OAuth token; without one GET
 *   .../v1/models is the OpenAI / Anthropic list and .../v1/models/{model}
 *   a 404, as before).  @google/genai 3.6.1 defaults to apiVersion v1.  The
 *   model is the path's, never the body's; any model is served, but GET of
 *   one model knows only the list's (else 404).  Another action or method
 *   on such a path, and any other path with a /v1beta/ segment, is a
 *   Google-shaped 404.
 *   Credentials: x-goog-api-key: KEY, ?key=KEY (percent-decoded) or
 *   Authorization: Bearer TOKEN (Google OAuth), recorded (auth_header
 *   "x-goog-api-key", "query-key", "authorization"); none is checked.
 *   GenerateContentResponse (the non-stream body, and every stream chunk):
 *     {"candidates":[{"content":{"parts":[PART],"role":"model"},
 *      "finishReason":"STOP"|"MAX_TOKENS","index":0}],
 *      "usageMetadata":USAGE,"modelVersion":MODEL,
 *      "responseId":"gem_fake_<seq>"}
 *   PART: {"text":REPLY}, or the scripted tool call {"functionCall":
 *     {"name":NAME,"args":{"command":CMD}}} (run_shell_command is Gemini
 *     CLI's shell tool; its parameter is "command"), finishReason "STOP"
 *     like a text reply, as the real API does.
 *   USAGE (zero counts are left out, as the real API's proto3 JSON does,
 *   except promptTokenCount and totalTokenCount):
 *     {"promptTokenCount": IN + cache_read,
 *      "candidatesTokenCount": OUT - REASONING,
 *      "totalTokenCount": prompt + candidates + thoughts + toolUsePrompt,
 *      "cachedContentTokenCount": cache_read,
 *      "promptTokensDetails":[{"modality":"TEXT","tokenCount": prompt}],
 *      "cacheTokensDetails":[{"modality":"TEXT","tokenCount": cache_read}],
 *      "toolUsePromptTokenCount": TOOL_USE_PROMPT (tool_use_prompt=),
 *      "thoughtsTokenCount": REASONING}
 *   Stream: T = max(N, 1) chunks.  With alt=sse: text/event-stream, each
 *   chunk "data: " + GenerateContentResponse + "\r\n\r\n" (Google's
 *   separator; the SDK splits on \n\n, \r\r or \r\n\r\n), no [DONE].  Without
 *   alt (or alt=json): application/json, the chunks as one JSON array sent
 *   as it goes, "[" CHUNK, then "\n,\r\n" CHUNK each, "\n]" after the last;
 *   any other alt is a 400.  Chunk k (0-based) carries the reply's piece k
 *   (N pieces as in DETERMINISM; with N = 0 one chunk with "" text) and
 *   usageMetadata as running totals, the way the real API does:
 *   promptTokenCount, cachedContentTokenCount, toolUsePromptTokenCount and
 *   thoughtsTokenCount whole on every chunk, candidatesTokenCount
 *   floor(C * (k+1) / T) with C = OUT - REASONING (so C on the last),
 *   totalTokenCount their sum.  Only the last chunk has finishReason.  A
 *   scripted tool call is never split (the Gemini API has no partial
 *   arguments): the last chunk carries the whole functionCall part, the T-1
 *   before it a content with no parts ({"role":"model"}), which Gemini CLI
 *   takes as valid and skips.
 *   countTokens: {"totalTokens": IN + cache_read, "cachedContentTokenCount":
 *     cache_read (when > 0), "promptTokensDetails":[...], "cacheTokensDetails"
 *     (when cache_read > 0)}; its record serves input IN.
 *   Models: {"models":[MODEL...]} (one page, no nextPageToken): gemini-2.5-pro,
 *   gemini-2.5-flash, gemini-2.5-flash-lite, gemini-3-pro-preview,
 *   gemini-3-flash-preview, gemini-3.1-pro-preview, gemini-3.1-flash-lite,
 *   gemini-3.5-flash, gemini-3.5-flash-lite (Gemini CLI 0.61.0's defaults
 *   among them), MODEL
 *   {"name":"models/<id>","version","displayName","description",
 *   "inputTokenLimit","outputTokenLimit","supportedGenerationMethods",
 *   "temperature","topP","topK","maxTemperature","thinking"}.
 *   Errors: {"error":{"code":S,"message":MSG,"status":NAME}}, NAME per HTTP
 *   status (400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403
 *   PERMISSION_DENIED, 404 NOT_FOUND, 409 ABORTED, 429 RESOURCE_EXHAUSTED,
 *   499 CANCELLED, 500 INTERNAL, 501 UNIMPLEMENTED, 503 UNAVAILABLE, 504
 *   DEADLINE_EXCEEDED; other 4xx INVALID_ARGUMENT, other 5xx INTERNAL); a
 *   429 adds "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo",
 *   "retryDelay":"1s"}] (Gemini CLI retries after it), as well as the
 *   retry-after header.
 *   Body fields read (camelCase or snake_case, as Google's parser takes):
 *   generationConfig.maxOutputTokens (the output limit, recorded as
 *   max_tokens; OUT above it is clamped, finishReason "MAX_TOKENS"), "tools"
 *   elements' functionDeclarations (declared tools) and "contents" parts'
 *   functionResponse (a tool result); see SCRIPTED TOOL CALLS in fv.h.
 *   Gemini CLI 0.61.0 (checked by hand: GEMINI_API_KEY, GOOGLE_GEMINI_BASE_URL
 *   = the vendor's URL, settings security.auth.selectedType "gemini-api-key"
 *   -- the base URL alone selects its "gateway" auth, which -p refuses)
 *   calls .../v1beta/models/{model}:streamGenerateContent?alt=sse with
 *   x-goog-api-key; with tool= it runs the command from the functionCall,
 *   sends the output back as a functionResponse part in a "user" content and
 *   prints the text reply.  Its model router first makes generateContent
 *   calls without tools expecting JSON; the text reply fails them and it
 *   falls back to its default model, no harm done.
 */

#include "fv.h"

/* ------------------------------------------------------------------------ */
/* Models                                                                    */

#define GEM_METHODS                                                                                \
    "\"supportedGenerationMethods\":[\"generateContent\",\"countTokens\","                         \
    "\"createCachedContent\",\"batchGenerateContent\"],\"temperature\":1,\"topP\":0.95,"           \
    "\"topK\":64,\"maxTemperature\":2,\"thinking\":true}"

#define GEM_MODEL(id, ver, disp, desc)                                                             \
    "{\"name\":\"models/" id "\",\"version\":\"" ver "\",\"displayName\":\"" disp "\","            \
    "\"description\":\"" desc                                                                      \
    "\",\"inputTokenLimit\":1048576,\"outputTokenLimit\":65536," GEM_METHODS

#define M_25_PRO                                                                                   \
    GEM_MODEL("gemini-2.5-pro", "2.5", "Gemini 2.5 Pro", "Stable release of Gemini 2.5 Pro")
#define M_25_FLASH                                                                                 \
    GEM_MODEL("gemini-2.5-flash", "001", "Gemini 2.5 Flash", "Stable version of Gemini 2.5 Flash")
#define M_25_LITE                                                                                  \
    GEM_MODEL("gemini-2.5-flash-lite", "2.5", "Gemini 2.5 Flash-Lite",                             \
              "Stable version of Gemini 2.5 Flash-Lite")
#define M_3_PRO_P                                                                                  \
    GEM_MODEL("gemini-3-pro-preview", "3-pro-preview", "Gemini 3 Pro Preview",                     \
              "Gemini 3 Pro Preview")
#define M_3_FLASH_P                                                                                \
    GEM_MODEL("gemini-3-flash-preview", "3-flash-preview", "Gemini 3 Flash Preview",               \
              "Gemini 3 Flash Preview")
#define M_31_PRO_P                                                                                 \
    GEM_MODEL("gemini-3.1-pro-preview", "3.1-pro-preview", "Gemini 3.1 Pro Preview",               \
              "Gemini 3.1 Pro Preview")
#define M_31_LITE                                                                                  \
    GEM_MODEL("gemini-3.1-flash-lite", "3.1", "Gemini 3.1 Flash-Lite", "Gemini 3.1 Flash-Lite")
#define M_35_FLASH GEM_MODEL("gemini-3.5-flash", "3.5", "Gemini 3.5 Flash", "Gemini 3.5 Flash")
#define M_35_LITE                                                                                  \
    GEM_MODEL("gemini-3.5-flash-lite", "3.5", "Gemini 3.5 Flash-Lite", "Gemini 3.5 Flash-Lite")

static const struct {
    const char *id, *json;
} GEM_MODELS[] = {
    {"gemini-2.5-pro", M_25_PRO},
    {"gemini-2.5-flash", M_25_FLASH},
    {"gemini-2.5-flash-lite", M_25_LITE},
    {"gemini-3-pro-preview", M_3_PRO_P},
    {"gemini-3-flash-preview", M_3_FLASH_P},
    {"gemini-3.1-pro-preview", M_31_PRO_P},
    {"gemini-3.1-flash-lite", M_31_LITE},
    {"gemini-3.5-flash", M_35_FLASH},
    {"gemini-3.5-flash-lite", M_35_LITE},
};

static const char MODELS_GEMINI[] =
    "{\"models\":[" M_25_PRO "," M_25_FLASH "," M_25_LITE "," M_3_PRO_P "," M_3_FLASH_P
    "," M_31_PRO_P "," M_31_LITE "," M_35_FLASH "," M_35_LITE "]}";

/* The list's entry for the model named m, or NULL. */
static const char *gem_find_model(const char *m, size_t n)
{
    for (size_t i = 0; i < sizeof GEM_MODELS / sizeof GEM_MODELS[0]; i++)
        if (strlen(GEM_MODELS[i].id) == n && memcmp(GEM_MODELS[i].id, m, n) == 0)
            return GEM_MODELS[i].json;
    return NULL;
}

/* EP_MODEL: GET .../v1beta/models/{model} (gem_request made sure it is
 * one of the list's). */
static void gem_model_body(buf_t *b, const job_t *j)
{
    const char *m = gem_find_model(j->model, j->model_len);
    if (m) buf_str(b, m);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

static const char *gem_status_name(int s)
{
    switch (s) {
    case 400:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 409:
        return "ABORTED";
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 499:
        return "CANCELLED";
    case 500:
        return "INTERNAL";
    case 501:
        return "UNIMPLEMENTED";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return s >= 400 && s < 500 ? "INVALID_ARGUMENT" : s >= 500 ? "INTERNAL" : "UNKNOWN";
    }
}

/* Google's error body (seq is only in the x-request-id header). */
static void gem_error(buf_t *b, int status, uint64_t seq, const char *msg)
{
    (void)seq;
    BUF_LIT(b, "{\"error\":{\"code\":");
    buf_u64(b, (uint64_t)status);
    BUF_LIT(b, ",\"message\":");
    buf_jstr(b, msg, strlen(msg));
    BUF_LIT(b, ",\"status\":\"");
    buf_str(b, gem_status_name(status));
    BUF_LIT(b, "\"");
    if (status == 429)
        BUF_LIT(b, ",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
                   "\"retryDelay\":\"1s\"}]");
    BUF_LIT(b, "}}");
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                   */

typedef struct {
    const char *model, *action; /* action: after the ':', NULL if none */
    size_t model_len, action_len;
    bool v1beta;
} gpath_t;

/* Is the path .../v1beta/models/SEG or .../v1/models/SEG?  SEG is MODEL or
 * MODEL:ACTION. */
static bool gem_split(const char *path, size_t plen, gpath_t *g)
{
    const char *sl = memrchr(path, '/', plen);
    if (!sl) return false;
    size_t pre = (size_t)(sl - path);
    if (fv_path_ends(path, pre, "/v1beta/models"))
        g->v1beta = true;
    else if (fv_path_ends(path, pre, "/v1/models"))
        g->v1beta = false;
    else
        return false;
    const char *seg = sl + 1;
    size_t sn = plen - pre - 1;
    const char *colon = memchr(seg, ':', sn);
    g->model = seg;
    g->model_len = colon ? (size_t)(colon - seg) : sn;
    g->action = colon ? colon + 1 : NULL;
    g->action_len = colon ? sn - g->model_len - 1 : 0;
    return true;
}

static bool act_is(const gpath_t *g, const char *lit)
{
    return g->action && strlen(lit) == g->action_len && memcmp(g->action, lit, g->action_len) == 0;
}

/* Does the request carry a Google credential: x-goog-api-key, ?key= or a
 * Google OAuth access token? */
static bool gem_cred(const fv_target_t *t)
{
    const char *v;
    size_t n;
    return t->req->gkey.present || fv_query_param(t->query, t->qlen, "key", &v, &n) ||
           (t->req->authz.present && t->req->authz.cls == AC_GOOGLE_OAUTH);
}

static int gem_route(const fv_target_t *t)
{
    int method = t->method;
    const char *path = t->path;
    size_t plen = t->plen;
    gpath_t g;
    if (gem_split(path, plen, &g)) {
        if (!g.action) {
            if (!g.v1beta && !gem_cred(t)) /* GET .../v1/models/X: OpenAI's */
                return 0;
            return method == HTTP_GET && g.model_len ? EP_MODEL : EP_404;
        }
        if (!g.model_len) return EP_404;
        if (act_is(&g, "generateContent") || act_is(&g, "streamGenerateContent"))
            return method == HTTP_POST ? EP_GEN : EP_404;
        if (act_is(&g, "countTokens")) return method == HTTP_POST ? EP_COUNT : EP_404;
        return EP_404;
    }
    if (fv_path_ends(path, plen, "/v1beta/models")) return method == HTTP_GET ? EP_MODELS : EP_404;
    if (fv_path_ends(path, plen, "/v1/models") && method == HTTP_GET && gem_cred(t))
        return EP_MODELS; /* else the OpenAI or Anthropic list (fv_core.c) */
    if (memmem(path, plen, "/v1beta/", 8) || fv_path_ends(path, plen, "/v1beta")) return EP_404;
    return 0;
}

/* The request as the path and query say it: the model, streaming and its
 * framing (alt=), the output limit and declared tools from the body's
 * Gemini fields (fv_proto_t.request). */
static int gem_request(const fv_target_t *t, int ep, bodyinfo_t *bi, char *msg, size_t msz)
{
    bi->has_model = false; /* a body's "model", "stream", ... are not Gemini's */
    bi->model_len = 0;
    bi->stream = bi->include_usage = bi->json_array = false;
    bi->max_tokens = bi->gen_max_output;
    bi->has_tools = bi->has_fn_decls;
    gpath_t g;
    if (!gem_split(t->path, t->plen, &g)) /* EP_MODELS */
        return 0;
    bi->model = g.model;
    bi->model_len = g.model_len;
    bi->has_model = true;
    if (ep == EP_MODEL && !gem_find_model(g.model, g.model_len)) {
        snprintf(msg, msz, "models/%.*s is not found for API version %s",
                 (int)(g.model_len < 120 ? g.model_len : 120), g.model, g.v1beta ? "v1beta" : "v1");
        return 404;
    }
    if (ep == EP_GEN && act_is(&g, "streamGenerateContent")) {
        const char *alt = NULL;
        size_t an = 0;
        bi->stream = true;
        bi->json_array = true;
        if (fv_query_param(t->query, t->qlen, "alt", &alt, &an)) {
            if (an == 3 && memcmp(alt, "sse", 3) == 0) {
                bi->json_array = false;
            } else if (!(an == 4 && memcmp(alt, "json", 4) == 0)) {
                snprintf(msg, msz, "fakevendor: alt=%.*s: only alt=sse and alt=json are served",
                         (int)(an < 40 ? an : 40), alt);
                return 400;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Bodies and stream chunks                                                  */

enum { PART_NONE, PART_TEXT, PART_CALL };

/* The prompt's cached share and its per-modality details, after the counts
 * (a usageMetadata's and a countTokens answer's alike). */
static void gem_prompt_details(buf_t *b, const job_t *j, int64_t prompt)
{
    if (j->cr > 0) {
        BUF_LIT(b, ",\"cachedContentTokenCount\":");
        buf_num(b, j->cr);
    }
    if (prompt > 0) {
        BUF_LIT(b, ",\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":");
        buf_num(b, prompt);
        BUF_LIT(b, "}]");
    }
    if (j->cr > 0) {
        BUF_LIT(b, ",\"cacheTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":");
        buf_num(b, j->cr);
        BUF_LIT(b, "}]");
    }
}

static void gem_usage(buf_t *b, const job_t *j, int64_t cand)
{
    int64_t prompt = j->in + j->cr;
    BUF_LIT(b, "\"usageMetadata\":{\"promptTokenCount\":");
    buf_num(b, prompt);
    if (cand > 0) {
        BUF_LIT(b, ",\"candidatesTokenCount\":");
        buf_num(b, cand);
    }
    BUF_LIT(b, ",\"totalTokenCount\":");
    buf_num(b, prompt + cand + j->reasoning + j->tool_use_prompt);
    gem_prompt_details(b, j, prompt);
    if (j->tool_use_prompt > 0) {
        BUF_LIT(b, ",\"toolUsePromptTokenCount\":");
        buf_num(b, j->tool_use_prompt);
    }
    if (j->reasoning > 0) {
        BUF_LIT(b, ",\"thoughtsTokenCount\":");
        buf_num(b, j->reasoning);
    }
    BUF_LIT(b, "}");
}

/* One GenerateContentResponse: the candidate's one part (none, the text t,
 * or the scripted functionCall), finishReason if fin, and the usage with
 * candidatesTokenCount cand. */
static void gem_response(buf_t *b, const job_t *j, int part, const char *t, size_t tn, bool fin,
                         int64_t cand)
{
    BUF_LIT(b, "{\"candidates\":[{\"content\":{");
    if (part == PART_TEXT) {
        BUF_LIT(b, "\"parts\":[{\"text\":");
        buf_jstr(b, t, tn);
        BUF_LIT(b, "}],");
    } else if (part == PART_CALL) {
        BUF_LIT(b, "\"parts\":[{\"functionCall\":{\"name\":");
        buf_jstr(b, j->tool_name, j->tool_name_len);
        BUF_LIT(b, ",\"args\":");
        fv_tool_args(b, j);
        BUF_LIT(b, "}}],");
    }
    BUF_LIT(b, "\"role\":\"model\"}");
    if (fin) {
        if (j->clamped)
            BUF_LIT(b, ",\"finishReason\":\"MAX_TOKENS\"");
        else
            BUF_LIT(b, ",\"finishReason\":\"STOP\"");
    }
    BUF_LIT(b, ",\"index\":0}],");
    gem_usage(b, j, cand);
    BUF_LIT(b, ",\"modelVersion\":");
    fv_put_model(b, j);
    BUF_LIT(b, ",\"responseId\":\"gem_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\"}");
}

static void gem_body(buf_t *b, const job_t *j)
{
    gem_response(b, j, j->tool_call ? PART_CALL : PART_TEXT, j->reply, j->reply_len, true,
                 j->out - j->reasoning);
}

static void gem_count_body(buf_t *b, job_t *j)
{
    int64_t prompt = j->in + j->cr;
    BUF_LIT(b, "{\"totalTokens\":");
    buf_num(b, prompt);
    gem_prompt_details(b, j, prompt);
    BUF_LIT(b, "}");
    j->s_in = j->in;
}

static int gem_events(const job_t *j)
{
    return j->events > 0 ? (int)j->events : 1;
}

/* Stream chunk k of T (j->ev_total): SSE or a JSON array element; serves the
 * running usage it carries. */
static void gem_event(buf_t *b, job_t *j, int k)
{
    int64_t T = j->ev_total, C = j->out - j->reasoning;
    bool last = k == T - 1;
    /* floor(C * (k+1) / T) without overflow */
    int64_t cand = last ? C : (C / T) * (k + 1) + (C % T) * (k + 1) / T;
    const char *s = "";
    size_t n = 0;
    int part = PART_TEXT;
    if (j->tool_call)
        part = last ? PART_CALL : PART_NONE;
    else if (j->events > 0)
        fv_reply_piece(j, k, &s, &n);
    if (j->json_array)
        buf_str(b, k == 0 ? "[" : "\n,\r\n");
    else
        BUF_LIT(b, "data: ");
    gem_response(b, j, part, s, n, last, cand);
    if (j->json_array) {
        if (last) BUF_LIT(b, "\n]");
    } else {
        BUF_LIT(b, "\r\n\r\n");
    }
    j->s_in = j->in + j->tool_use_prompt;
    j->s_cr = j->cr;
    j->s_out = cand + j->reasoning;
}

const fv_proto_t fv_gemini = {
    .route = gem_route,
    .request = gem_request,
    .id_header = "x-request-id",
    .models = MODELS_GEMINI,
    .model = gem_model_body,
    .cache_write = false,
    .limit_max_output = false,
    .query_key = true,
    .tool_use_prompt = true,
    .error = gem_error,
    .body = gem_body,
    .count = gem_count_body,
    .events = gem_events,
    .event = gem_event,
    .malformed = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"oops\r\n\r\n",
    .malformed_array = "\n,\r\n{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"oops",
    .tool_name = "run_shell_command",
    .tool_arg = "command",
};
