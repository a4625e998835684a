#include "snapshotter/metrics.h"

#include <httplib.h>

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/base/log.h"
#include "snapshotter/snapshot_service.h"

namespace ipfly::snapshotter {

void Metrics::CountLazyMount() {
  std::lock_guard lk(mu_);
  ++lazy_mounts_;
}
void Metrics::CountFallback(const std::string& reason) {
  std::lock_guard lk(mu_);
  ++fallbacks_[reason];
}
void Metrics::CountRpc(const std::string& method, const std::string& code) {
  std::lock_guard lk(mu_);
  ++rpcs_[{method, code}];
}
uint64_t Metrics::lazy_mounts() const {
  std::lock_guard lk(mu_);
  return lazy_mounts_;
}
std::map<std::string, uint64_t> Metrics::fallbacks() const {
  std::lock_guard lk(mu_);
  return fallbacks_;
}
std::map<std::pair<std::string, std::string>, uint64_t> Metrics::rpcs() const {
  std::lock_guard lk(mu_);
  return rpcs_;
}

namespace {

// Prometheus label value escaping: backslash, double quote, newline.
std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else {
      o += c;
    }
  }
  return o;
}

}  // namespace

std::string RenderPrometheus(SnapshotService& service) {
  std::ostringstream o;
  Metrics& m = service.metrics();
  o << "# HELP ipfly_snapshotter_lazy_mounts_total Layers served lazily (committed from a remote "
       "layer instead of being downloaded).\n"
       "# TYPE ipfly_snapshotter_lazy_mounts_total counter\n"
    << "ipfly_snapshotter_lazy_mounts_total " << m.lazy_mounts() << "\n";
  o << "# HELP ipfly_snapshotter_fallbacks_total Prepares with snapshot.ref that fell back to an "
       "ordinary snapshot, by reason.\n"
       "# TYPE ipfly_snapshotter_fallbacks_total counter\n";
  for (const auto& [reason, n] : m.fallbacks()) {
    o << "ipfly_snapshotter_fallbacks_total{reason=\"" << Esc(reason) << "\"} " << n << "\n";
  }
  o << "# HELP ipfly_snapshotter_rpc_total Snapshot service RPCs by method and gRPC code.\n"
       "# TYPE ipfly_snapshotter_rpc_total counter\n";
  for (const auto& [k, n] : m.rpcs()) {
    o << "ipfly_snapshotter_rpc_total{method=\"" << Esc(k.first) << "\",code=\"" << Esc(k.second)
      << "\"} " << n << "\n";
  }
  std::vector<LazyLayers::LayerStatus> layers;
  if (service.lazy()) layers = service.lazy()->Layers();
  o << "# HELP ipfly_snapshotter_lazy_enabled 1 if lazy layers are available.\n"
       "# TYPE ipfly_snapshotter_lazy_enabled gauge\n"
    << "ipfly_snapshotter_lazy_enabled " << (service.lazy() ? 1 : 0) << "\n";
  o << "# HELP ipfly_snapshotter_lazy_layers_attached Lazy layers currently attached.\n"
       "# TYPE ipfly_snapshotter_lazy_layers_attached gauge\n"
    << "ipfly_snapshotter_lazy_layers_attached " << layers.size() << "\n";
  auto all = service.store().List();
  if (all.ok()) {
    std::map<std::string, uint64_t> kinds{{"active", 0}, {"view", 0}, {"committed", 0}};
    for (const auto& r : *all) ++kinds[std::string(KindName(r.kind))];
    o << "# HELP ipfly_snapshotter_snapshots Snapshots in the metadata store, by kind.\n"
         "# TYPE ipfly_snapshotter_snapshots gauge\n";
    for (const auto& [k, n] : kinds) {
      o << "ipfly_snapshotter_snapshots{kind=\"" << k << "\"} " << n << "\n";
    }
  }
  o << "# HELP ipfly_snapshotter_layer_bytes_fetched Compressed bytes fetched per lazy layer.\n"
       "# TYPE ipfly_snapshotter_layer_bytes_fetched gauge\n";
  for (const auto& l : layers) {
    o << "ipfly_snapshotter_layer_bytes_fetched{id=\"" << Esc(l.id) << "\",digest=\""
      << Esc(l.layer.digest) << "\",cid=\"" << Esc(l.layer.blob_cid) << "\"} " << l.bytes_fetched
      << "\n";
  }
  o << "# HELP ipfly_snapshotter_layer_blob_size Compressed size per lazy layer.\n"
       "# TYPE ipfly_snapshotter_layer_blob_size gauge\n";
  for (const auto& l : layers) {
    o << "ipfly_snapshotter_layer_blob_size{id=\"" << Esc(l.id) << "\",digest=\""
      << Esc(l.layer.digest) << "\",cid=\"" << Esc(l.layer.blob_cid) << "\"} " << l.blob_size
      << "\n";
  }
  o << "# HELP ipfly_snapshotter_layer_background_complete 1 once a layer is fully fetched.\n"
       "# TYPE ipfly_snapshotter_layer_background_complete gauge\n";
  for (const auto& l : layers) {
    o << "ipfly_snapshotter_layer_background_complete{id=\"" << Esc(l.id) << "\"} "
      << (l.background_complete ? 1 : 0) << "\n";
  }
  if (service.lazy()) o << service.lazy()->MetricsText();
  return o.str();
}

