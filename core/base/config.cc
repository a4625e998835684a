#include "core/base/config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <set>
#include <sstream>

namespace ipfly {

Result<SourceSpec> SourceSpec::Parse(std::string_view spec) {
  auto eq = spec.find('=');
  if (eq == std::string_view::npos) {
    return InvalidArgument("source '" + std::string(spec) +
                           "': expected KIND=URL with KIND gateway or kubo");
  }
  std::string_view kind = spec.substr(0, eq), url = spec.substr(eq + 1);
  SourceSpec s;
  if (kind == "gateway")
    s.kind = Kind::kGateway;
  else if (kind == "kubo")
    s.kind = Kind::kKubo;
  else
    return InvalidArgument("source '" + std::string(spec) + "': unknown kind '" +
                           std::string(kind) + "' (expected gateway or kubo)");
  if (!(url.starts_with("http://") || url.starts_with("https://")) || url.size() < 10) {
    return InvalidArgument("source '" + std::string(spec) +
                           "': URL must start with http:// or https://");
  }
  while (url.ends_with('/')) url.remove_suffix(1);
  s.url = std::string(url);
  return s;
}

std::string SourceSpec::ToString() const {
  return (kind == Kind::kGateway ? "gateway=" : "kubo=") + url;
}

std::string DefaultStoreDir() {
  if (geteuid() == 0) return "/var/lib/ipfly";
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/ipfly";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.local/share/ipfly";
}

Config Config::Defaults() {
  Config c;
  c.store_dir = DefaultStoreDir();
  return c;
}

Result<uint64_t> ParseByteSize(std::string_view s) {
  size_t i = 0;
  uint64_t v = 0;
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) {
    return InvalidArgument("size '" + std::string(s) + "' is not a number");
  }
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
    if (v > (UINT64_MAX - 9) / 10)
      return InvalidArgument("size '" + std::string(s) + "' overflows");
    v = v * 10 + (s[i++] - '0');
  }
  std::string unit(s.substr(i));
  for (auto& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  uint64_t mul = 1;
  if (unit.empty() || unit == "b")
    mul = 1;
  else if (unit == "k" || unit == "kib" || unit == "kb")
    mul = 1ull << 10;
  else if (unit == "m" || unit == "mib" || unit == "mb")
    mul = 1ull << 20;
  else if (unit == "g" || unit == "gib" || unit == "gb")
    mul = 1ull << 30;
  else if (unit == "t" || unit == "tib" || unit == "tb")
    mul = 1ull << 40;
  else
    return InvalidArgument("size '" + std::string(s) + "': unknown unit '" + unit + "'");
  if (v > UINT64_MAX / mul) return InvalidArgument("size '" + std::string(s) + "' overflows");
  return v * mul;
}

