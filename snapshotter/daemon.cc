#include "snapshotter/daemon.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/log.h"
#include "snapshotter/fuse_lazy_layers.h"
#include "snapshotter/grpc_server.h"
#include "snapshotter/metrics.h"
#include "snapshotter/snapshot_service.h"

namespace ipfly::snapshotter {

int RunSnapshotterMain(int argc, char** argv) {
  CLI::App app{"ipfly-snapshotter: containerd proxy snapshotter with lazy layers from IPFS"};
  std::string config_path, socket, root, resolver, metrics, log_level, span_cache_max;
  std::vector<std::string> sources;
  bool no_lazy = false;
  app.add_option("--config", config_path, "TOML config file (default /etc/ipfly/config.toml)");
  app.add_option("--socket", socket, "gRPC unix socket (snapshotter.socket)");
  app.add_option("--root", root, "state directory (snapshotter.root)");
  app.add_option("--resolver", resolver, "registry shim URL for digest -> CID lookups");
  app.add_option("--source", sources, "block source gateway=URL | kubo=URL (repeatable)");
  app.add_option("--metrics", metrics, "HOST:PORT for /metrics and /status");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error");
  app.add_option("--span-cache-max-size", span_cache_max,
                 "cap on the span caches of all lazy layers, e.g. 20GiB; 0 = none "
                 "(snapshotter.span_cache_max_size)");
  app.add_flag("--no-lazy", no_lazy, "plain overlay snapshotter, no lazy layers");
  CLI11_PARSE(app, argc, argv);

  Config cfg = Config::Defaults();
  if (config_path.empty() && ::access("/etc/ipfly/config.toml", R_OK) == 0 && geteuid() == 0) {
    config_path = "/etc/ipfly/config.toml";
  }
  if (!config_path.empty()) {
    auto c = Config::Load(config_path);
    if (!c.ok()) {
      std::fprintf(stderr, "ipfly-snapshotter: %s\n", c.error().ToString().c_str());
      return 2;
    }
    cfg = std::move(*c);
  }
  auto& sc = cfg.snapshotter;
  if (!socket.empty()) sc.socket = socket;
  if (!root.empty()) sc.root = root;
  if (!resolver.empty()) sc.resolver = resolver;
  if (!metrics.empty()) sc.metrics_listen = metrics;
  if (!log_level.empty()) cfg.log_level = log_level;
  if (!span_cache_max.empty()) {
    auto n = ParseByteSize(span_cache_max);
    if (!n.ok()) {
      std::fprintf(stderr, "ipfly-snapshotter: --span-cache-max-size: %s\n",
                   n.error().message().c_str());
      return 2;
    }
    sc.span_cache_max_bytes = *n;
  }
  if (!sources.empty()) {
    cfg.sources.clear();
    for (const auto& s : sources) {
      auto spec = SourceSpec::Parse(s);
      if (!spec.ok()) {
        std::fprintf(stderr, "ipfly-snapshotter: %s\n", spec.error().message().c_str());
        return 2;
      }
      cfg.sources.push_back(*spec);
    }
  }
  if (sc.root.empty()) sc.root = cfg.store_dir + "/snapshotter";
  if (cfg.cache_dir.empty()) cfg.cache_dir = cfg.store_dir + "/cache";
  std::string level = cfg.log_level;
  if (level.empty() && !std::getenv("IPFLY_LOG")) level = "info";
  InitLogging(level);

  // Signals are taken by sigwait below; block them before any thread exists so that every
  // thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::error_code ec;
  std::filesystem::create_directories(sc.root, ec);
  if (ec) {
    IPFLY_LOG_ERROR("cannot create {}: {}", sc.root, ec.message());
    return 1;
  }
  std::unique_ptr<LazyLayers> lazy;
  if (!no_lazy) {
    auto l = MakeFuseLazyLayers(cfg, sc.root);
    if (l.ok()) {
      lazy = std::move(*l);
    } else {
      IPFLY_LOG_WARN("lazy layers are off, running as a plain overlay snapshotter: {}",
                     l.error().ToString());
    }
  }
  auto service = SnapshotService::Open(sc.root, lazy.get());
  if (!service.ok()) {
    IPFLY_LOG_ERROR("cannot open snapshotter state in {}: {}", sc.root, service.error().ToString());
    return 1;
  }
  auto server = GrpcServer::Start(sc.socket, service->get());
  if (!server.ok()) {
    IPFLY_LOG_ERROR("{}", server.error().ToString());
    return 1;
  }
  std::unique_ptr<MetricsServer> metrics_server;
  if (!sc.metrics_listen.empty()) {
    auto m = MetricsServer::Start(sc.metrics_listen, service->get());
    if (!m.ok()) {
      IPFLY_LOG_ERROR("{}", m.error().ToString());
      return 1;
    }
    metrics_server = std::move(*m);
  }
  IPFLY_LOG_INFO("ipfly-snapshotter ready: socket {} root {} lazy {}", sc.socket, sc.root,
                 lazy ? "on" : "off");

  int sig = 0;
  while (sigwait(&sigs, &sig) != 0) {
  }
  IPFLY_LOG_INFO("signal {}: shutting down", sig);
  (*server)->Shutdown();
  metrics_server.reset();
  server->reset();
  service->reset();
  lazy.reset();  // unmounts the FUSE filesystem last: no RPC can use it any more
  return 0;
}

}  // namespace ipfly::snapshotter
