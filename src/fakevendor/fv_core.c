/*
 * fv_core.c -- the fake vendor's protocol-independent core: from a parsed
 * request (fv_server.c calls fv_handle_request) to response bytes in c->out.
 * Routing is a lookup in FV_PROTOS; the protocol's table (fv_proto_t) renders
 * bodies, stream events and errors, and this file does the rest: overrides
 * and fault modes, the response head, chunked framing, the stream loop, the
 * records (GET /_fake/requests, --record) and the stats (GET /_fake/stats).
 * See fv.h.
 */

#include "fv.h"

static const char *const AC_NAMES[] = {"none",         "anthropic-oauth", "anthropic-api-key",
                                       "openai-key",   "workspace-token", "google-api-key",
                                       "google-oauth", "unknown"};
static const char *const MODE_NAMES[] = {"none", "delay", "stall", "stall_mid", "reset_mid",
                                         "status", "malformed", "drip", "storm"};

/* The wire protocols, in the order their routes are tried (fv.h). */
static const fv_proto_t *const FV_PROTOS[] = {&fv_anthropic, &fv_openai_chat,
                                              &fv_openai_responses, &fv_gemini};

/* ------------------------------------------------------------------------ */
/* Globals                                                                   */

static int      g_rec_fd = -1;
static rec_t   *g_ring;
static uint64_t g_seq, g_visible_from = 1, g_storm;
static buf_t    g_body, g_ev, g_line;
static buf_t    g_tool;     /* the arguments JSON of the scripted tool call */
static uint64_t g_tool_seq; /* the job g_tool was rendered for */
fv_stats_t      g_stats;

/* ------------------------------------------------------------------------ */
/* Records                                                                   */

static rec_t *rec_get(uint64_t seq)
{
    rec_t *r = &g_ring[seq % REC_CAP];
    return (seq && r->seq == seq) ? r : NULL;
}

static void rec_render(buf_t *b, const rec_t *r)
{
    BUF_LIT(b, "{\"seq\":");
    buf_u64(b, r->seq);
    buf_put(b, r->js.p, r->js.len);
    BUF_LIT(b, ",\"served\":{\"input\":");
    buf_num(b, r->s_in);
    BUF_LIT(b, ",\"output\":");
    buf_num(b, r->s_out);
    BUF_LIT(b, ",\"cache_read\":");
    buf_num(b, r->s_cr);
    BUF_LIT(b, ",\"cache_write\":");
    buf_num(b, r->s_cw);
    BUF_LIT(b, "},\"status\":");
    buf_u64(b, (uint64_t)r->status);
    BUF_LIT(b, ",\"tool_call\":");
    buf_bool(b, r->tool_call);
    BUF_LIT(b, ",\"completed\":");
    buf_bool(b, r->completed);
    BUF_LIT(b, ",\"pending\":");
    buf_bool(b, r->pending);
    BUF_LIT(b, "}");
}

/* Add what the job served since the last call to the /_fake/stats totals
 * (jobs from before the last DELETE add nothing). */
static void stats_served(job_t *j)
{
    if (j->seq >= g_visible_from) {
        g_stats.in += j->s_in - j->a_in;
        g_stats.out += j->s_out - j->a_out;
        g_stats.cr += j->s_cr - j->a_cr;
        g_stats.cw += j->s_cw - j->a_cw;
    }
    j->a_in = j->s_in;
    j->a_out = j->s_out;
    j->a_cr = j->s_cr;
    j->a_cw = j->s_cw;
}

void fv_rec_result(job_t *j)
{
    stats_served(j);
    rec_t *r = rec_get(j->seq);
    if (!r)
        return;
    r->status = j->http_status;
    r->tool_call = j->tool_call && j->http_status == 200;
    r->s_in = j->s_in;
    r->s_out = j->s_out;
    r->s_cr = j->s_cr;
    r->s_cw = j->s_cw;
}

