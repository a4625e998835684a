// Client for a Kubo-compatible RPC API (/api/v0; Kubo, and js-ipfs 0.66 which the tests run).
// See notes/ipfs.md A4 "Kubo RPC" and notes/ipfs-node.md.
//
// Wire rules it follows:
//   - every call is a POST; positional arguments are repeated ?arg=, flags are query parameters;
//   - an error answer is {"Message": "...", "Code": n, "Type": "error"} with HTTP 4xx/5xx; it is
//     turned into an Error whose code depends on the message (see MapKuboError below);
//   - streamed answers (200 + chunked) may end with an `X-Stream-Error` trailer; it is always
//     checked and turns the call into an error even though the status was 200. Kubo sends plain
//     text there, js-ipfs sends {"Message": ...}; both are understood;
//   - CIDs in answers are parsed from any multibase (js-ipfs prints v1 CIDs in base58btc).
//
// The RPC API is admin-level and must never be exposed; this client is meant for a local node.
//
// Missing blocks: Kubo with `offline=true` answers at once with
//   500 {"Message":"block was not found locally (offline): ipld: could not find <cid>"};
// js-ipfs ignores `offline` and waits forever unless `timeout=` is given, then answers
//   500 {"Message":"Failed to get block: request timed out"}.
// BlockGet therefore always sends offline=true and timeout=<missing_block_timeout>, and maps
// both answers to kNotFound (the block is not on that node; no retry helps).
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "ipfs_fetch/block_source.h"
#include "ipfs_fetch/http_client.h"

