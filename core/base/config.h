// ipfly configuration: one TOML file (default /etc/ipfly/config.toml), every key documented in
// packaging/config.example.toml (a test checks that it parses). Command-line flags override it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.h"

namespace ipfly {

// A remote block source: "gateway=URL" (IPFS trustless gateway) or "kubo=URL" (Kubo RPC API).
struct SourceSpec {
  enum class Kind { kGateway, kKubo };
  Kind kind = Kind::kGateway;
  std::string url;  // base URL without trailing slash, e.g. http://127.0.0.1:8080

  // Parses "gateway=URL" / "kubo=URL". kInvalidArgument with a precise message otherwise.
  static Result<SourceSpec> Parse(std::string_view spec);
  std::string ToString() const;
};

struct FetchConfig {
  uint32_t timeout_ms = 60'000;        // per-read deadline (a whole `cat` range, one FUSE read)
  uint32_t block_timeout_ms = 20'000;  // per-request timeout for one block against one source
  uint32_t stall_timeout_ms = 30'000;  // abort a transfer with no new bytes for this long
  uint32_t retries = 3;                // retries per source on 429/5xx/timeouts
  uint32_t retry_backoff_ms = 100;     // first backoff; doubles, with jitter; Retry-After honoured
  uint32_t max_inflight = 16;          // parallel block fetches per read
  uint32_t readahead_blocks = 32;      // blocks fetched ahead of a sequential reader
  uint32_t hedge_ms = 0;               // start the next gateway after this delay (0 = no hedging)
};

// [snapshotter]: ipfly-snapshotter (containerd proxy snapshotter). Flags override.
struct SnapshotterConfig {
  std::string socket = "/run/ipfly/snapshotter.sock";  // gRPC unix socket (mode 0600)
  std::string root;               // metadata + snapshot dirs; default <store_dir>/snapshotter
  std::string resolver;           // registry shim base URL for digest -> CID lookups ("" = none)
  uint64_t min_lazy_size = 0;     // smaller layers are downloaded by containerd instead
  bool background_fetch = false;  // fetch whole lazy layers in the background
  std::string metrics_listen;     // "127.0.0.1:9401" = Prometheus text on /metrics ("" = off)
  unsigned fuse_threads = 16;
  double fuse_timeout_s = 86400;  // entry/attr timeouts of the FUSE mount (content is immutable)
  // Global cap on the span caches of all lazy layers (decompressed data on disk). Over the cap,
  // the least recently used span caches of layers no snapshot in use needs are dropped first.
  uint64_t span_cache_max_bytes = 20ull << 30;
};

// [registry]: ipfly-registry (OCI distribution server on IPFS). Flags override.
struct RegistryConfig {
  std::string listen = "127.0.0.1:5000";
  std::string root;      // catalog + uploads; default <store_dir>/registry
  std::string upstream;  // pull-through mirror upstream ("" = no mirror)
  std::string upstream_username;
  std::string upstream_password;  // basic auth for the upstream (never logged)
  uint32_t tag_ttl_s = 300;       // mirrored tags are revalidated upstream after this long
  bool read_only = false;
  std::string push_token;  // static bearer token required for pushes ("" = none)
  std::string htpasswd;    // htpasswd file (bcrypt) for pushes ("" = none)
  uint64_t max_upload_size = 10ull << 30;
  std::string publish_kubo;  // Kubo RPC URL to publish pushed/mirrored content to ("" = off)
};

// [powergate]: the cold fallback (Filecoin retrieval through Powergate). Off when address is "".
struct PowergateConfig {
  std::string address;  // gRPC target "host:port" of powd (default port 5002); "" = off
  std::string token;    // user token sent as x-ffs-token (never logged)
  std::string token_env = "IPFLY_POWERGATE_TOKEN";  // environment variable read when token = ""
  bool tls = false;                                 // TLS to powd (system roots, or tls_ca)
  std::string tls_ca;      // PEM file with the CA for tls ("" = system roots)
  std::string ipfs_proxy;  // Powergate's IPFS reverse proxy (Kubo RPC), e.g. http://host:6002
  uint64_t unfreeze_max_price = 0;  // attoFIL cap for a Filecoin retrieval (thaw); 0 = no thaws
  uint32_t job_poll_ms = 2000;      // how often a thaw job is polled when not watched
  std::string state_dir;            // persisted thaw jobs; default <store_dir>/powergate
};

struct Config {
  std::string store_dir;  // embedded block store; default: DefaultStoreDir()
  std::string cache_dir;  // block cache for fetched blocks; default: <store_dir>/cache
  uint64_t cache_max_bytes = 10ull << 30;
  std::string profile = "kubo-v1";  // import profile: kubo-v1 | kubo-v0 | unixfs-v1-2025
  std::vector<SourceSpec> sources;  // tried in order, after the embedded store
  FetchConfig fetch;
  std::string log_level;  // empty = IPFLY_LOG or "warn"
  SnapshotterConfig snapshotter;
  RegistryConfig registry;
  PowergateConfig powergate;

  // Defaults with store/cache dirs filled in.
  static Config Defaults();
  // Reads a TOML file over the defaults. Unknown keys are errors (typos must not pass silently).
  static Result<Config> Load(const std::string& path);
  static Result<Config> Parse(std::string_view toml_text, std::string_view origin = "<string>");
};

// /var/lib/ipfly for root; $XDG_DATA_HOME/ipfly or ~/.local/share/ipfly otherwise.
std::string DefaultStoreDir();
// Parses sizes like "10GiB", "512MiB", "1000", "4k". kInvalidArgument on junk.
Result<uint64_t> ParseByteSize(std::string_view s);

}  // namespace ipfly