std::string RenderStatusJson(SnapshotService& service) {
  using nlohmann::json;
  std::map<std::string, LazyLayers::LayerStatus> by_id;
  if (service.lazy()) {
    for (auto& l : service.lazy()->Layers()) by_id[l.id] = l;
  }
  json snaps = json::array();
  auto all = service.store().List();
  if (all.ok()) {
    for (const auto& r : *all) {
      json j = {{"key", r.key},
                {"id", r.id},
                {"kind", std::string(KindName(r.kind))},
                {"parent", r.parent},
                {"created_ns", r.created_ns},
                {"size", r.size},
                {"inodes", r.inodes}};
      if (r.lazy) {
        json l = {{"blob_cid", r.lazy->blob_cid},
                  {"index_cid", r.lazy->index_cid},
                  {"digest", r.lazy->digest},
                  {"size", r.lazy->size},
                  {"resolved_by", r.lazy->resolved_by}};
        auto it = by_id.find(std::to_string(r.id));
        l["attached"] = it != by_id.end();
        if (it != by_id.end()) {
          l["dir"] = it->second.dir;
          l["bytes_fetched"] = it->second.bytes_fetched;
          l["blob_size"] = it->second.blob_size;
          l["background_complete"] = it->second.background_complete;
          l["span_cache_bytes"] = it->second.span_cache_bytes;
          l["in_use"] = it->second.in_use;
        }
        j["lazy"] = std::move(l);
      }
      snaps.push_back(std::move(j));
    }
  }
  json fb = json::object();
  for (const auto& [k, n] : service.metrics().fallbacks()) fb[k] = n;
  json doc = {{"lazy_enabled", service.lazy() != nullptr},
              {"lazy_mounts", service.metrics().lazy_mounts()},
              {"fallbacks", std::move(fb)},
              {"snapshots", std::move(snaps)}};
  if (service.lazy()) {
    auto sc = service.lazy()->SpanCache();
    doc["span_cache"] = {{"bytes", sc.bytes},
                         {"max_bytes", sc.max_bytes},
                         {"evicted_layers", sc.evicted_layers},
                         {"evicted_bytes", sc.evicted_bytes},
                         {"over_cap_in_use", sc.over_cap_in_use}};
  }
  if (!all.ok()) doc["error"] = all.error().ToString();
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

struct MetricsServer::Impl {
  httplib::Server server;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                            SnapshotService* service) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgument("metrics address '" + listen + "' must be HOST:PORT");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    return InvalidArgument("metrics address '" + listen + "': bad port");
  }
  auto m = std::unique_ptr<MetricsServer>(new MetricsServer);
  m->impl_ = std::make_unique<Impl>();
  auto& srv = m->impl_->server;
  srv.Get("/metrics", [service](const httplib::Request&, httplib::Response& res) {
    res.set_content(RenderPrometheus(*service), "text/plain; version=0.0.4");
  });
  srv.Get("/status", [service](const httplib::Request&, httplib::Response& res) {
    res.set_content(RenderStatusJson(*service), "application/json");
  });
  if (port == 0) {
    port = srv.bind_to_any_port(host);
    if (port < 0) return Unavailable("cannot listen on " + listen);
  } else if (!srv.bind_to_port(host, port)) {
    return Unavailable("cannot listen on " + listen);
  }
  m->port_ = port;
  m->thread_ = std::thread([impl = m->impl_.get()] { impl->server.listen_after_bind(); });
  IPFLY_LOG_INFO("snapshotter: metrics on http://{}:{}/metrics", host, port);
  return m;
}

MetricsServer::~MetricsServer() {
  if (impl_) impl_->server.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace ipfly::snapshotter
