/*
 * fv_responses.c -- the fake vendor's OpenAI Responses API
 * (POST .../v1/responses): the response object, non-stream or as its SSE
 * events; errors are OpenAI-shaped (fv_openai.c).  See fv.h (DETERMINISM,
 * FAULT MODES) for what it shares with the other protocols.
 *
 * RESPONSES API (POST .../v1/responses), the real API's shapes:
 *   Response object: {"id":"resp_fake_<seq>","object":"response",
 *     "created_at":<unix>,"status":"completed"|"incomplete"|"in_progress",
 *     "background":false,"error":null,"incomplete_details":null |
 *     {"reason":"max_output_tokens"},"instructions":null,
 *     "max_output_tokens":<the request's>|null,"max_tool_calls":null,
 *     "model":<request model>,"output":[MESSAGE (+ the pad item)],
 *     "parallel_tool_calls":true,"previous_response_id":null,
 *     "prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},
 *     "safety_identifier":null,"service_tier":"default","store":true,
 *     "temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},
 *     "tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,
 *     "truncation":"disabled","usage":USAGE|null,"user":null,"metadata":{}}
 *   MESSAGE: {"id":"msg_fake_<seq>","type":"message","status":"completed"
 *     ("incomplete" when clamped),"content":[{"type":"output_text",
 *     "annotations":[],"logprobs":[],"text":REPLY}],"role":"assistant"}
 *   USAGE: {"input_tokens","input_tokens_details":{"cached_tokens"},
 *     "output_tokens","output_tokens_details":{"reasoning_tokens"},
 *     "total_tokens"} as in DETERMINISM.
 *   Non-stream: the final response object.  Stream (text/event-stream):
 *   "event: TYPE\ndata: {"type":"TYPE","sequence_number":K,...}\n\n", K
 *   counting from 0; response.created / response.in_progress carry the
 *   object with status "in_progress", output [] and usage null; the item
 *   events carry "output_index":0 (and "item_id", "content_index":0 for
 *   parts and text); the last event carries the final object.  There is no
 *   [DONE] line.
 *   What Codex CLI 0.171.0 needs (found by removing events and fields one at
 *   a time): it dispatches on the data's "type" (the event: line and
 *   sequence_number are optional); the reply it prints comes only from
 *   response.output_item.done (item type "message", role, content[] of
 *   {"type":"output_text","text"}; without them the item is dropped and
 *   it prints nothing, still exiting 0); response.output_item.added must
 *   precede the deltas (else it logs "OutputTextDelta without active
 *   item"); response.completed must come ("stream closed before
 *   response.completed" and retries otherwise) with response.id, and a
 *   usage, if present, needs input_tokens, output_tokens and total_tokens
 *   (the *_details are optional).  response.incomplete makes it print the
 *   text, report "Incomplete response returned, reason: max_output_tokens"
 *   and exit 1.  Leaving out any one of the other events changes nothing it
 *   prints.  Its request body is plain JSON (no content-encoding) although
 *   it sends accept-encoding: zstd,gzip; answers are never compressed.  A
 *   20 MB pad is fine for it.
 *   Scripted tool call (tool=, SCRIPTED TOOL CALLS in fv.h): the output
 *   item is FUNCTION_CALL instead of MESSAGE: {"id":"fc_fake_<seq>",
 *   "type":"function_call","status":"completed" ("incomplete" when clamped;
 *   "in_progress" with "arguments":"" in response.output_item.added),
 *   "arguments":ARGS,"call_id":"call_fake_<seq>","name":NAME}, ARGS the JSON
 *   text {"cmd":CMD} as a string (Codex's exec_command takes "cmd").  Stream
 *   (N+6 events): response.created, response.in_progress,
 *   response.output_item.added, N x response.function_call_arguments.delta
 *   ("item_id","output_index":0,"delta":PIECE, the pieces of ARGS),
 *   response.function_call_arguments.done ("item_id","output_index":0,
 *   "name","arguments":ARGS), response.output_item.done,
 *   response.completed (response.incomplete when clamped).  Codex 0.171.0
 *   runs the command from response.output_item.done and sends the output
 *   back as a "function_call_output" input item in its next request.
 */

#include "fv.h"

static int resp_route(const fv_target_t *t)
{
    return t->method == HTTP_POST && fv_path_ends(t->path, t->plen, "/v1/responses") ? EP_GEN : 0;
}

/* OpenAI Responses API.  The response object: status "in_progress" (output
 * [] and usage null) unless final; final is "completed", or "incomplete" when
 * OUT was clamped to max_output_tokens. */
static void resp_msg_id(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "\"msg_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\"");
}

static void resp_text_part(buf_t *b, const char *text, size_t n)
{
    BUF_LIT(b, "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":");
    buf_jstr(b, text, n);
    BUF_LIT(b, "}");
}

static void resp_fc_id(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "\"fc_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\"");
}

/* The scripted tool call's function_call item; done: with its arguments and
 * final status. */
