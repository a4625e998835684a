// ipfly-fake-powergate: the test Powergate (tests/support/fake_powergate.h) as a process, for
// bench/powergate.sh and manual tries. Loopback only. Objects are imported from files at start:
//   ipfly-fake-powergate --add layer.tgz:cold --add other.bin:hot --token T [--thaw-ms 2000]
// Prints "object <state> <cid> <file>" per file, then "ready grpc=HOST:PORT proxy=URL", and
// serves until SIGINT/SIGTERM.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/support/fake_powergate.h"

int main(int argc, char** argv) {
  CLI::App app{"Fake Powergate (powergate.user.v1 over gRPC + IPFS proxy) on 127.0.0.1"};
  ipfly::testing::FakePowergateOptions o;
  std::vector<std::string> adds, tokens;
  int thaw_ms = 2000;
  app.add_option("--add", adds, "FILE:hot|cold|both: import FILE as an object in that state");
  app.add_option("--token", tokens, "Accepted user token (repeatable; default test-token)");
  app.add_option("--grpc-port", o.grpc_port, "gRPC port (default: any free port)");
  app.add_option("--http-port", o.http_port, "IPFS proxy port (default: any free port)");
  app.add_option("--thaw-ms", thaw_ms, "How long a thaw job takes (default 2000)");
  app.add_option("--profile", o.profile, "Import profile (default kubo-v1)");
  CLI11_PARSE(app, argc, argv);
  if (!tokens.empty()) o.tokens = tokens;
  o.thaw_time = std::chrono::milliseconds(thaw_ms);

  // Block the signals before any thread starts, then wait for them synchronously.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto pg = ipfly::testing::FakePowergate::Start(o);
  if (!pg.ok()) {
    std::fprintf(stderr, "ipfly-fake-powergate: %s\n", pg.error().ToString().c_str());
    return 1;
  }
  for (const std::string& spec : adds) {
    size_t colon = spec.rfind(':');
    std::string file = colon == std::string::npos ? spec : spec.substr(0, colon);
    std::string state = colon == std::string::npos ? "hot" : spec.substr(colon + 1);
    if (state != "hot" && state != "cold" && state != "both") {
      std::fprintf(stderr, "ipfly-fake-powergate: --add %s: state must be hot, cold or both\n",
                   spec.c_str());
      return 2;
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "ipfly-fake-powergate: cannot read %s\n", file.c_str());
      return 1;
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto cid = (*pg)->AddObject(ipfly::AsBytes(bytes), state != "cold", state != "hot");
    if (!cid.ok()) {
      std::fprintf(stderr, "ipfly-fake-powergate: %s: %s\n", file.c_str(),
                   cid.error().ToString().c_str());
      return 1;
    }
    std::printf("object %s %s %s\n", state.c_str(), cid->ToString().c_str(), file.c_str());
  }
  std::printf("ready grpc=%s proxy=%s\n", (*pg)->address().c_str(), (*pg)->proxy_url().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
