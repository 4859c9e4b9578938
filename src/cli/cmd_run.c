/*
 * cmd_run.c -- `keyrail run`, the workspace launcher: fetch the provisioned
 * environment (or read it from a file), apply the launcher rules
 * (launcher/launcher.h) to the inherited environment, and start the agent:
 * confined (src/confine: its own network namespace, reaching only keyrail
 * and the workspace's egress allow-list) where the kernel allows it, else
 * refused unless --no-confine. Nothing is guessed: when the server cannot be
 * reached or refuses the token, the agent is not started.
 */
#include "cli/cli.h"
#include "confine/confine.h"
#include "core/ini.h"
#include "launcher/launcher.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    kr_buf *b = ud;
    return kr_buf_append(b, p, size * n) ? 0 : size * n;
}

/* The error message of a keyrail JSON error body, if any. */
static void error_message(const kr_buf *b, char *out, size_t cap)
{
    out[0] = 0;
    cJSON *j = cJSON_ParseWithLength(b->data ? b->data : "", b->len);
    const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    const cJSON *m = e ? cJSON_GetObjectItemCaseSensitive(e, "message") : NULL;
    if (cJSON_IsString(m)) kr_strlcpy(out, m->valuestring, cap);
    cJSON_Delete(j);
}

static int fetch_payload(const char *server, const char *token, const char *ca_file, kr_buf *out)
{
    char url[600];
    size_t l = strlen(server);
    while (l && server[l - 1] == '/') l--;
    if (kr_snprintf(url, sizeof url, "%.*s/v1/workspace/env", (int)l, server))
        return kr_cli_errf("--server URL too long");
    char auth[256];
    if (kr_snprintf(auth, sizeof auth, "Authorization: Bearer %s", token))
        return kr_cli_errf("--token too long");
    CURL *c = curl_easy_init();
    char why[CURL_ERROR_SIZE] = ""; /* the cause, e.g. the certificate problem (TLS is verified) */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, why);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (ca_file && *ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, ca_file); /* verified, against it */
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    sodium_memzero(auth, sizeof auth);
    if (rc != CURLE_OK)
        return kr_cli_errf("cannot reach the keyrail server at %s (%s); the agent was not started",
                           server, why[0] ? why : curl_easy_strerror(rc));
    if (status != 200) {
        char msg[400];
        error_message(out, msg, sizeof msg);
        if (status == 401)
            return kr_cli_errf("the keyrail server refused the workspace token: %s; the agent was "
                               "not started",
                               msg[0] ? msg : "401");
        return kr_cli_errf("the keyrail server could not provide the environment (HTTP %ld): %s; "
                           "the agent was not started",
                           status, msg[0] ? msg : "no detail");
    }
    return 0;
}

/* Where private runtime directories live: $XDG_STATE_HOME/keyrail/runtimes,
 * else $HOME/.local/state/keyrail/runtimes; "" when neither is set. */
static void state_dir(char *out, size_t cap)
{
    const char *x = getenv("XDG_STATE_HOME"), *h = getenv("HOME");
    out[0] = 0;
    if (x && x[0] == '/') kr_snprintf(out, cap, "%s/keyrail/runtimes", x);
    else if (h && h[0] == '/') kr_snprintf(out, cap, "%s/.local/state/keyrail/runtimes", h);
}

/* mkdir -p for the parents of a private directory; the directory itself
 * (the last component) must end up ours, a real directory, mode 0700. */