static void resp_fc_item(buf_t *b, const job_t *j, bool done)
{
    BUF_LIT(b, "{\"id\":");
    resp_fc_id(b, j);
    BUF_LIT(b, ",\"type\":\"function_call\",\"status\":");
    if (!done)
        BUF_LIT(b, "\"in_progress\"");
    else if (j->clamped)
        BUF_LIT(b, "\"incomplete\"");
    else
        BUF_LIT(b, "\"completed\"");
    BUF_LIT(b, ",\"arguments\":");
    if (done) {
        const char *s;
        size_t n = fv_tool_text(j, &s);
        buf_jstr(b, s, n);
    } else {
        BUF_LIT(b, "\"\"");
    }
    BUF_LIT(b, ",\"call_id\":\"call_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"name\":");
    buf_jstr(b, j->tool_name, j->tool_name_len);
    BUF_LIT(b, "}");
}

/* The assistant message item (or the function_call item of a scripted tool
 * call); done: with its text and final status. */
static void resp_item(buf_t *b, const job_t *j, bool done)
{
    if (j->tool_call) {
        resp_fc_item(b, j, done);
        return;
    }
    BUF_LIT(b, "{\"id\":");
    resp_msg_id(b, j);
    BUF_LIT(b, ",\"type\":\"message\",\"status\":");
    if (!done)
        BUF_LIT(b, "\"in_progress\",\"content\":[");
    else if (j->clamped)
        BUF_LIT(b, "\"incomplete\",\"content\":[");
    else
        BUF_LIT(b, "\"completed\",\"content\":[");
    if (done)
        resp_text_part(b, j->reply, j->reply_len);
    BUF_LIT(b, "],\"role\":\"assistant\"}");
}

/* pad=BYTES: a second message item whose text is BYTES bytes of plain ASCII
 * (nothing to escape, so it is BYTES bytes inside the JSON string too). */
static void resp_pad_item(buf_t *b, const job_t *j)
{
    static const char fill[] = "fakevendor padding, not model output; it only makes the body big. ";
    size_t n = (size_t)j->pad, fl = sizeof fill - 1;
    buf_reserve(b, n + 256);
    BUF_LIT(b, "{\"id\":\"msg_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "_pad\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":"
               "\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"");
    while (n) {
        size_t k = n < fl ? n : fl;
        buf_put(b, fill, k);
        n -= k;
    }
    BUF_LIT(b, "\"}],\"role\":\"assistant\"}");
}

static void resp_usage(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "{\"input_tokens\":");
    buf_num(b, j->in + j->cr);
    BUF_LIT(b, ",\"input_tokens_details\":{\"cached_tokens\":");
    buf_num(b, j->cr);
    BUF_LIT(b, "},\"output_tokens\":");
    buf_num(b, j->out);
    BUF_LIT(b, ",\"output_tokens_details\":{\"reasoning_tokens\":");
    buf_num(b, j->reasoning);
    BUF_LIT(b, "},\"total_tokens\":");
    buf_num(b, j->in + j->cr + j->out);
    BUF_LIT(b, "}");
}

static void resp_object(buf_t *b, const job_t *j, bool final)
{
    BUF_LIT(b, "{\"id\":\"resp_fake_");
    buf_pad12(b, j->seq);
    BUF_LIT(b, "\",\"object\":\"response\",\"created_at\":");
    buf_num(b, j->created);
    if (!final)
        BUF_LIT(b, ",\"status\":\"in_progress\"");
    else if (j->clamped)
        BUF_LIT(b, ",\"status\":\"incomplete\"");
    else
        BUF_LIT(b, ",\"status\":\"completed\"");
    BUF_LIT(b, ",\"background\":false,\"error\":null,\"incomplete_details\":");
    if (final && j->clamped)
        BUF_LIT(b, "{\"reason\":\"max_output_tokens\"}");
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"instructions\":null,\"max_output_tokens\":");
    if (j->max_out >= 0)
        buf_num(b, j->max_out);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"max_tool_calls\":null,\"model\":");
    fv_put_model(b, j);
    BUF_LIT(b, ",\"output\":[");
    if (final) {
        resp_item(b, j, true);
        if (j->pad > 0) {
            BUF_LIT(b, ",");
            resp_pad_item(b, j);
        }
    }
    BUF_LIT(b, "],\"parallel_tool_calls\":true,\"previous_response_id\":null,"
               "\"prompt_cache_key\":null,\"reasoning\":{\"effort\":null,\"summary\":null},"
               "\"safety_identifier\":null,\"service_tier\":\"default\",\"store\":true,"
               "\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"},\"verbosity\":"
               "\"medium\"},\"tool_choice\":\"auto\",\"tools\":[],\"top_logprobs\":0,"
               "\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":");
    if (final)
        resp_usage(b, j);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"user\":null,\"metadata\":{}}");
}

static void resp_body(buf_t *b, const job_t *j) { resp_object(b, j, true); }

/* "event: TYPE\ndata: {"type":"TYPE","sequence_number":K" -- the caller adds
 * the other members and "}\n\n". */
