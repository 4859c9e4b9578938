/* Commands not built yet. */
#include "cli/cli.h"

int kr_cmd_credits(int argc, char **argv)
{
    (void)argc, (void)argv;
    return kr_cli_errf("credits: not built yet");
}
int kr_cmd_usage(int argc, char **argv)
{
    (void)argc, (void)argv;
    return kr_cli_errf("usage: not built yet");
}