static int private_dir(const char *dir)
{
    char p[600];
    if (kr_strlcpy(p, dir, sizeof p)) return kr_cli_errf("runtime directory path too long");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0700) && errno != EEXIST)
            return kr_cli_errf("cannot create %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0700) && errno != EEXIST)
        return kr_cli_errf("cannot create %s: %s", p, strerror(errno));
    struct stat st;
    if (lstat(p, &st) || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        return kr_cli_errf("%s is not a directory of this user; refusing to use it", p);
    if ((st.st_mode & 077) && chmod(p, 0700))
        return kr_cli_errf("cannot make %s private: %s", p, strerror(errno));
    return 0;
}

/* The directories of a profile's file below its private directory
 * (".gemini/settings.json"): created 0700, and each must be a real
 * directory of this user, never a symlink an agent left there. */
static int sub_dirs(const char *dir, const char *file)
{
    char p[700];
    size_t base = strlen(dir);
    if (kr_snprintf(p, sizeof p, "%s/%s", dir, file)) return kr_cli_errf("runtime file path too long");
    for (char *s = p + base + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        struct stat st;
        if (mkdir(p, 0700) && errno != EEXIST)
            return kr_cli_errf("cannot create %s: %s", p, strerror(errno));
        if (lstat(p, &st) || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
            return kr_cli_errf("%s is not a directory of this user; refusing to use it", p);
        *s = '/';
    }
    return 0;
}

/* Writes the runtime profiles' files (rule L8): atomically, mode 0600, and
 * removes the files a profile says an agent may have saved credentials in. */
static int write_runtime_files(const kr_launch *l)
{
    for (size_t i = 0; i < l->nfiles; i++) {
        const kr_launch_file *f = &l->files[i];
        if (!f->dir[0]) return kr_cli_errf("cannot place %s's config: set HOME or XDG_STATE_HOME",
                                           f->rt->name);
        if (private_dir(f->dir) || sub_dirs(f->dir, f->rt->file)) return 1;
        for (size_t j = 0; j < f->rt->remove_files.n; j++) {
            char rm[700];
            if (!kr_snprintf(rm, sizeof rm, "%s/%s", f->dir, f->rt->remove_files.v[j]) &&
                unlink(rm) && errno != ENOENT)
                return kr_cli_errf("cannot remove %s: %s", rm, strerror(errno));
        }
        char tmp[700];
        if (kr_snprintf(tmp, sizeof tmp, "%s.tmp.%ld", f->path, (long)getpid()))
            return kr_cli_errf("runtime file path too long");
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) return kr_cli_errf("cannot write %s: %s", tmp, strerror(errno));
        const char *p = f->content.data ? f->content.data : "";
        size_t left = f->content.len;
        while (left) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                close(fd);
                unlink(tmp);
                return kr_cli_errf("cannot write %s: %s", tmp, strerror(errno));
            }
            p += w;
            left -= (size_t)w;
        }
        if (close(fd) || rename(tmp, f->path)) {
            unlink(tmp);
            return kr_cli_errf("cannot write %s: %s", f->path, strerror(errno));
        }
    }
    return 0;
}

/* The confinement keyrail run sets up (or why not), for explain and the
 * start. */
typedef struct confinement {
    bool on;
    char why[300];  /* when off: why */
    char relay[64], gate[64];
    char server[300]; /* what the relay forwards to */
    kr_confine_opts o;
    kr_buf auto_allow; /* direct-BYOK vendors added to the allow-list */
    uid_t uid;
    gid_t gid;
} confinement;

/* Two ports inside the agent's namespace, which holds nothing else: any
 * pair is free there; random, so an agent cannot count on them. */
static void pick_ports(confinement *c)
{
    c->o.relay_port = (uint16_t)(20000 + randombytes_uniform(20000));
    c->o.connect_port = (uint16_t)(40000 + randombytes_uniform(20000));
    kr_snprintf(c->relay, sizeof c->relay, "http://127.0.0.1:%u", (unsigned)c->o.relay_port);
    kr_snprintf(c->gate, sizeof c->gate, "http://127.0.0.1:%u", (unsigned)c->o.connect_port);
}

/* The egress allow-list: the workspace's EGRESS_ALLOW (the control plane's,
 * org or workspace scope), and the host of a protocol that calls its vendor
 * directly (direct BYOK: the agent holds that vendor's key). */
