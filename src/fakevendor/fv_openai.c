/*
 * fv_openai.c -- the fake vendor's OpenAI chat completions:
 * POST .../v1/chat/completions (the chat.completion body, or its
 * chat.completion.chunk stream: role chunk, N content chunks, finish chunk,
 * the usage chunk with stream_options.include_usage, [DONE]), the OpenAI
 * model list, and OpenAI-shaped errors, which the Responses API
 * (fv_responses.c) shares.  See fv.h (DETERMINISM, FAULT MODES).
 * A scripted tool call (tool=, SCRIPTED TOOL CALLS in fv.h) is the message
 * {"role":"assistant","content":null,"tool_calls":[{"id":"call_fake_<seq>",
 * "type":"function","function":{"name":NAME,"arguments":ARGS}}]} with
 * finish_reason "tool_calls", ARGS the JSON text {"command":CMD} as a string.
 * Streamed, the role chunk carries delta.tool_calls [{"index":0,"id",
 * "type":"function","function":{"name":NAME,"arguments":""}}] and the N
 * content chunks delta.tool_calls [{"index":0,"function":{"arguments":
 * PIECE}}], the pieces of ARGS.
 */

#include "fv.h"

static const char MODELS_OPENAI[] =
    "{\"object\":\"list\",\"data\":["
    "{\"id\":\"gpt-4o\",\"object\":\"model\",\"created\":1715367049,\"owned_by\":\"system\"},"
    "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":1721172741,\"owned_by\":\"system\"},"
    "{\"id\":\"gpt-4.1\",\"object\":\"model\",\"created\":1744316542,\"owned_by\":\"system\"}]}";

static const char *oai_err_type(int s)
{
    switch (s) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return s >= 400 && s < 500 ? "invalid_request_error" : "server_error";
    }
}

/* OpenAI's error body (seq is only in the x-request-id header). */
void fv_openai_error(buf_t *b, int status, uint64_t seq, const char *msg)
{
    BUF_LIT(b, "{\"error\":{\"message\":");
    buf_jstr(b, msg, strlen(msg));
    BUF_LIT(b, ",\"type\":\"");
    buf_str(b, oai_err_type(status));
    BUF_LIT(b, "\",\"param\":null,\"code\":null}}");
}

static int oai_route(const fv_target_t *t)
{
    if (t->method != HTTP_POST)
        return 0;
    return fv_path_ends(t->path, t->plen, "/v1/chat/completions") ? EP_GEN : 0;
}

static void oai_usage(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "\"usage\":{\"prompt_tokens\":");
    buf_num(b, j->in + j->cr);
    BUF_LIT(b, ",\"completion_tokens\":");
    buf_num(b, j->out);
    BUF_LIT(b, ",\"total_tokens\":");
    buf_num(b, j->in + j->cr + j->out);
    BUF_LIT(b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    buf_num(b, j->cr);
    BUF_LIT(b, ",\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":");
    buf_num(b, j->reasoning);
    BUF_LIT(b, ",\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
               "\"rejected_prediction_tokens\":0}}");
}

static void oai_finish_reason(buf_t *b, const job_t *j)
{
    if (j->clamped)
        BUF_LIT(b, "\"length\"");
    else if (j->tool_call)
        BUF_LIT(b, "\"tool_calls\"");
    else
        BUF_LIT(b, "\"stop\"");
}

/* "id":..,"type":"function","function":{"name":NAME,"arguments":ARGS} of the
 * tool call; args: ARGS whole, else "" (the first stream chunk). */
static void oai_tool_call(buf_t *b, const job_t *j, bool args)
{
    BUF_LIT(b, "\"id\":\"call_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"type\":\"function\",\"function\":{\"name\":");
    buf_jstr(b, j->tool_name, j->tool_name_len);
    BUF_LIT(b, ",\"arguments\":");
    if (args) {
        const char *s;
        size_t n = fv_tool_text(j, &s);
        buf_jstr(b, s, n);
    } else {
        BUF_LIT(b, "\"\"");
    }
    BUF_LIT(b, "}");
}

static void oai_completion_body(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "{\"id\":\"chatcmpl-fake-");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"object\":\"chat.completion\",\"created\":");
    buf_num(b, j->created);
    BUF_LIT(b, ",\"model\":");
    fv_put_model(b, j);
    BUF_LIT(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (j->tool_call) {
        BUF_LIT(b, "null,\"tool_calls\":[{");
        oai_tool_call(b, j, true);
        BUF_LIT(b, "}]");
    } else {
        buf_jstr(b, j->reply, j->reply_len);
    }
    BUF_LIT(b, ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":");
    oai_finish_reason(b, j);
    BUF_LIT(b, "}],");
    oai_usage(b, j);
    BUF_LIT(b, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_fakevendor\"}");
}