namespace {

// Walks a TOML table and rejects keys not in `known`.
Status CheckKeys(const toml::table& t, const std::set<std::string>& known, std::string_view where) {
  for (auto&& [k, v] : t) {
    (void)v;
    if (!known.count(std::string(k.str()))) {
      return InvalidArgument("unknown key '" + std::string(k.str()) + "' in " + std::string(where));
    }
  }
  return OkStatus();
}

template <typename T>
Status GetUint(const toml::table& t, const char* key, T* out, std::string_view where) {
  auto node = t.get(key);
  if (!node) return OkStatus();
  auto v = node->value<int64_t>();
  if (!v || *v < 0 || static_cast<uint64_t>(*v) > std::numeric_limits<T>::max()) {
    return InvalidArgument(std::string(where) + "." + key + " must be a non-negative integer");
  }
  *out = static_cast<T>(*v);
  return OkStatus();
}

Status GetString(const toml::table& t, const char* key, std::string* out, std::string_view where) {
  auto node = t.get(key);
  if (!node) return OkStatus();
  auto v = node->value<std::string>();
  if (!v) return InvalidArgument(std::string(where) + "." + key + " must be a string");
  *out = *v;
  return OkStatus();
}

Status GetBool(const toml::table& t, const char* key, bool* out, std::string_view where) {
  auto node = t.get(key);
  if (!node) return OkStatus();
  auto v = node->value<bool>();
  if (!v) return InvalidArgument(std::string(where) + "." + key + " must be true or false");
  *out = *v;
  return OkStatus();
}

Status GetDouble(const toml::table& t, const char* key, double* out, std::string_view where) {
  auto node = t.get(key);
  if (!node) return OkStatus();
  auto v = node->value<double>();
  if (!v || *v < 0)
    return InvalidArgument(std::string(where) + "." + key + " must be a number >= 0");
  *out = *v;
  return OkStatus();
}

Status GetSize(const toml::table& t, const char* key, uint64_t* out, std::string_view where) {
  auto node = t.get(key);
  if (!node) return OkStatus();
  if (auto i = node->value<int64_t>()) {
    if (*i < 0) return InvalidArgument(std::string(where) + "." + key + " must not be negative");
    *out = static_cast<uint64_t>(*i);
    return OkStatus();
  }
  if (auto s = node->value<std::string>()) {
    auto r = ParseByteSize(*s);
    if (!r.ok()) return r.error().With(std::string(where) + "." + key);
    *out = *r;
    return OkStatus();
  }
  return InvalidArgument(std::string(where) + "." + key + " must be a size (\"10GiB\" or bytes)");
}

}  // namespace

