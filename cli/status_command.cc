#include "cli/status_command.h"

#include <httplib.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/powergate_commands.h"

namespace ipfly::cli {
namespace {

std::string Human(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string Short(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 3) + "...";
}

}  // namespace

std::optional<CliError> CmdStatus(const GlobalOptions& g, const StatusOptions& o) {
  std::string url = o.snapshotter;
  if (url.empty()) {
    auto env = Env::Make(g);
    if (!env.ok()) return FromError(env.error());
    url = (*env)->config().snapshotter.metrics_listen;
    if (url.empty()) {
      return CliError{kExitUsage,
                      "snapshotter.metrics_listen is not set in the config; pass --snapshotter "
                      "HOST:PORT"};
    }
  }
  if (url.find("://") == std::string::npos) url = "http://" + url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  httplib::Client cli(url);
  cli.set_connection_timeout(5);
  cli.set_read_timeout(30);
  auto res = cli.Get("/status");
  if (!res) {
    return CliError{kExitFailure, "cannot reach ipfly-snapshotter at " + url + ": " +
                                      httplib::to_string(res.error())};
  }
  if (res->status != 200) {
    return CliError{kExitFailure, url + "/status: HTTP " + std::to_string(res->status)};
  }
  if (o.json) {
    std::fwrite(res->body.data(), 1, res->body.size(), stdout);
    return std::nullopt;
  }
  auto doc = nlohmann::json::parse(res->body, nullptr, false);
  if (!doc.is_object() || !doc["snapshots"].is_array()) {
    return CliError{kExitFailure, url + "/status: not an ipfly-snapshotter status document"};
  }
  size_t lazy = 0, total = doc["snapshots"].size();
  for (const auto& s : doc["snapshots"]) lazy += s.contains("lazy") ? 1 : 0;
  std::printf("ipfly-snapshotter %s: lazy layers %s, %zu snapshots, %zu lazy, %llu lazy mounts\n",
              url.c_str(), doc.value("lazy_enabled", false) ? "on" : "OFF", total, lazy,
              static_cast<unsigned long long>(doc.value("lazy_mounts", 0ull)));
  if (lazy > 0 || o.all) {
    std::printf("\n%-28s %-10s %-24s %-24s %-22s %s\n", "SNAPSHOT", "KIND", "DIGEST", "CID",
                "FETCHED / SIZE", "STATE");
  }
  for (const auto& s : doc["snapshots"]) {
    std::string key = s.value("key", "");
    std::string kind = s.value("kind", "");
    if (!s.contains("lazy")) {
      if (o.all) {
        std::printf("%-28s %-10s %-24s %-24s %-22s %s\n", Short(key, 28).c_str(), kind.c_str(), "-",
                    "-", Human(s.value("size", 0ull)).c_str(), "local");
      }
      continue;
    }
    const auto& l = s["lazy"];
    uint64_t fetched = l.value("bytes_fetched", 0ull);
    uint64_t size = l.value("blob_size", l.value("size", 0ull));
    std::string fs = Human(fetched) + " / " + Human(size);
    if (size > 0) {
      char pct[16];
      std::snprintf(pct, sizeof pct, " %.0f%%", 100.0 * static_cast<double>(fetched) / size);
      fs += pct;
    }
    std::string state = !l.value("attached", false)             ? "DETACHED"
                        : l.value("background_complete", false) ? "complete"
                                                                : "lazy";
    std::printf("%-28s %-10s %-24s %-24s %-22s %s\n", Short(key, 28).c_str(), kind.c_str(),
                Short(l.value("digest", std::string("-")), 24).c_str(),
                Short(l.value("blob_cid", std::string("-")), 24).c_str(), fs.c_str(),
                state.c_str());
  }
  if (doc.contains("span_cache") && doc["span_cache"].is_object()) {
    const auto& sc = doc["span_cache"];
    uint64_t max = sc.value("max_bytes", 0ull);
    std::printf("\nspan cache: %s of %s", Human(sc.value("bytes", 0ull)).c_str(),
                max ? Human(max).c_str() : "no cap");
    std::printf(", evicted %llu layers (%s)",
                static_cast<unsigned long long>(sc.value("evicted_layers", 0ull)),
                Human(sc.value("evicted_bytes", 0ull)).c_str());
    if (uint64_t n = sc.value("over_cap_in_use", 0ull)) {
      std::printf(", over the cap with layers in use %llu times",
                  static_cast<unsigned long long>(n));
    }
    std::printf("\n");
  }
  std::printf("\nfallbacks (downloaded by containerd):");
  if (doc["fallbacks"].empty()) std::printf(" none");
  for (const auto& [reason, n] : doc["fallbacks"].items()) {
    std::printf(" %s=%llu", reason.c_str(), static_cast<unsigned long long>(n.get<uint64_t>()));
  }
  std::printf("\n");
  if (auto env = Env::Make(g); env.ok()) PrintColdRetrievals((*env)->config(), url);
  return std::nullopt;
}

}  // namespace ipfly::cli
