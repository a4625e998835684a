// The `ipfly` command-line tool. RunCli is the whole program; main() only calls it.
//
// Exit codes: 0 success; 1 the operation failed (fetch, verification, I/O); 2 bad usage or
// invalid input (unknown flag, malformed CID, bad config).
#pragma once

namespace ipfly::cli {

int RunCli(int argc, char** argv);

}  // namespace ipfly::cli
