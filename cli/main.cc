#include "cli/cli.h"

int main(int argc, char** argv) { return ipfly::cli::RunCli(argc, argv); }