static void resp_ev_head(buf_t *b, const char *type, int k)
{
    BUF_LIT(b, "event: ");
    buf_str(b, type);
    BUF_LIT(b, "\ndata: {\"type\":\"");
    buf_str(b, type);
    BUF_LIT(b, "\",\"sequence_number\":");
    buf_u64(b, (uint64_t)k);
}

static void resp_ev_part(buf_t *b, const job_t *j)
{
    BUF_LIT(b, ",\"item_id\":");
    resp_msg_id(b, j);
    BUF_LIT(b, ",\"output_index\":0,\"content_index\":0");
}

static void resp_ev_final(buf_t *b, job_t *j, int k)
{
    resp_ev_head(b, j->clamped ? "response.incomplete" : "response.completed", k);
    BUF_LIT(b, ",\"response\":");
    resp_object(b, j, true);
    j->s_in = j->in;
    j->s_cr = j->cr;
    j->s_out = j->out;
}

/* The events of a scripted tool call (k >= 2; 0 and 1 are the text's). */
static void resp_tool_event(buf_t *b, job_t *j, int k)
{
    int N = (int)j->events;
    const char *s;
    size_t n;
    if (k == 2) {
        resp_ev_head(b, "response.output_item.added", k);
        BUF_LIT(b, ",\"output_index\":0,\"item\":");
        resp_fc_item(b, j, false);
    } else if (k < 3 + N) {
        fv_tool_piece(j, k - 3, &s, &n);
        resp_ev_head(b, "response.function_call_arguments.delta", k);
        BUF_LIT(b, ",\"item_id\":");
        resp_fc_id(b, j);
        BUF_LIT(b, ",\"output_index\":0,\"delta\":");
        buf_jstr(b, s, n);
    } else if (k == 3 + N) {
        n = fv_tool_text(j, &s);
        resp_ev_head(b, "response.function_call_arguments.done", k);
        BUF_LIT(b, ",\"item_id\":");
        resp_fc_id(b, j);
        BUF_LIT(b, ",\"output_index\":0,\"name\":");
        buf_jstr(b, j->tool_name, j->tool_name_len);
        BUF_LIT(b, ",\"arguments\":");
        buf_jstr(b, s, n);
    } else if (k == 4 + N) {
        resp_ev_head(b, "response.output_item.done", k);
        BUF_LIT(b, ",\"output_index\":0,\"item\":");
        resp_fc_item(b, j, true);
    } else {
        resp_ev_final(b, j, k);
    }
}

/* Render Responses stream event k into b; updates served counters. */
static void resp_event(buf_t *b, job_t *j, int k)
{
    int N = (int)j->events;
    if (k >= 2 && j->tool_call) {
        resp_tool_event(b, j, k);
    } else if (k <= 1) {
        resp_ev_head(b, k == 0 ? "response.created" : "response.in_progress", k);
        BUF_LIT(b, ",\"response\":");
        resp_object(b, j, false);
    } else if (k == 2) {
        resp_ev_head(b, "response.output_item.added", k);
        BUF_LIT(b, ",\"output_index\":0,\"item\":");
        resp_item(b, j, false);
    } else if (k == 3) {
        resp_ev_head(b, "response.content_part.added", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"part\":");
        resp_text_part(b, "", 0);
    } else if (k < 4 + N) {
        const char *s;
        size_t n;
        fv_reply_piece(j, k - 4, &s, &n);
        resp_ev_head(b, "response.output_text.delta", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"delta\":");
        buf_jstr(b, s, n);
        BUF_LIT(b, ",\"logprobs\":[]");
    } else if (k == 4 + N) {
        resp_ev_head(b, "response.output_text.done", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"text\":");
        buf_jstr(b, j->reply, j->reply_len);
        BUF_LIT(b, ",\"logprobs\":[]");
    } else if (k == 5 + N) {
        resp_ev_head(b, "response.content_part.done", k);
        resp_ev_part(b, j);
        BUF_LIT(b, ",\"part\":");
        resp_text_part(b, j->reply, j->reply_len);
    } else if (k == 6 + N) {
        resp_ev_head(b, "response.output_item.done", k);
        BUF_LIT(b, ",\"output_index\":0,\"item\":");
        resp_item(b, j, true);
    } else {
        resp_ev_final(b, j, k);
    }
    BUF_LIT(b, "}\n\n");
}

static int resp_events(const job_t *j) { return (int)j->events + (j->tool_call ? 6 : 8); }

const fv_proto_t fv_openai_responses = {
    .route = resp_route,
    .id_header = "x-request-id",
    .models = NULL, /* GET .../v1/models answers in the chat completions shape */
    .cache_write = false,
    .limit_max_output = true,
    .error = fv_openai_error,
    .body = resp_body,
    .count = NULL,
    .events = resp_events,
    .event = resp_event,
    .malformed = "event: response.output_text.delta\ndata: {\"type\":\"response."
                 "output_text.delta\",\"item_id\":\"msg_fake_broken\",\"output_index\":"
                 "0,\"content_index\":0,\"delta\":\"oops\n\n",
    .tool_name = "exec_command",
    .tool_arg = "cmd",
};