static int egress_list(confinement *c, const kr_env *payload, const kr_launch *l, kr_diag *d)
{
    const kr_env_var *e = kr_env_get(payload, "EGRESS_ALLOW");
    int rc = kr_egress_parse(e ? e->value : "", &c->o.egress, d);
    if (rc) return rc;
    kr_buf_init(&c->auto_allow, 4096);
    for (int p = 0; p < KR_PROTO__COUNT; p++) {
        const kr_proto_view *pv = &l->proto[p];
        if (!pv->configured || pv->to_proxy || !pv->cred_var[0]) continue;
        const char *h = strstr(pv->host, "://");
        if (!h) continue;
        h += 3;
        bool tls = !strncmp(pv->host, "https", 5);
        char entry[320];
        if (kr_snprintf(entry, sizeof entry, "%s%s", h, strchr(h, ':') ? "" : tls ? ":443" : ":80"))
            continue;
        kr_egress more;
        if (kr_egress_parse(entry, &more, NULL) || more.n != 1 ||
            c->o.egress.n == KR_EGRESS_MAX)
            continue;
        c->o.egress.e[c->o.egress.n++] = more.e[0];
        kr_buf_printf(&c->auto_allow, "%s%s", c->auto_allow.len ? "," : "", entry);
    }
    return 0;
}

static void json_esc(kr_buf *out, const char *s)
{
    kr_buf_putc(out, '"');
    kr_buf_json_str(out, s, strlen(s));
    kr_buf_putc(out, '"');
}

/* explain: the confinement beside the credential decisions. */
static void render_confinement(const confinement *c, bool json, kr_buf *out)
{
    kr_buf allow = KR_BUF_INIT(1 << 16), hidden = KR_BUF_INIT(1 << 16);
    kr_egress_render(&c->o.egress, &allow);
    kr_confine_hidden(&hidden);
    bool root = geteuid() == 0;
    if (!json) {
        if (!c->on) {
            kr_buf_printf(out, "confinement: off (%s): the agent can reach any host\n", c->why);
        } else {
            kr_buf_printf(out,
                          "confinement: on: %s namespaces, only loopback up%s\n"
                          "  relay:  %s -> %s (the keyrail proxy)\n"
                          "  gate:   %s (HTTP CONNECT; names resolved by keyrail run, public "
                          "addresses only)\n"
                          "  egress: %s%s%s%s\n"
                          "  seccomp: io_uring, ptrace, process_vm_*, setns, AF_VSOCK refused; no "
                          "new privileges; keyrail run not ptrace-able\n",
                          root ? "network and mount" : "user, network and mount",
                          root ? "; the agent runs as a non-root user without capabilities" : "",
                          c->relay, c->server[0] ? c->server : "(no keyrail server)", c->gate,
                          allow.len ? allow.data : "(none: nothing but keyrail)",
                          c->auto_allow.len ? " (direct BYOK vendor added: " : "",
                          c->auto_allow.len ? c->auto_allow.data : "", c->auto_allow.len ? ")" : "");
            kr_buf_puts(out, "  hidden:");
            const char *p = hidden.data ? hidden.data : "";
            while (*p) {
                const char *nl = strchr(p, '\n');
                kr_buf_printf(out, " %.*s", (int)(nl - p), p);
                p = nl + 1;
            }
            kr_buf_putc(out, '\n');
        }
    } else {
        kr_buf_printf(out, ",\"confine\":{\"on\":%s", c->on ? "true" : "false");
        if (!c->on) {
            kr_buf_puts(out, ",\"why\":");
            json_esc(out, c->why);
        } else {
            kr_buf_printf(out, ",\"namespaces\":\"%s\",\"drops_to_non_root\":%s,\"relay\":",
                          root ? "network,mount" : "user,network,mount", root ? "true" : "false");
            json_esc(out, c->relay);
            kr_buf_puts(out, ",\"server\":");
            json_esc(out, c->server);
            kr_buf_puts(out, ",\"gate\":");
            json_esc(out, c->gate);
            kr_buf_puts(out, ",\"egress\":[");
            for (size_t i = 0; i < c->o.egress.n; i++) {
                char e[300];
                kr_snprintf(e, sizeof e, "%s%s:%u", c->o.egress.e[i].wildcard ? "*." : "",
                            c->o.egress.e[i].host, (unsigned)c->o.egress.e[i].port);
                if (i) kr_buf_putc(out, ',');
                json_esc(out, e);
            }
            kr_buf_puts(out, "],\"hidden\":[");
            const char *p = hidden.data ? hidden.data : "";
            for (bool first = true; *p; first = false) {
                const char *nl = strchr(p, '\n');
                if (!first) kr_buf_putc(out, ',');
                kr_buf_putc(out, '"');
                kr_buf_json_str(out, p, (size_t)(nl - p));
                kr_buf_putc(out, '"');
                p = nl + 1;
            }
            kr_buf_puts(out, "],\"seccomp_denied\":[\"io_uring\",\"ptrace\",\"process_vm\","
                             "\"setns\",\"AF_VSOCK\"]");
        }
        kr_buf_putc(out, '}');
    }
    kr_buf_free(&allow);
    kr_buf_free(&hidden);
}