namespace ipfly::fetch {

struct KuboVersion {
  std::string version;  // "0.27.0" (Kubo), "0.18.1" (js-ipfs core)
  std::string commit;
  std::string system;    // Kubo only
  bool js_ipfs = false;  // the answer carries "ipfs-core" (js-ipfs)
};

// Parameters of /api/v0/add (only what is set is sent).
struct KuboAddParams {
  int cid_version = 1;
  std::optional<bool> raw_leaves;  // unset: the node's default for the CID version
  std::string chunker;             // "size-262144", ...
  std::string hash;                // "sha2-256"
  bool pin = true;
  bool only_hash = false;
  bool trickle = false;
  bool wrap_with_directory = false;
  std::vector<std::pair<std::string, std::string>> extra;  // any other flag
};

struct KuboRpcOptions {
  // How long js-ipfs may look for a block before it gives up (sent as `timeout=`). Local blocks
  // come back in milliseconds, so this only bounds the time to learn that a block is missing.
  std::chrono::milliseconds missing_block_timeout{2'000};
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds stall_timeout{30'000};
  // Sent with every request (e.g. Powergate's IPFS proxy: x-ipfs-ffs-auth). Values are secrets
  // as far as this client knows: never logged.
  std::vector<std::pair<std::string, std::string>> headers;
};

class KuboRpcClient {
 public:
  // `base_url` like "http://127.0.0.1:5001" (no /api/v0; a trailing '/' is dropped).
  // nullptr `http` means HttpClient::Default().
  KuboRpcClient(std::string base_url, std::shared_ptr<HttpClient> http,
                KuboRpcOptions options = {});

  const std::string& base_url() const { return base_url_; }

  Result<KuboVersion> Version(Deadline deadline);

  // /api/v0/block/get?arg=<cid>&offline=true&timeout=...: the block, verified.
  // kNotFound if the node does not have it (see the header comment), kCorrupt on a hash
  // mismatch, kTooLarge above 2 MiB, transport errors as HttpClient.
  Result<Block> BlockGet(const mf::Cid& cid, Deadline deadline);

  // /api/v0/block/put?cid-codec=<raw|dag-pb>&mhtype=sha2-256 (multipart). Checks that the Key the
  // node returns has the block's multihash and codec (kCorrupt otherwise). Nodes that ignore
  // cid-codec (js-ipfs) are detected by the codec of the returned Key and the call is repeated
  // once with the legacy `format=` parameter; the client remembers this for later calls.
  Status BlockPut(const Block& block, Deadline deadline);

  // /api/v0/dag/import?pin-roots=true with the CAR file streamed from disk. Returns the root CIDs
  // the node reports; a root with a non-empty PinErrorMsg is an error (kNotFound: incomplete DAG).
  Result<std::vector<mf::Cid>> DagImport(const std::string& car_path, Deadline deadline);

  // /api/v0/add with the file streamed from disk; returns the CID of the last NDJSON entry (the
  // file itself, or the wrapping directory). Used by tests and tools.
  Result<mf::Cid> Add(const std::string& file_path, const KuboAddParams& params, Deadline deadline);

  // /api/v0/dag/export?arg=<root>: the CARv1 bytes, streamed. Errors after the 200 arrive in the
  // X-Stream-Error trailer and are returned after the bytes were delivered.
  Status DagExport(const mf::Cid& root, Deadline deadline,
                   const std::function<Status(ByteView)>& on_chunk);

  // /api/v0/cat?arg=<cid>&offset=&length= (length nullopt = to the end). UNVERIFIED bytes:
  // tests and benchmarks only, never a data path.
  Status Cat(const mf::Cid& cid, uint64_t offset, std::optional<uint64_t> length, Deadline deadline,
             const std::function<Status(ByteView)>& on_chunk);

  // Performs one RPC call (POST {base}/api/v0/{command}?{query}) and buffers the answer. Non-2xx
  // answers and X-Stream-Error trailers become errors. Exposed for tools (pin/add, refs, ...).
  // `query` is already escaped ("arg=...&flag=...").
  Result<HttpResponse> Call(const std::string& command, const std::string& query, Deadline deadline,
                            std::vector<MultipartPart> parts = {}, uint64_t max_body = 0);

 private:
  HttpRequest MakeRequest(const std::string& command, const std::string& query,
                          Deadline deadline) const;
  // Converts a finished response (status + trailer) into an error, if it is one.
  std::optional<Error> ResponseError(const HttpResponse& r, const std::string& what) const;
  Status PutOnce(const Block& block, Deadline deadline, bool legacy_format, mf::Cid* key);

  std::string base_url_;
  std::shared_ptr<HttpClient> http_;
  KuboRpcOptions options_;
  std::atomic<bool> legacy_block_format_{false};
};

// Maps a Kubo/js-ipfs error message (HTTP status `status`, 0 for a trailer) to an Error:
//   "not found" / "could not find" / "no link named" / js-ipfs "request timed out" → kNotFound
//   HTTP 400 or "invalid" / "failed to parse" / "selected encoding not supported" →
//   kInvalidArgument HTTP 403 → kPermissionDenied; 404/405 (endpoint missing) → kUnsupported
//   anything else → kUnavailable
Error MapKuboError(long status, std::string_view message, std::string_view what);  // NOLINT

// A BlockSource over a KuboRpcClient.
//   Get       = BlockGet
//   StreamDag = dag/export parsed with CarParser, each block verified, for whole ranges only;
//               a partial range gives kUnsupported (the reader then uses Get). The root is first
//               probed with BlockGet so that a missing DAG is kNotFound within
//               missing_block_timeout (js-ipfs would otherwise hold the export until its timeout).
//               Errors after some blocks (trailer, truncation, bad block) are returned after
//               those blocks.
class KuboRpcSource : public BlockSource {
 public:
  explicit KuboRpcSource(std::shared_ptr<KuboRpcClient> client) : client_(std::move(client)) {}
  std::string name() const override { return "kubo " + client_->base_url(); }
  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;
  Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                   const std::function<Status(const Block&)>& on_block) override;
  KuboRpcClient& client() { return *client_; }

 private:
  Status StreamViaCat(const mf::Cid& root, EntityRange range, Deadline deadline,
                      const std::function<Status(const Block&)>& on_block);
  std::shared_ptr<KuboRpcClient> client_;
};

}  // namespace ipfly::fetch
