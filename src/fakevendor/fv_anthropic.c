/*
 * fv_anthropic.c -- the fake vendor's Anthropic Messages API:
 * POST .../v1/messages (the message body, or its SSE events: message_start,
 * content_block_start, ping, N x content_block_delta, content_block_stop,
 * message_delta, message_stop), POST .../v1/messages/count_tokens, the model
 * list and Anthropic-shaped errors (also used for /_fake/... and for requests
 * that are no protocol's).  See fv.h (DETERMINISM, FAULT MODES).
 * A scripted tool call (tool=, SCRIPTED TOOL CALLS in fv.h) is one tool_use
 * content block {"type":"tool_use","id":"toolu_fake_<seq>","name":NAME,
 * "input":{"command":CMD}} with stop_reason "tool_use"; streamed, its
 * content_block_start carries "input":{} and the N content_block_delta
 * events carry {"type":"input_json_delta","partial_json":PIECE}, the pieces
 * of the input's JSON text.
 */

#include "fv.h"

#include <time.h>

static const char MODELS_ANTHROPIC[] =
    "{\"data\":["
    "{\"type\":\"model\",\"id\":\"claude-sonnet-4-5-20250929\",\"display_name\":\"Claude Sonnet 4.5\","
    "\"created_at\":\"2025-09-29T00:00:00Z\"},"
    "{\"type\":\"model\",\"id\":\"claude-haiku-4-5-20251001\",\"display_name\":\"Claude Haiku 4.5\","
    "\"created_at\":\"2025-10-01T00:00:00Z\"},"
    "{\"type\":\"model\",\"id\":\"claude-opus-4-1-20250805\",\"display_name\":\"Claude Opus 4.1\","
    "\"created_at\":\"2025-08-05T00:00:00Z\"}],"
    "\"has_more\":false,\"first_id\":\"claude-sonnet-4-5-20250929\","
    "\"last_id\":\"claude-opus-4-1-20250805\"}";

static const char *anth_err_type(int s)
{
    switch (s) {
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    case 504: return "timeout_error";
    default: return s >= 400 && s < 500 ? "invalid_request_error" : "api_error";
    }
}

static void anth_error(buf_t *b, int status, uint64_t seq, const char *msg)
{
    BUF_LIT(b, "{\"type\":\"error\",\"error\":{\"type\":\"");
    buf_str(b, anth_err_type(status));
    BUF_LIT(b, "\",\"message\":");
    buf_jstr(b, msg, strlen(msg));
    BUF_LIT(b, "}");
    if (seq) {
        BUF_LIT(b, ",\"request_id\":\"req_fake_");
        buf_pad12(b, seq);
        BUF_LIT(b, "\"");
    }
    BUF_LIT(b, "}");
}

static int anth_route(const fv_target_t *t)
{
    if (t->method != HTTP_POST)
        return 0;
    if (fv_path_ends(t->path, t->plen, "/v1/messages/count_tokens"))
        return EP_COUNT;
    if (fv_path_ends(t->path, t->plen, "/v1/messages"))
        return EP_GEN;
    return 0;
}

static void anth_count_body(buf_t *b, job_t *j)
{
    BUF_LIT(b, "{\"input_tokens\":");
    buf_num(b, j->in);
    BUF_LIT(b, "}");
    j->s_in = j->in;
}

static void anth_stop_reason(buf_t *b, const job_t *j)
{
    if (j->clamped)
        BUF_LIT(b, "\"max_tokens\"");
    else if (j->tool_call)
        BUF_LIT(b, "\"tool_use\"");
    else
        BUF_LIT(b, "\"end_turn\"");
}

/* The tool_use block; input: its input object, else "input":{} (a stream's
 * content_block_start). */
static void anth_tool_use(buf_t *b, const job_t *j, bool input)
{
    BUF_LIT(b, "{\"type\":\"tool_use\",\"id\":\"toolu_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"name\":");
    buf_jstr(b, j->tool_name, j->tool_name_len);
    BUF_LIT(b, ",\"input\":");
    if (input)
        fv_tool_args(b, j);
    else
        BUF_LIT(b, "{}");
    BUF_LIT(b, "}");
}

