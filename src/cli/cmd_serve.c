/* cmd_serve.c -- `keyrail serve`: load config, then run it (src/serve). */
#include "cli/cli.h"
#include "core/log.h"
#include "serve/serve.h"

#include <string.h>

int kr_cmd_serve(int argc, char **argv)
{
    static const kr_opt opts[] = {
        KR_COMMON_OPTS,
        {"--listen", true, "HOST:PORT to listen on (server.listen)"},
        {"--public-url", true, "URL workspaces reach this proxy at (server.public_url)"},
        {"--log-file", true, "JSON log destination (server.log_file)"},
        {"--dev", false, "development: create the master key file if it is missing (loudly)"},
    };
    const char *usage =
        "usage: keyrail serve [--config FILE] [--db URL] [--listen HOST:PORT] [--dev]\n\n"
        "Runs the LLM proxy and the workspace API. Refuses to start without a master key\n"
        "(KEYRAIL_MASTER_KEY or secrets.master_key_file) unless --dev, which creates one.\n"
        "Platform vendor keys come from the environment variables the registry names\n"
        "(platform_key_env). SIGTERM drains: no new connections, running requests finish\n"
        "within server.shutdown_grace_ms.";
    kr_args a;
    int prc = kr_args_parse(&a, opts, sizeof opts / sizeof opts[0], argc, argv, usage);
    if (prc) return prc < 0 ? 2 : 0;
    if (a.npos) return kr_cli_errf("%s", usage), 2;
    kr_cli c;
    if (kr_cli_init(&c, &a)) return 1;
    kr_diag d = {{0}};
    int rc = 0;
    if (kr_arg(&a, "--listen")) rc = kr_config_set(&c.cfg, "server.listen", kr_arg(&a, "--listen"), KR_CFG_FLAG, &d);
    if (!rc && kr_arg(&a, "--public-url"))
        rc = kr_config_set(&c.cfg, "server.public_url", kr_arg(&a, "--public-url"), KR_CFG_FLAG, &d);
    if (!rc && kr_arg(&a, "--log-file"))
        rc = kr_config_set(&c.cfg, "server.log_file", kr_arg(&a, "--log-file"), KR_CFG_FLAG, &d);
    if (rc) return kr_cli_errf("%s", kr_diag_msg(&d, rc));
    if (kr_log_open(c.cfg.log_file)) return kr_cli_errf("cannot open log file %s", c.cfg.log_file);
    if (kr_flag(&a, "--dev") && !c.cfg.master_key_file[0])
        kr_strlcpy(c.cfg.master_key_file, "keyrail-dev.key", sizeof c.cfg.master_key_file);
    rc = kr_serve_run(&c.cfg, kr_flag(&a, "--dev"));
    kr_log_close();
    kr_cli_free(&c);
    return rc;
}
