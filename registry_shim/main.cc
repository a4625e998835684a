// ipfly-registry: thin main over registry_shim/ (flags, config, signals).
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "core/base/config.h"
#include "core/base/log.h"
#include "registry_shim/server.h"

namespace {

bool SplitHostPort(const std::string& s, std::string* host, int* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  *host = s.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  try {
    *port = std::stoi(s.substr(colon + 1));
  } catch (...) {
    return false;
  }
  return *port >= 0 && *port < 65536;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the signals before any thread starts (logging may start one); a dedicated thread
  // waits for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CLI::App app{"ipfly-registry: OCI distribution registry on IPFS"};
  std::string listen, root, config_path, upstream, log_level, publish_kubo;
  std::vector<std::string> sources;
  size_t threads = 0;
  bool read_only = false;
  bool exit_with_parent = false;
  app.add_option("--listen", listen,
                 "HOST:PORT to listen on (default from config: 127.0.0.1:5000)");
  app.add_option("--root", root, "catalog, uploads (and, without --config, the block store)");
  app.add_option("--config", config_path, "ipfly TOML config file");
  app.add_option("--upstream", upstream, "pull-through mirror upstream registry URL");
  app.add_option("--source", sources, "extra block source: gateway=URL or kubo=URL (repeatable)");
  app.add_option("--publish-kubo", publish_kubo,
                 "Kubo RPC URL to publish pushed and mirrored content to (dag/import + pin)");
  app.add_option("--threads", threads, "HTTP worker threads (default 128)");
  app.add_flag("--read-only", read_only, "refuse pushes and deletes");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error (default info)");
  app.add_flag("--exit-with-parent", exit_with_parent,
               "get SIGTERM when the parent process dies (test harnesses)");
  CLI11_PARSE(app, argc, argv);
  if (exit_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 1;  // the parent is already gone
  }

  ipfly::Config config;
  if (!config_path.empty()) {
    auto c = ipfly::Config::Load(config_path);
    if (!c.ok()) {
      std::fprintf(stderr, "ipfly-registry: %s\n", c.error().ToString().c_str());
      return 2;
    }
    config = std::move(*c);
  } else {
    config = ipfly::Config::Defaults();
    if (!root.empty()) {
      // Self-contained: the embedded block store and the cache live under --root.
      config.store_dir = root + "/store";
      config.cache_dir = root + "/cache";
    }
  }
  if (!root.empty()) config.registry.root = root;
  if (config.registry.root.empty()) config.registry.root = config.store_dir + "/registry";
  if (!listen.empty()) config.registry.listen = listen;
  if (!upstream.empty()) config.registry.upstream = upstream;
  if (read_only) config.registry.read_only = true;
  if (!publish_kubo.empty()) config.registry.publish_kubo = publish_kubo;
  for (const auto& s : sources) {
    auto spec = ipfly::SourceSpec::Parse(s);
    if (!spec.ok()) {
      std::fprintf(stderr, "ipfly-registry: --source %s: %s\n", s.c_str(),
                   spec.error().ToString().c_str());
      return 2;
    }
    config.sources.push_back(*spec);
  }
  if (!log_level.empty()) config.log_level = log_level;
  ipfly::InitLogging(config.log_level.empty() ? "info" : config.log_level);

  std::string host;
  int port = 0;
  if (!SplitHostPort(config.registry.listen, &host, &port)) {
    std::fprintf(stderr, "ipfly-registry: bad --listen %s (want HOST:PORT)\n",
                 config.registry.listen.c_str());
    return 2;
  }

  ipfly::registry::ServerOptions opts;
  opts.config = config;
  opts.threads = threads;
  auto server = ipfly::registry::RegistryServer::Create(std::move(opts));
  if (!server.ok()) {
    std::fprintf(stderr, "ipfly-registry: %s\n", server.error().ToString().c_str());
    return 1;
  }
  auto bound = (*server)->Bind(host, port);
  if (!bound.ok()) {
    std::fprintf(stderr, "ipfly-registry: %s\n", bound.error().ToString().c_str());
    return 1;
  }
  IPFLY_LOG_WARN("ipfly-registry listening on {}:{} (root {})", host, *bound, config.registry.root);
  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    IPFLY_LOG_WARN("ipfly-registry: signal {}, shutting down", sig);
    (*server)->Stop();
  });
  auto st = (*server)->Serve();
  // Serve returned (Stop or listener failure): wake the signal thread if it still waits.
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  if (!st.ok()) {
    std::fprintf(stderr, "ipfly-registry: %s\n", st.error().ToString().c_str());
    return 1;
  }
  return 0;
}