static void oai_prefix(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "data: {\"id\":\"chatcmpl-fake-");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    buf_num(b, j->created);
    BUF_LIT(b, ",\"model\":");
    fv_put_model(b, j);
    BUF_LIT(b, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_fakevendor\",\"choices\":[");
}

static void oai_suffix(buf_t *b, const job_t *j)
{
    if (j->include_usage)
        BUF_LIT(b, "],\"usage\":null}\n\n");
    else
        BUF_LIT(b, "]}\n\n");
}

/* Render chat completions stream event k into b; updates served counters. */
static void oai_event(buf_t *b, job_t *j, int k)
{
    int N = (int)j->events;
    if (k == j->ev_total - 1) {
        BUF_LIT(b, "data: [DONE]\n\n");
    } else if (k == 0) {
        oai_prefix(b, j);
        if (j->tool_call) {
            BUF_LIT(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
                       "\"tool_calls\":[{\"index\":0,");
            oai_tool_call(b, j, false);
            BUF_LIT(b, "}],\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}");
        } else {
            BUF_LIT(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
                       "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}");
        }
        oai_suffix(b, j);
    } else if (k <= N) {
        const char *s;
        size_t n;
        oai_prefix(b, j);
        if (j->tool_call) {
            fv_tool_piece(j, k - 1, &s, &n);
            BUF_LIT(b, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
                       "{\"arguments\":");
            buf_jstr(b, s, n);
            BUF_LIT(b, "}}]},\"logprobs\":null,\"finish_reason\":null}");
        } else {
            fv_reply_piece(j, k - 1, &s, &n);
            BUF_LIT(b, "{\"index\":0,\"delta\":{\"content\":");
            buf_jstr(b, s, n);
            BUF_LIT(b, "},\"logprobs\":null,\"finish_reason\":null}");
        }
        oai_suffix(b, j);
    } else if (k == N + 1) {
        oai_prefix(b, j);
        BUF_LIT(b, "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":");
        oai_finish_reason(b, j);
        BUF_LIT(b, "}");
        oai_suffix(b, j);
    } else { /* usage chunk (only exists with include_usage) */
        oai_prefix(b, j);
        BUF_LIT(b, "],");
        oai_usage(b, j);
        BUF_LIT(b, "}\n\n");
        j->s_in = j->in;
        j->s_cr = j->cr;
        j->s_out = j->out;
    }
}

static int oai_events(const job_t *j) { return (int)j->events + 3 + (j->include_usage ? 1 : 0); }

const fv_proto_t fv_openai_chat = {
    .route = oai_route,
    .id_header = "x-request-id",
    .models = MODELS_OPENAI,
    .cache_write = false,
    .limit_max_output = false,
    .error = fv_openai_error,
    .body = oai_completion_body,
    .count = NULL,
    .events = oai_events,
    .event = oai_event,
    .malformed = "data: {\"id\":\"chatcmpl-fake-broken\",\"object\":\"chat.completion"
                 ".chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"oops\n\n",
    .tool_name = "shell",
    .tool_arg = "command",
};