Result<Config> Config::Parse(std::string_view text, std::string_view origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return InvalidArgument(os.str());
  }
  Config c = Defaults();
  IPFLY_RETURN_IF_ERROR(CheckKeys(root,
                                  {"store", "cache", "import", "fetch", "source", "log",
                                   "snapshotter", "registry", "powergate"},
                                  "config"));
  if (auto* t = root["store"].as_table()) {
    IPFLY_RETURN_IF_ERROR(CheckKeys(*t, {"dir"}, "[store]"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "dir", &c.store_dir, "store"));
  }
  if (auto* t = root["cache"].as_table()) {
    IPFLY_RETURN_IF_ERROR(CheckKeys(*t, {"dir", "max_size"}, "[cache]"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "dir", &c.cache_dir, "cache"));
    IPFLY_RETURN_IF_ERROR(GetSize(*t, "max_size", &c.cache_max_bytes, "cache"));
  }
  if (auto* t = root["import"].as_table()) {
    IPFLY_RETURN_IF_ERROR(CheckKeys(*t, {"profile"}, "[import]"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "profile", &c.profile, "import"));
  }
  if (auto* t = root["log"].as_table()) {
    IPFLY_RETURN_IF_ERROR(CheckKeys(*t, {"level"}, "[log]"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "level", &c.log_level, "log"));
  }
  if (auto* t = root["fetch"].as_table()) {
    IPFLY_RETURN_IF_ERROR(
        CheckKeys(*t,
                  {"timeout_ms", "block_timeout_ms", "stall_timeout_ms", "retries",
                   "retry_backoff_ms", "max_inflight", "readahead_blocks", "hedge_ms"},
                  "[fetch]"));
    auto& f = c.fetch;
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "timeout_ms", &f.timeout_ms, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "block_timeout_ms", &f.block_timeout_ms, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "stall_timeout_ms", &f.stall_timeout_ms, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "retries", &f.retries, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "retry_backoff_ms", &f.retry_backoff_ms, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "max_inflight", &f.max_inflight, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "readahead_blocks", &f.readahead_blocks, "fetch"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "hedge_ms", &f.hedge_ms, "fetch"));
    if (f.max_inflight == 0) return InvalidArgument("fetch.max_inflight must be at least 1");
  }
  if (auto* t = root["snapshotter"].as_table()) {
    IPFLY_RETURN_IF_ERROR(
        CheckKeys(*t,
                  {"socket", "root", "resolver", "min_lazy_size", "background_fetch",
                   "metrics_listen", "fuse_threads", "fuse_timeout_s", "span_cache_max_size"},
                  "[snapshotter]"));
    auto& s = c.snapshotter;
    IPFLY_RETURN_IF_ERROR(GetString(*t, "socket", &s.socket, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "root", &s.root, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "resolver", &s.resolver, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetSize(*t, "min_lazy_size", &s.min_lazy_size, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetBool(*t, "background_fetch", &s.background_fetch, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "metrics_listen", &s.metrics_listen, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "fuse_threads", &s.fuse_threads, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(GetDouble(*t, "fuse_timeout_s", &s.fuse_timeout_s, "snapshotter"));
    IPFLY_RETURN_IF_ERROR(
        GetSize(*t, "span_cache_max_size", &s.span_cache_max_bytes, "snapshotter"));
    if (s.fuse_threads == 0) return InvalidArgument("snapshotter.fuse_threads must be at least 1");
  }
  if (auto* t = root["powergate"].as_table()) {
    IPFLY_RETURN_IF_ERROR(CheckKeys(*t,
                                    {"address", "token", "token_env", "tls", "tls_ca", "ipfs_proxy",
                                     "unfreeze_max_price", "job_poll_ms", "state_dir"},
                                    "[powergate]"));
    auto& p = c.powergate;
    IPFLY_RETURN_IF_ERROR(GetString(*t, "address", &p.address, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "token", &p.token, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "token_env", &p.token_env, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetBool(*t, "tls", &p.tls, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "tls_ca", &p.tls_ca, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "ipfs_proxy", &p.ipfs_proxy, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "unfreeze_max_price", &p.unfreeze_max_price, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "job_poll_ms", &p.job_poll_ms, "powergate"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "state_dir", &p.state_dir, "powergate"));
    if (p.job_poll_ms == 0) return InvalidArgument("powergate.job_poll_ms must be at least 1");
  }
  if (auto* t = root["registry"].as_table()) {
    IPFLY_RETURN_IF_ERROR(CheckKeys(
        *t,
        {"listen", "root", "upstream", "upstream_username", "upstream_password", "tag_ttl_s",
         "read_only", "push_token", "htpasswd", "max_upload_size", "publish_kubo"},
        "[registry]"));
    auto& r = c.registry;
    IPFLY_RETURN_IF_ERROR(GetString(*t, "listen", &r.listen, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "root", &r.root, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "upstream", &r.upstream, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "upstream_username", &r.upstream_username, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "upstream_password", &r.upstream_password, "registry"));
    IPFLY_RETURN_IF_ERROR(GetUint(*t, "tag_ttl_s", &r.tag_ttl_s, "registry"));
    IPFLY_RETURN_IF_ERROR(GetBool(*t, "read_only", &r.read_only, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "push_token", &r.push_token, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "htpasswd", &r.htpasswd, "registry"));
    IPFLY_RETURN_IF_ERROR(GetSize(*t, "max_upload_size", &r.max_upload_size, "registry"));
    IPFLY_RETURN_IF_ERROR(GetString(*t, "publish_kubo", &r.publish_kubo, "registry"));
  }
  if (auto* arr = root["source"].as_array()) {
    for (size_t i = 0; i < arr->size(); ++i) {
      auto* t = arr->get(i)->as_table();
      std::string where = "[[source]] #" + std::to_string(i + 1);
      if (!t) return InvalidArgument(where + " must be a table");
      IPFLY_RETURN_IF_ERROR(CheckKeys(*t, {"kind", "url"}, where));
      std::string kind, url;
      IPFLY_RETURN_IF_ERROR(GetString(*t, "kind", &kind, where));
      IPFLY_RETURN_IF_ERROR(GetString(*t, "url", &url, where));
      auto s = SourceSpec::Parse(kind + "=" + url);
      if (!s.ok()) return s.error().With(where);
      c.sources.push_back(*s);
    }
  } else if (root.contains("source")) {
    return InvalidArgument("'source' must be an array of tables ([[source]])");
  }
  return c;
}

Result<Config> Config::Load(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return ErrnoError("cannot open config " + path, errno);
  std::string text;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return Parse(text, path);
}

}  // namespace ipfly