static void anth_message_body(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "{\"id\":\"msg_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    fv_put_model(b, j);
    BUF_LIT(b, ",\"content\":[");
    if (j->tool_call) {
        anth_tool_use(b, j, true);
    } else {
        BUF_LIT(b, "{\"type\":\"text\",\"text\":");
        buf_jstr(b, j->reply, j->reply_len);
        BUF_LIT(b, "}");
    }
    BUF_LIT(b, "],\"stop_reason\":");
    anth_stop_reason(b, j);
    BUF_LIT(b, ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    buf_num(b, j->in);
    BUF_LIT(b, ",\"cache_creation_input_tokens\":");
    buf_num(b, j->cw);
    BUF_LIT(b, ",\"cache_read_input_tokens\":");
    buf_num(b, j->cr);
    BUF_LIT(b, ",\"output_tokens\":");
    buf_num(b, j->out);
    BUF_LIT(b, "}}");
}

/* Render Anthropic stream event k into b; updates served counters. */
static void anth_event(buf_t *b, job_t *j, int k)
{
    int N = (int)j->events;
    if (k == 0) {
        BUF_LIT(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                   "{\"id\":\"msg_fake_");
        buf_pad12(b, j->seq);
        BUF_LIT(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        fv_put_model(b, j);
        BUF_LIT(b, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
                   "{\"input_tokens\":");
        buf_num(b, j->in);
        BUF_LIT(b, ",\"cache_creation_input_tokens\":");
        buf_num(b, j->cw);
        BUF_LIT(b, ",\"cache_read_input_tokens\":");
        buf_num(b, j->cr);
        BUF_LIT(b, ",\"output_tokens\":1}}}\n\n");
        j->s_in = j->in;
        j->s_cw = j->cw;
        j->s_cr = j->cr;
        j->s_out = 1;
    } else if (k == 1) {
        BUF_LIT(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                   "\"index\":0,\"content_block\":");
        if (j->tool_call)
            anth_tool_use(b, j, false);
        else
            BUF_LIT(b, "{\"type\":\"text\",\"text\":\"\"}");
        BUF_LIT(b, "}\n\n");
    } else if (k == 2) {
        BUF_LIT(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    } else if (k < 3 + N) {
        const char *s;
        size_t n;
        BUF_LIT(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                   "\"index\":0,");
        if (j->stamp) {
            /* when it left, for a client on this host measuring each event's delay */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            BUF_LIT(b, "\"sent_ns\":");
            buf_u64(b, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
            BUF_LIT(b, ",");
        }
        BUF_LIT(b, "\"delta\":");
        if (j->tool_call) {
            fv_tool_piece(j, k - 3, &s, &n);
            BUF_LIT(b, "{\"type\":\"input_json_delta\",\"partial_json\":");
        } else {
            fv_reply_piece(j, k - 3, &s, &n);
            BUF_LIT(b, "{\"type\":\"text_delta\",\"text\":");
        }
        buf_jstr(b, s, n);
        BUF_LIT(b, "}}\n\n");
    } else if (k == 3 + N) {
        BUF_LIT(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                   "\"index\":0}\n\n");
    } else if (k == 4 + N) {
        BUF_LIT(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                   "{\"stop_reason\":");
        anth_stop_reason(b, j);
        BUF_LIT(b, ",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        buf_num(b, j->out);
        BUF_LIT(b, "}}\n\n");
        j->s_out = j->out;
    } else {
        BUF_LIT(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
}

static int anth_events(const job_t *j) { return (int)j->events + 6; }

const fv_proto_t fv_anthropic = {
    .route = anth_route,
    .id_header = "request-id",
    .models = MODELS_ANTHROPIC,
    .cache_write = true,
    .limit_max_output = false,
    .error = anth_error,
    .body = anth_message_body,
    .count = anth_count_body,
    .events = anth_events,
    .event = anth_event,
    .malformed = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                 "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"oops\n\n",
    .tool_name = "Bash",
    .tool_arg = "command",
};