void fv_rec_done(uint64_t seq, bool completed)
{
    rec_t *r = rec_get(seq);
    if (!r || !r->pending)
        return;
    r->pending = false;
    r->completed = completed;
    if (seq >= g_visible_from) {
        if (completed)
            g_stats.completed++;
        else
            g_stats.incomplete++;
        if (r->status >= 400)
            g_stats.errors++;
    }
    if (g_rec_fd >= 0) {
        g_line.len = 0;
        rec_render(&g_line, r);
        BUF_LIT(&g_line, "\n");
        const char *p = g_line.p;
        size_t n = g_line.len;
        while (n) {
            ssize_t w = write(g_rec_fd, p, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            p += w;
            n -= (size_t)w;
        }
    }
    if (!g_quiet)
        fprintf(stderr, "fakevendor: #%" PRIu64 " %s -> %d%s\n", seq, r->logline, r->status,
                completed ? "" : " (incomplete)");
}

/* Set up the record ring, and open the --record FILE if given. */
int fv_records_open(const char *record)
{
    g_ring = calloc(REC_CAP, sizeof *g_ring);
    if (!g_ring)
        fv_die("out of memory");
    if (record) {
        g_rec_fd = open(record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (g_rec_fd < 0) {
            fprintf(stderr, "keyrail-fakevendor: %s: %s\n", record, strerror(errno));
            return -1;
        }
    }
    return 0;
}

void fv_records_free(void)
{
    for (size_t i = 0; i < REC_CAP; i++)
        buf_free(&g_ring[i].js);
    free(g_ring);
    buf_free(&g_body);
    buf_free(&g_ev);
    buf_free(&g_line);
    buf_free(&g_tool);
    if (g_rec_fd >= 0)
        close(g_rec_fd);
}

/* ------------------------------------------------------------------------ */
/* Output helpers                                                            */

static const char *reason(int s)
{
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return "Status";
    }
}

static void put_head(conn_t *c, int status, const char *ctype, bool stream, size_t clen,
                     uint64_t seq, const fv_proto_t *pr)
{
    buf_t *o = &c->out;
    buf_reserve(o, 256);
    BUF_LIT(o, "HTTP/1.1 ");
    buf_u64(o, (uint64_t)status);
    BUF_LIT(o, " ");
    buf_str(o, reason(status));
    BUF_LIT(o, "\r\ncontent-type: ");
    buf_str(o, ctype);
    if (stream) {
        if (c->job.chunked)
            BUF_LIT(o, "\r\ntransfer-encoding: chunked");
        BUF_LIT(o, "\r\ncache-control: no-cache");
    } else {
        BUF_LIT(o, "\r\ncontent-length: ");
        buf_u64(o, clen);
    }
    if (seq) {
        BUF_LIT(o, "\r\n");
        buf_str(o, pr->id_header);
        BUF_LIT(o, ": req_fake_");
        buf_pad12(o, seq);
    }
    if (status == 429)
        BUF_LIT(o, "\r\nretry-after: 1");
    if (!c->keep_alive)
        BUF_LIT(o, "\r\nconnection: close");
    else if (c->http10)
        BUF_LIT(o, "\r\nconnection: keep-alive");
    BUF_LIT(o, "\r\n\r\n");
}

/* Send g_body as a complete JSON response. */
static void send_body(conn_t *c, int status, uint64_t seq, const fv_proto_t *pr)
{
    put_head(c, status, "application/json", false, g_body.len, seq, pr);
    if (!c->head_req) /* a response to HEAD has no body */
        buf_put(&c->out, g_body.p, g_body.len);
}

/* A JSON error in pr's shape (Anthropic's for /_fake/... and for requests
 * that are no protocol's). */
void fv_send_error(conn_t *c, int status, const fv_proto_t *pr, uint64_t seq, const char *msg)
{
    g_body.len = 0;
    pr->error(&g_body, status, seq, msg);
    send_body(c, status, seq, pr);
}

/* ------------------------------------------------------------------------ */
/* Helpers for the protocols' bodies and stream events                       */

/* The request's model as a JSON string. */
void fv_put_model(buf_t *b, const job_t *j)
{
    if (j->model_raw_ok) {
        BUF_LIT(b, "\"");
        buf_put(b, j->model, j->model_len);
        BUF_LIT(b, "\"");
    } else {
        buf_jstr(b, j->model, j->model_len);
    }
}

/* Piece i of the L bytes at t split into N byte ranges (never inside a
 * UTF-8 sequence; may be empty). */
static void text_piece(const char *t, size_t L, size_t N, int i, const char **ps, size_t *pn)
{
    size_t a = L * (size_t)i / N, b = L * (size_t)(i + 1) / N;
    while (a < L && ((unsigned char)t[a] & 0xC0) == 0x80)
        a++;
    while (b < L && ((unsigned char)t[b] & 0xC0) == 0x80)
        b++;
    *ps = t + a;
    *pn = b > a ? b - a : 0;
}

/* Piece i of the reply split into j->events byte ranges. */
void fv_reply_piece(const job_t *j, int i, const char **ps, size_t *pn)
{
    text_piece(j->reply, j->reply_len, (size_t)j->events, i, ps, pn);
}

/* The scripted tool call's arguments as a JSON object, {"ARG":"CMD"} (ARG:
 * the protocol's tool_arg), appended to b. */
void fv_tool_args(buf_t *b, const job_t *j)
{
    BUF_LIT(b, "{\"");
    buf_str(b, j->proto->tool_arg);
    BUF_LIT(b, "\":");
    buf_jstr(b, j->tool_cmd, j->tool_cmd_len);
    BUF_LIT(b, "}");
}

/* The arguments JSON text (fv_tool_args) in a scratch buffer, rendered once
 * per job; for protocols that carry it as a JSON string (the caller escapes
 * it).  Valid until the next call for another job. */
size_t fv_tool_text(const job_t *j, const char **ps)
{
    if (g_tool_seq != j->seq || !g_tool.len) {
        g_tool.len = 0;
        fv_tool_args(&g_tool, j);
        g_tool_seq = j->seq;
    }
    *ps = g_tool.p;
    return g_tool.len;
}

/* Piece i of the arguments JSON text split into j->events byte ranges (never
 * inside a UTF-8 sequence; may be empty), for the streamed argument deltas. */
void fv_tool_piece(const job_t *j, int i, const char **ps, size_t *pn)
{
    const char *t;
    size_t L = fv_tool_text(j, &t);
    text_piece(t, L, (size_t)j->events, i, ps, pn);
}

/* ------------------------------------------------------------------------ */
/* Jobs: one response, streamed or not                                       */

/* Append the rendered event (g_ev) to the output, chunk-framed unless the
 * stream is close-delimited. */
static void frame_event(conn_t *c)
{
    buf_t *o = &c->out;
    if (c->job.chunked) {
        buf_reserve(o, g_ev.len + 16);
        buf_hex(o, g_ev.len);
        BUF_LIT(o, "\r\n");
        buf_put(o, g_ev.p, g_ev.len);
        BUF_LIT(o, "\r\n");
    } else {
        buf_put(o, g_ev.p, g_ev.len);
    }
    if (g_ev.cap > BUF_KEEP) /* after a pad= event: do not keep megabytes around */
        buf_free(&g_ev);
}

/* The current job's response is fully rendered into c->out. */
static void job_end(conn_t *c)
{
    job_t *j = &c->job;
    j->active = false;
    j->phase = PH_NONE;
    fv_rec_result(j);
    if (c->npend < MAXPEND)
        c->pend[c->npend++] = j->seq;
    else
        fv_rec_done(j->seq, true);
    if (!c->keep_alive)
        c->close_after_flush = true;
}

/* Emit events until the stream ends, a fault triggers, a drip pause starts or
 * the output buffer is over the high-water mark. */
void fv_run_stream(conn_t *c)
{
    job_t *j = &c->job;
    int after = -1;
    if (j->mode == M_STALL_MID || j->mode == M_RESET_MID || j->mode == M_MALFORMED)
        after = j->after < j->ev_total ? (int)j->after : j->ev_total;
    while (j->active && j->phase == PH_STREAM && !j->timer_wait) {
        if (j->ev_idx == after && !j->fault_done) {
            j->fault_done = true;
            if (j->mode == M_STALL_MID) {
                j->phase = PH_STALL;
                return;
            }
            if (j->mode == M_RESET_MID) {
                j->phase = PH_RESET;
                c->reset_after_flush = true;
                return;
            }
            g_ev.len = 0; /* malformed: one event with broken JSON */
            buf_str(&g_ev, j->json_array ? j->proto->malformed_array : j->proto->malformed);
            frame_event(c);
        }
        if (j->ev_idx >= j->ev_total) {
            if (j->chunked)
                BUF_LIT(&c->out, "0\r\n\r\n");
            job_end(c);
            return;
        }
        g_ev.len = 0;
        j->proto->event(&g_ev, j, j->ev_idx);
        fv_rec_result(j); /* the usage the event served, if any */
        j->ev_idx++;
        frame_event(c);
        if (j->interval_ms > 0 && j->ev_idx < j->ev_total) {
            j->timer_wait = true;
            fv_start_timer(c, T_DRIP, j->interval_ms);
            return;
        }
        if (fv_over_high(c))
            return;
    }
}

static void stream_start(conn_t *c)
{
    job_t *j = &c->job;
    j->chunked = !c->http10;
    if (c->http10) { /* close-delimited */
        c->keep_alive = false;
        c->no_more = true;
    }
    put_head(c, 200, j->json_array ? "application/json" : "text/event-stream", true, 0, j->seq,
             j->proto);
    j->http_status = 200;
    fv_rec_result(j);
    j->phase = PH_STREAM;
    j->ev_idx = 0;
    j->ev_total = j->proto->events(j);
    fv_run_stream(c);
}

/* Non-streaming success body is in g_body; apply body-level faults. */
static void send_nonstream(conn_t *c, bool full_served)
{
    job_t *j = &c->job;
    j->http_status = 200;
    size_t len = g_body.len, half = len / 2;
    if (j->mode == M_STALL_MID || j->mode == M_RESET_MID) {
        put_head(c, 200, "application/json", false, len, j->seq, j->proto);
        buf_put(&c->out, g_body.p, half);
        fv_rec_result(j);
        if (j->mode == M_STALL_MID) {
            j->phase = PH_STALL;
        } else {
            j->phase = PH_RESET;
            c->reset_after_flush = true;
        }
        return;
    }
    if (j->mode == M_MALFORMED) {
        put_head(c, 200, "application/json", false, half, j->seq, j->proto);
        buf_put(&c->out, g_body.p, half);
        job_end(c);
        return;
    }
    send_body(c, 200, j->seq, j->proto);
    if (full_served) {
        j->s_in = j->in + j->tool_use_prompt;
        j->s_cr = j->cr;
        j->s_out = j->out;
        j->s_cw = j->proto->cache_write ? j->cw : 0;
    }
    job_end(c);
}

/* Produce the response now (no delay pending). */
void fv_respond_now(conn_t *c)
{
    job_t *j = &c->job;
    j->phase = PH_NONE;
    if (j->err_status) {
        char msg[160];
        if (j->mode == M_STORM)
            snprintf(msg, sizeof msg, "fakevendor: injected %d (mode=storm)", j->err_status);
        else
            snprintf(msg, sizeof msg, "fakevendor: injected %d (mode=status)", j->err_status);
        fv_send_error(c, j->err_status, j->proto, j->seq, msg);
        j->http_status = j->err_status;
        job_end(c);
        return;
    }
    switch (j->ep) {
    case EP_COUNT:
        g_body.len = 0;
        j->proto->count(&g_body, j);
        send_nonstream(c, false);
        break;
    case EP_MODELS:
        g_body.len = 0;
        buf_str(&g_body, j->proto->models);
        send_nonstream(c, false);
        break;
    case EP_MODEL:
        g_body.len = 0;
        j->proto->model(&g_body, j);
        send_nonstream(c, false);
        break;
    case EP_GEN:
        if (j->stream) {
            stream_start(c);
        } else {
            g_body.len = 0;
            j->proto->body(&g_body, j);
            send_nonstream(c, true);
        }
        break;
    default:
        break;
    }
    if (g_body.cap > BUF_KEEP) /* after a pad= body: do not keep megabytes around */
        buf_free(&g_body);
}

/* ------------------------------------------------------------------------ */
/* Request handling                                                          */

static bool path_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

bool fv_path_ends(const char *p, size_t n, const char *suf)
{
    size_t m = strlen(suf);
    return n >= m && memcmp(p + n - m, suf, m) == 0;
}

static void fake_requests(conn_t *c, int method, const char *q, size_t ql)
{
    buf_t *b = &g_body;
    b->len = 0;
    if (method == HTTP_DELETE) {
        uint64_t n = g_seq + 1 - g_visible_from;
        g_visible_from = g_seq + 1;
        g_storm = 0;
        memset(&g_stats, 0, sizeof g_stats);
        BUF_LIT(b, "{\"cleared\":");
        buf_u64(b, n);
        BUF_LIT(b, "}");
        send_body(c, 200, 0, &fv_anthropic);
        return;
    }
    if (method != HTTP_GET) {
        fv_send_error(c, 405, &fv_anthropic, 0, "fakevendor: use GET or DELETE");
        return;
    }
    uint64_t since = 0;
    for (size_t i = 0; i + 6 <= ql; i++) {
        if ((i == 0 || q[i - 1] == '&') && memcmp(q + i, "since=", 6) == 0) {
            for (size_t k = i + 6; k < ql && q[k] >= '0' && q[k] <= '9' && k < i + 24; k++)
                since = since * 10 + (uint64_t)(q[k] - '0');
            break;
        }
    }
    uint64_t from = g_visible_from;
    if (since + 1 > from)
        from = since + 1;
    if (g_seq >= REC_CAP && g_seq - REC_CAP + 1 > from)
        from = g_seq - REC_CAP + 1;
    BUF_LIT(b, "[");
    bool first = true;
    for (uint64_t s = from; s <= g_seq; s++) {
        const rec_t *r = rec_get(s);
        if (!r)
            continue;
        if (!first)
            BUF_LIT(b, ",");
        BUF_LIT(b, "\n");
        first = false;
        rec_render(b, r);
    }
    BUF_LIT(b, "\n]\n");
    send_body(c, 200, 0, &fv_anthropic);
}

static void fake_stats(conn_t *c, int method)
{
    buf_t *b = &g_body;
    if (method != HTTP_GET) {
        fv_send_error(c, 405, &fv_anthropic, 0, "fakevendor: use GET");
        return;
    }
    b->len = 0;
    BUF_LIT(b, "{\"requests\":");
    buf_u64(b, g_seq + 1 - g_visible_from);
    BUF_LIT(b, ",\"completed\":");
    buf_u64(b, g_stats.completed);
    BUF_LIT(b, ",\"incomplete\":");
    buf_u64(b, g_stats.incomplete);
    BUF_LIT(b, ",\"errors\":");
    buf_u64(b, g_stats.errors);
    BUF_LIT(b, ",\"served\":{\"input\":");
    buf_num(b, g_stats.in);
    BUF_LIT(b, ",\"output\":");
    buf_num(b, g_stats.out);
    BUF_LIT(b, ",\"cache_read\":");
    buf_num(b, g_stats.cr);
    BUF_LIT(b, ",\"cache_write\":");
    buf_num(b, g_stats.cw);
    BUF_LIT(b, "},\"tls\":{\"handshakes\":");
    buf_u64(b, g_stats.tls_ok);
    BUF_LIT(b, ",\"handshake_failures\":");
    buf_u64(b, g_stats.tls_failed);
    BUF_LIT(b, ",\"plaintext\":");
    buf_u64(b, g_stats.tls_plain);
    BUF_LIT(b, "}}\n");
    send_body(c, 200, 0, &fv_anthropic);
}

/* The query as a JSON string, the value of every key= parameter (Gemini's
 * credential) replaced by REDACTED: raw credentials are never stored. */
static void put_query(buf_t *b, const char *q, size_t qn)
{
    BUF_LIT(b, "\"");
    size_t i = 0;
    while (i < qn) {
        const char *amp = memchr(q + i, '&', qn - i);
        size_t e = amp ? (size_t)(amp - q) : qn;
        if (e - i >= 4 && memcmp(q + i, "key=", 4) == 0) {
            BUF_LIT(b, "key=REDACTED");
        } else {
            fv_buf_jesc(b, q + i, e - i);
        }
        if (amp)
            BUF_LIT(b, "&");
        i = e + 1;
    }
    BUF_LIT(b, "\"");
}

/* Render the static part of the record for the job just set up. */
static void rec_open(conn_t *c, int method, const char *path, size_t plen, const char *query,
                     size_t qlen, const bodyinfo_t *bi, const char *bad_mode, size_t bad_mode_len)
{
    job_t *j = &c->job;
    req_t *r = &c->req;
    rec_t *s = &g_ring[j->seq % REC_CAP];
    s->seq = j->seq;
    s->status = 0;
    s->completed = false;
    s->pending = true;
    s->s_in = s->s_out = s->s_cr = s->s_cw = 0;
    s->tool_call = false;
    snprintf(s->logline, sizeof s->logline, "%s %.*s mode=%s%s",
             http_method_str((enum http_method)method), (int)(plen < 48 ? plen : 48), path,
             j->mode == M_BAD ? "invalid" : MODE_NAMES[j->mode], j->tool_call ? " tool_call" : "");

    buf_t *b = &s->js;
    b->len = 0;
    BUF_LIT(b, ",\"t_ms\":");
    buf_u64(b, uv_now(g_loop) - g_start_ms);
    BUF_LIT(b, ",\"method\":\"");
    buf_str(b, http_method_str((enum http_method)method));
    BUF_LIT(b, "\",\"path\":");
    buf_jstr(b, path, plen);
    BUF_LIT(b, ",\"query\":");
    put_query(b, query, qlen);
    BUF_LIT(b, ",\"tls\":");
    buf_bool(b, c->ssl != NULL);
    BUF_LIT(b, ",\"sni\":");
    if (c->has_sni)
        buf_jstr(b, c->sni, strlen(c->sni));
    else
        BUF_LIT(b, "null");
    /* the credential recorded: the first present of these */
    const cred_t *cr = NULL;
    const char *hdr = "none";
    if (r->xkey.present) {
        cr = &r->xkey;
        hdr = "x-api-key";
    } else if (r->gkey.present) {
        cr = &r->gkey;
        hdr = "x-goog-api-key";
    } else if (r->qkey.present) {
        cr = &r->qkey;
        hdr = "query-key";
    } else if (r->authz.present) {
        cr = &r->authz;
        hdr = "authorization";
    }
    BUF_LIT(b, ",\"auth_header\":\"");
    buf_str(b, hdr);
    BUF_LIT(b, "\",\"auth_class\":\"");
    buf_str(b, AC_NAMES[cr ? cr->cls : AC_NONE]);
    BUF_LIT(b, "\",\"auth_sha256\":");
    if (cr) {
        char hx[64];
        fv_hex32(hx, cr->sha);
        BUF_LIT(b, "\"");
        buf_put(b, hx, 64);
        BUF_LIT(b, "\"");
    } else {
        BUF_LIT(b, "null");
    }
    BUF_LIT(b, ",\"auth_multiple\":");
    buf_bool(b, r->nauth > 1);
    BUF_LIT(b, ",\"traceparent\":");
    if (r->has_tp)
        buf_jstr(b, r->tp, r->tp_len);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"anthropic_version\":");
    if (r->has_ver)
        buf_jstr(b, r->ver, r->ver_len);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"anthropic_beta\":");
    if (r->has_beta)
        buf_jstr(b, r->beta, r->beta_len);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"model\":");
    if (bi->has_model)
        fv_put_model(b, j);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"stream\":");
    buf_bool(b, bi->stream);
    BUF_LIT(b, ",\"include_usage\":");
    buf_bool(b, bi->include_usage);
    BUF_LIT(b, ",\"max_tokens\":");
    if (bi->max_tokens >= 0)
        buf_num(b, bi->max_tokens);
    else
        BUF_LIT(b, "null");
    BUF_LIT(b, ",\"mode\":");
    if (j->mode == M_BAD)
        buf_jstr(b, bad_mode, bad_mode_len);
    else
        buf_jstr(b, MODE_NAMES[j->mode], strlen(MODE_NAMES[j->mode]));
    BUF_LIT(b, ",\"body_bytes\":");
    buf_u64(b, r->body_bytes);
    bool llm = j->ep == EP_GEN;
    BUF_LIT(b, ",\"planned\":{\"input\":");
    buf_num(b, (llm || j->ep == EP_COUNT) ? j->in + (llm ? j->tool_use_prompt : 0) : 0);
    BUF_LIT(b, ",\"output\":");
    buf_num(b, llm ? j->out : 0);
    BUF_LIT(b, ",\"cache_read\":");
    buf_num(b, llm ? j->cr : 0);
    BUF_LIT(b, ",\"cache_write\":");
    buf_num(b, (llm && j->proto->cache_write) ? j->cw : 0);
    BUF_LIT(b, "},\"headers\":[");
    buf_put(b, r->names, r->names_len);
    BUF_LIT(b, "]");
}