/* As root, the agent runs as another user: its HOME (when it has one) is
 * the agent's, and the runtime files go under it. */
static void agent_home(const confinement *c, kr_env *inherited, char *sdir, size_t cap)
{
    struct passwd *pw = getpwuid(c->uid);
    struct stat st;
    if (pw && pw->pw_dir && pw->pw_dir[0] == '/' && !stat(pw->pw_dir, &st) && S_ISDIR(st.st_mode) &&
        st.st_uid == c->uid)
        kr_env_set(inherited, "HOME", pw->pw_dir, KR_ORIGIN_LAUNCHER);
    const kr_env_var *h = kr_env_get(inherited, "HOME");
    sdir[0] = 0;
    if (h && h->value[0] == '/') kr_snprintf(sdir, cap, "%s/.local/state/keyrail/runtimes", h->value);
}

static int write_files_cb(void *arg)
{
    return write_runtime_files(arg);
}

int kr_cmd_run(int argc, char **argv)
{
    static const kr_opt opts[] = {
        {"--server", true, "keyrail server URL (or KEYRAIL_SERVER)"},
        {"--token", true, "workspace token (or KEYRAIL_WORKSPACE_TOKEN)"},
        {"--payload", true, "read the environment from a file written by `keyrail provision`"},
        {"--explain", false, "print every decision and do not start the agent"},
        {"--format", true, "with --explain: text (default) or json"},
        {"--quiet", false, "do not print dropped credentials or refused egress on stderr"},
        {"--runtimes", true, "runtime profiles file (default: the built-in profiles)"},
        {"--confine", false, "run the agent confined (the default; refused where the kernel cannot)"},
        {"--no-confine", false, "run the agent unconfined: it can reach any host"},
        {"--user", true, "as root: the user the confined agent runs as (default $SUDO_UID, else nobody)"},
        {"--ca-file", true, "trust anchors for an https keyrail server (default: the system store)"},
        {"--help", false, "show this help"},
    };
    const char *usage =
        "usage: keyrail run [--server URL | --payload FILE] [--explain] [--no-confine] -- CMD [ARGS…]\n\n"
        "Starts CMD with the workspace's provisioned environment merged into the inherited one,\n"
        "so that each protocol keeps at most one credential -- the one issued for the host the\n"
        "agent will call. Other credentials are dropped, never moved. KEYRAIL_* variables are\n"
        "never passed on. Agents that read their provider from a config file (Codex, Claude\n"
        "Code's settings) get a private one, written under $XDG_STATE_HOME/keyrail/runtimes\n"
        "(or ~/.local/state/keyrail/runtimes), as the runtime profiles say. Without a reachable\n"
        "server or with a refused token, CMD is not run.\n\n"
        "CMD runs confined: in its own network namespace with only loopback, where it reaches\n"
        "keyrail through a relay and other hosts only through keyrail run's CONNECT gate, which\n"
        "opens tunnels to the workspace's egress allow-list (EGRESS_ALLOW) alone; container\n"
        "engine sockets and $XDG_RUNTIME_DIR are hidden. Where the kernel does not allow it,\n"
        "keyrail run refuses unless --no-confine.\n\n"
        "The workspace token comes from KEYRAIL_WORKSPACE_TOKEN (recommended: --token puts it\n"
        "on the command line, where other users' `ps` can read it).";
    kr_args a;
    int prc = kr_args_parse(&a, opts, sizeof opts / sizeof opts[0], argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    bool explain = kr_flag(&a, "--explain");
    if (a.npos) return kr_cli_errf("unexpected argument '%s' (the agent command goes after --)", a.pos[0]), 2;
    if (!explain && a.nrest == 0) return kr_cli_errf("%s", usage), 2;
    if (kr_flag(&a, "--confine") && kr_flag(&a, "--no-confine"))
        return kr_cli_errf("--confine and --no-confine: choose one"), 2;
    const char *server = kr_arg(&a, "--server") ? kr_arg(&a, "--server") : getenv("KEYRAIL_SERVER");
    const char *token = kr_arg(&a, "--token") ? kr_arg(&a, "--token") : getenv("KEYRAIL_WORKSPACE_TOKEN");
    const char *file = kr_arg(&a, "--payload");
    if (!!file == !!(server && *server))
        return kr_cli_errf("give exactly one of --server URL (with a token) or --payload FILE"), 2;
    if (token && *token && kr_cred_classify(token, strlen(token)) != KR_CRED_WORKSPACE_TOKEN)
        return kr_cli_errf("the token given is not a keyrail workspace token (class %s)",
                           kr_cred_class_name(kr_cred_classify(token, strlen(token)))), 2;
    /* confinement: decided before anything is fetched, refused before the agent starts */
    confinement cf;
    memset(&cf, 0, sizeof cf);
    kr_diag d = {{0}};
    if (kr_flag(&a, "--no-confine")) {
        kr_strlcpy(cf.why, "--no-confine", sizeof cf.why);
    } else if (kr_confine_probe(&d)) {
        kr_strlcpy(cf.why, d.msg, sizeof cf.why);
        if (!explain)
            return kr_cli_errf("cannot confine the agent here: %s; the agent was not started (pass "
                               "--no-confine to run it unconfined: it can then reach any host)",
                               d.msg),
                   1;
    } else {
        cf.on = true;
        cf.o.run_as = kr_arg(&a, "--user");
        cf.o.ca_file = kr_arg(&a, "--ca-file");
        cf.o.quiet = kr_flag(&a, "--quiet");
        if (kr_confine_target(&cf.o, &cf.uid, &cf.gid, &d)) return kr_cli_errf("%s", d.msg), 2;
        pick_ports(&cf);
    }
    kr_buf text = KR_BUF_INIT(KR_LAUNCH_MAX_PAYLOAD);
    char proxy_origin[300] = "";
    if (file) {
        char *t;
        size_t n;
        int rc = kr_read_file(file, KR_LAUNCH_MAX_PAYLOAD, &t, &n, &d);
        if (rc) return kr_cli_errf("payload: %s; the agent was not started", kr_diag_msg(&d, rc));
        kr_buf_append(&text, t, n);
        sodium_memzero(t, n);
        free(t);
    } else {
        if (!token || !*token) return kr_cli_errf("--server needs a workspace token (--token)"), 2;
        if (kr_url_origin(server, proxy_origin, sizeof proxy_origin))
            return kr_cli_errf("--server '%s' is not an http(s) URL", server), 2;
        if (fetch_payload(server, token, kr_arg(&a, "--ca-file"), &text)) {
            kr_buf_free(&text);
            return 1;
        }
    }
    kr_env payload, inherited = {0};
    int rc = kr_payload_parse(text.data ? text.data : "", text.len, &payload, &d);
    if (text.data) sodium_memzero(text.data, text.len);
    kr_buf_free(&text);
    if (rc) return kr_cli_errf("payload: %s; the agent was not started", kr_diag_msg(&d, rc));
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e) continue;
        char key[256];
        if (kr_memlcpy(key, sizeof key, *e, (size_t)(eq - *e))) continue;
        kr_env_set(&inherited, key, eq + 1, KR_ORIGIN_INHERITED);
    }
    kr_runtimes *rts;
    if ((rc = kr_runtimes_load(kr_arg(&a, "--runtimes"), &rts, &d))) {
        kr_env_free(&payload);
        kr_env_free(&inherited);
        return kr_cli_errf("runtime profiles: %s; the agent was not started", kr_diag_msg(&d, rc));
    }
    char sdir[512];
    if (cf.on && geteuid() == 0) agent_home(&cf, &inherited, sdir, sizeof sdir);
    else state_dir(sdir, sizeof sdir);
    kr_launch_in in = {&payload, &inherited, token, proxy_origin[0] ? proxy_origin : NULL, rts,
                       sdir[0] ? sdir : NULL, a.rest, a.nrest, cf.on ? cf.relay : NULL,
                       cf.on ? cf.gate : NULL};
    kr_launch l;
    rc = kr_launch_compute(&in, &l, &d);
    if (!rc && cf.on) {
        rc = egress_list(&cf, &payload, &l, &d);
        /* the relay forwards to the server, or (--payload) to the proxy the payload names */
        kr_strlcpy(cf.server, proxy_origin, sizeof cf.server);
        for (int p = 0; p < KR_PROTO__COUNT && !cf.server[0]; p++)
            if (l.proto[p].to_proxy) kr_strlcpy(cf.server, l.proto[p].host, sizeof cf.server);
        cf.o.server = cf.server;
    }
    kr_env_free(&payload);
    kr_env_free(&inherited);
    if (rc) {
        kr_runtimes_free(rts);
        kr_buf_free(&cf.auto_allow);
        return kr_cli_errf("%s; the agent was not started", kr_diag_msg(&d, rc));
    }
    if (explain) {
        kr_buf out = KR_BUF_INIT(1 << 20);
        const char *fmt = kr_arg(&a, "--format");
        if (fmt && !strcmp(fmt, "json")) {
            kr_launch_render_json(&l, &out);
            if (out.len && out.data[out.len - 1] == '}') out.len--; /* the confinement joins it */
            render_confinement(&cf, true, &out);
            kr_buf_puts(&out, "}\n");
        } else {
            kr_launch_render_text(&l, &out);
            render_confinement(&cf, false, &out);
        }
        fwrite(out.data, 1, out.len, stdout);
        kr_buf_free(&out);
        kr_buf_free(&cf.auto_allow);
        kr_launch_free(&l);
        kr_runtimes_free(rts);
        return 0;
    }
    if (!cf.on && write_runtime_files(&l)) {
        kr_launch_free(&l);
        kr_runtimes_free(rts);
        fprintf(stderr, "keyrail run: the agent was not started\n");
        return 1;
    }
    if (!kr_flag(&a, "--quiet"))
        for (size_t i = 0; i < l.nd; i++)
            if (l.d[i].action == KR_ACT_DROP && l.d[i].cls != KR_CRED_NONE)
                fprintf(stderr, "keyrail run: dropped %s (%s %s, %s): %s\n", l.d[i].var,
                        kr_cred_class_name(l.d[i].cls), l.d[i].fp, kr_origin_name(l.d[i].origin),
                        l.d[i].why);
    char **envp = kr_xcalloc(l.env.n + 1, sizeof *envp);
    for (size_t i = 0; i < l.env.n; i++) {
        size_t kl = strlen(l.env.v[i].key), vl = strlen(l.env.v[i].value);
        envp[i] = kr_xmalloc(kl + vl + 2);
        memcpy(envp[i], l.env.v[i].key, kl);
        envp[i][kl] = '=';
        memcpy(envp[i] + kl + 1, l.env.v[i].value, vl + 1);
    }
    fflush(NULL);
    int status;
    if (cf.on) {
        /* the sandbox writes the runtime files as the agent's user */
        cf.o.before_exec = write_files_cb;
        cf.o.arg = &l;
        status = kr_confine_run(&cf.o, l.argv, envp);
    } else {
        execvpe(l.argv[0], l.argv, envp);
        kr_cli_errf("cannot start %s: %s", a.rest[0], strerror(errno));
        status = 127;
    }
    for (size_t i = 0; i < l.env.n; i++) {
        sodium_memzero(envp[i], strlen(envp[i]));
        free(envp[i]);
    }
    free(envp);
    kr_buf_free(&cf.auto_allow);
    kr_launch_free(&l);
    kr_runtimes_free(rts);
    return status;
}
