/* keyrail -- control plane and LLM gateway for AI agent workspaces.
 * Everything lives in the library; main only dispatches. */
#include "cli/cli.h"

#include <sodium.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (sodium_init() < 0) {
        fputs("keyrail: libsodium failed to initialise\n", stderr);
        return 1;
    }
    return kr_cli_main(argc, argv);
}