static int parse_mode(const ov_t *o)
{
    if (!OV_HAS(o, K_MODE) || o->mode_len == 0)
        return M_NONE;
    for (int m = 0; m < M_BAD; m++)
        if (strlen(MODE_NAMES[m]) == o->mode_len && memcmp(MODE_NAMES[m], o->mode, o->mode_len) == 0)
            return m;
    return M_BAD;
}

/* A request was parsed completely: set up its job and answer it, now or
 * after a delay (or never: stall). */
void fv_handle_request(conn_t *c)
{
    req_t *r = &c->req;
    http_parser *p = &c->parser;
    job_t *j = &c->job;
    if (c->closing)
        return;
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->http10 = p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
    c->head_req = p->method == HTTP_HEAD;
    if (!c->keep_alive)
        c->no_more = true;

    /* split the request target */
    const char *url = r->url;
    size_t ulen = r->url_len;
    if (ulen > 8 && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0)) {
        const char *hs = memchr(url, ':', ulen) + 3;
        const char *sl = memchr(hs, '/', ulen - (size_t)(hs - url));
        if (sl) {
            ulen -= (size_t)(sl - url);
            url = sl;
        } else {
            url = "/";
            ulen = 1;
        }
    }
    const char *qm = memchr(url, '?', ulen);
    size_t plen = qm ? (size_t)(qm - url) : ulen;
    const char *query = qm ? qm + 1 : "";
    size_t qlen = qm ? ulen - plen - 1 : 0;
    const char *hash = memchr(query, '#', qlen);
    if (hash)
        qlen = (size_t)(hash - query);
    int method = p->method;

    if (path_is(url, plen, "/_fake/requests")) {
        fake_requests(c, method, query, qlen);
        if (!c->keep_alive)
            c->close_after_flush = true;
        return;
    }
    if (path_is(url, plen, "/_fake/stats")) {
        fake_stats(c, method);
        if (!c->keep_alive)
            c->close_after_flush = true;
        return;
    }
    if (path_is(url, plen, "/_fake/healthz")) {
        g_body.len = 0;
        BUF_LIT(&g_body, "{\"ok\":true}");
        send_body(c, 200, 0, &fv_anthropic);
        if (!c->keep_alive)
            c->close_after_flush = true;
        return;
    }

    /* the protocol whose route matches first; the model list's shape
     * follows the anthropic-version header; anything else is an
     * Anthropic-shaped 404 */
    const fv_target_t tg = {
        .method = method, .path = url, .plen = plen, .query = query, .qlen = qlen, .req = r};
    int ep = 0;
    const fv_proto_t *pr = &fv_anthropic;
    for (size_t i = 0; i < sizeof FV_PROTOS / sizeof FV_PROTOS[0] && !ep; i++) {
        ep = FV_PROTOS[i]->route(&tg);
        if (ep)
            pr = FV_PROTOS[i];
    }
    if (!ep && method == HTTP_GET && fv_path_ends(url, plen, "/v1/models")) {
        ep = EP_MODELS;
        pr = r->has_ver ? &fv_anthropic : &fv_openai_chat;
    }
    if (!ep)
        ep = EP_404;

    /* a key= query parameter, for protocols where it is a credential */
    const char *qk;
    size_t qkl;
    if (pr->query_key && fv_query_param(query, qlen, "key", &qk, &qkl)) {
        char kb[HVAL_MAX];
        size_t kn = fv_pct_decode(kb, sizeof kb, qk, qkl);
        fv_cred_set(&r->qkey, kb, kn);
        r->nauth++;
    }

    /* request fields: the body's, and what the path and query say */
    bodyinfo_t bi = {.max_tokens = -1, .max_output_tokens = -1, .gen_max_output = -1};
    if (c->body.len)
        fv_js_scan_obj(c->body.p, c->body.p + c->body.len, 0, &bi);
    if (pr->limit_max_output) /* its only limit; recorded as max_tokens */
        bi.max_tokens = bi.max_output_tokens;
    char req_msg[200];
    int req_status = 0;
    if (pr->request && ep != EP_404)
        req_status = pr->request(&tg, ep, &bi, req_msg, sizeof req_msg);
    ov_t eff;
    eff.set = 0;
    if (c->body.len)
        fv_ov_scan_body(&eff, c->body.p, c->body.len);
    fv_ov_merge(&eff, &r->hov);

    memset(j, 0, offsetof(job_t, model));
    j->seq = ++g_seq;
    j->ep = ep;
    j->proto = pr;
    j->stream = bi.stream;
    j->json_array = bi.stream && bi.json_array;
    j->include_usage = bi.include_usage;
    j->created = (int64_t)time(NULL);
    j->in = OV_HAS(&eff, K_IN) ? eff.num[K_IN] : 1 + (int64_t)(r->body_bytes / 4);
    j->events = OV_HAS(&eff, K_EVENTS) ? eff.num[K_EVENTS] : DEFAULT_EVENTS;
    if (j->events > MAX_EVENTS)
        j->events = MAX_EVENTS;
    j->out = OV_HAS(&eff, K_OUT) ? eff.num[K_OUT] : 2 * j->events;
    j->cr = OV_HAS(&eff, K_CACHE_READ) ? eff.num[K_CACHE_READ] : 0;
    j->cw = OV_HAS(&eff, K_CACHE_WRITE) ? eff.num[K_CACHE_WRITE] : 0;
    j->mode = parse_mode(&eff);
    if (OV_HAS(&eff, K_FAIL_AUTH)) {
        /* the mode is for one credential only (x-api-key, x-goog-api-key,
         * ?key=, then Authorization: the one auth_sha256 names) */
        const cred_t *cr = r->xkey.present ? &r->xkey : r->gkey.present ? &r->gkey
                         : r->qkey.present ? &r->qkey : &r->authz;
        uint32_t want = (uint32_t)eff.num[K_FAIL_AUTH];
        uint32_t got = cr->present ? ((uint32_t)cr->sha[0] << 24 | (uint32_t)cr->sha[1] << 16 |
                                      (uint32_t)cr->sha[2] << 8 | cr->sha[3])
                                   : 0;
        if (got != want) j->mode = M_NONE;
    }
    j->delay_ms = OV_HAS(&eff, K_DELAY_MS) ? eff.num[K_DELAY_MS] : (j->mode == M_DELAY ? 1000 : 0);
    j->interval_ms =
        OV_HAS(&eff, K_INTERVAL_MS) ? eff.num[K_INTERVAL_MS] : (j->mode == M_DRIP ? 100 : 0);
    if (j->delay_ms > MAX_MS)
        j->delay_ms = MAX_MS;
    if (j->interval_ms > MAX_MS)
        j->interval_ms = MAX_MS;
    j->after = OV_HAS(&eff, K_AFTER) ? eff.num[K_AFTER] : 3;
    if (j->after > MAX_EVENTS + 10)
        j->after = MAX_EVENTS + 10;
    j->status = OV_HAS(&eff, K_STATUS) ? eff.num[K_STATUS] : 500;
    if (j->status < 200 || j->status > 599)
        j->status = 500;
    j->max_out = bi.max_tokens;
    if (bi.max_tokens >= 0 && j->out > bi.max_tokens && ep == EP_GEN) {
        j->out = bi.max_tokens;
        j->clamped = true;
    }
    j->reasoning = OV_HAS(&eff, K_REASONING) ? eff.num[K_REASONING] : 0;
    j->stamp = OV_HAS(&eff, K_STAMP) && eff.num[K_STAMP] != 0;
    if (j->reasoning > j->out)
        j->reasoning = j->out;
    j->pad = OV_HAS(&eff, K_PAD) ? eff.num[K_PAD] : 0;
    if (j->pad > PAD_MAX)
        j->pad = PAD_MAX;
    j->tool_use_prompt = pr->tool_use_prompt && OV_HAS(&eff, K_TOOL_USE_PROMPT)
                             ? eff.num[K_TOOL_USE_PROMPT]
                             : 0;
    j->model_len = 0;
    if (bi.has_model) {
        j->model_len = bi.model_len < MODEL_MAX ? bi.model_len : MODEL_MAX;
        memcpy(j->model, bi.model, j->model_len);
    }
    j->model_raw_ok = fv_json_raw_ok(j->model, j->model_len);
    if (OV_HAS(&eff, K_REPLY)) {
        memcpy(j->reply, eff.reply, eff.reply_len);
        j->reply_len = eff.reply_len;
    } else {
        memcpy(j->reply, DEFAULT_REPLY, sizeof DEFAULT_REPLY - 1);
        j->reply_len = sizeof DEFAULT_REPLY - 1;
    }
    /* scripted tool call: only where the request declares tools and carries
     * no tool result yet (SCRIPTED TOOL CALLS in fv.h) */
    j->tool_call = ep == EP_GEN && pr->tool_name && OV_HAS(&eff, K_TOOL) && !eff.tool_bad &&
                   !(OV_HAS(&eff, K_TOOL_NAME) && eff.tool_name_bad) && bi.has_tools &&
                   !bi.has_tool_result;
    if (j->tool_call) {
        memcpy(j->tool_cmd, eff.tool, eff.tool_len);
        j->tool_cmd_len = eff.tool_len;
        if (OV_HAS(&eff, K_TOOL_NAME)) {
            memcpy(j->tool_name, eff.tool_name, eff.tool_name_len);
            j->tool_name_len = eff.tool_name_len;
        } else {
            j->tool_name_len = strlen(pr->tool_name);
            memcpy(j->tool_name, pr->tool_name, j->tool_name_len);
        }
    }

    rec_open(c, method, url, plen, query, qlen, &bi, eff.mode, eff.mode_len);
    j->active = true;

    char msg[200];
    if (r->body_over) {
        snprintf(msg, sizeof msg, "fakevendor: request body over %u bytes", BODY_MAX);
        j->err_status = 413;
    } else if (ep == EP_404) {
        snprintf(msg, sizeof msg, "fakevendor: no route for %s %.*s",
                 http_method_str((enum http_method)method), (int)(plen < 120 ? plen : 120), url);
        j->err_status = 404;
    } else if (req_status) {
        snprintf(msg, sizeof msg, "%s", req_msg);
        j->err_status = req_status;
    } else if (j->mode == M_BAD) {
        snprintf(msg, sizeof msg, "fakevendor: unknown mode '%.*s'", (int)eff.mode_len, eff.mode);
        j->err_status = 400;
    } else if (OV_HAS(&eff, K_TOOL) && eff.tool_bad) {
        snprintf(msg, sizeof msg, "fakevendor: bad tool= value: it must be %s", eff.tool_bad);
        j->err_status = 400;
    } else if (OV_HAS(&eff, K_TOOL_NAME) && eff.tool_name_bad) {
        snprintf(msg, sizeof msg, "fakevendor: bad tool_name= value: it must be %s",
                 eff.tool_name_bad);
        j->err_status = 400;
    } else {
        msg[0] = 0;
    }
    if (msg[0]) {
        fv_send_error(c, j->err_status, j->proto, j->seq, msg);
        j->http_status = j->err_status;
        job_end(c);
        return;
    }
    if (j->mode == M_STORM && (++g_storm & 1))
        j->err_status = 503;
    if (j->mode == M_STATUS)
        j->err_status = (int)j->status;
    if (j->mode == M_STALL) {
        j->phase = PH_STALL;
        return;
    }
    if (j->delay_ms > 0) {
        j->phase = PH_DELAY;
        fv_start_timer(c, T_DELAY, j->delay_ms);
        return;
    }
    fv_respond_now(c);
}
