#include "ipfs_fetch/kubo_rpc.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/base/log.h"
#include "core/codec/car.h"

namespace ipfly::fetch {
namespace {

using json = nlohmann::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr uint64_t kJsonReplyCap = 16ull << 20;
// Kubo refuses blocks above 1 MiB in block/put unless allow-big-block is set.
constexpr size_t kKuboSoftBlockLimit = 1024 * 1024;

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

json ParseJson(std::string_view text) {
  // No exceptions: a parse failure gives a "discarded" value.
  return json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

std::string JsonString(const json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// Splits NDJSON into parsed objects; lines that are not JSON objects are skipped.
std::vector<json> ParseNdjson(std::string_view text) {
  std::vector<json> out;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    json j = ParseJson(line);
    if (j.is_object()) out.push_back(std::move(j));
    if (eol == std::string_view::npos) break;
    text.remove_prefix(eol + 1);
  }
  return out;
}

// The human message of an error body or trailer: {"Message": ...} or the text itself.
std::string ErrorMessage(std::string_view text) {
  json j = ParseJson(text);
  std::string m = JsonString(j, "Message");
  if (!m.empty()) return m;
  std::string out(text.substr(0, 500));
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string Basename(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Error MapKuboError(long status, std::string_view message, std::string_view what) {  // NOLINT
  std::string msg = std::string(what) + ": " + std::string(message);
  if (status != 0) msg += " (HTTP " + std::to_string(status) + ")";
  std::string m = Lower(message);
  auto has = [&](std::string_view s) { return m.find(s) != std::string::npos; };
  if (status == 403) return Error(Errc::kPermissionDenied, std::move(msg));
  if (status == 404 || status == 405) return Unsupported(std::move(msg));
  if (has("not found") || has("could not find") || has("no link named")) {
    return NotFound(std::move(msg));
  }
  if (has("request timed out") || has("context deadline exceeded")) {
    // The node's own `timeout=` fired: js-ipfs reports a block it does not have this way.
    return NotFound(msg + " (the node did not find it within its timeout)");
  }
  if (status == 400 || has("invalid") || has("failed to parse") ||
      has("selected encoding not supported") || has("unrecognized")) {
    return InvalidArgument(std::move(msg));
  }
  return Unavailable(std::move(msg));
}

KuboRpcClient::KuboRpcClient(std::string base_url, std::shared_ptr<HttpClient> http,
                             KuboRpcOptions options)
    : base_url_(std::move(base_url)),
      http_(http ? std::move(http) : HttpClient::Default()),
      options_(options) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
}

HttpRequest KuboRpcClient::MakeRequest(const std::string& command, const std::string& query,
                                       Deadline deadline) const {
  HttpRequest req;
  req.method = "POST";  // the RPC API answers 405 to anything else
  req.url = base_url_ + "/api/v0/" + command;
  if (!query.empty()) req.url += "?" + query;
  req.deadline = deadline;
  req.connect_timeout = options_.connect_timeout;
  req.stall_timeout = options_.stall_timeout;
  return req;
}

std::optional<Error> KuboRpcClient::ResponseError(const HttpResponse& r,
                                                  const std::string& what) const {
  if (!r.ok()) return MapKuboError(r.status, ErrorMessage(r.body_text()), what);
  if (auto trailer = r.trailers.Get("X-Stream-Error"); trailer && !trailer->empty()) {
    return MapKuboError(0, ErrorMessage(*trailer), what + " (stream error)");
  }
  return std::nullopt;
}

Result<HttpResponse> KuboRpcClient::Call(const std::string& command, const std::string& query,
                                         Deadline deadline, std::vector<MultipartPart> parts,
                                         uint64_t max_body) {
  HttpRequest req = MakeRequest(command, query, deadline);
  req.parts = std::move(parts);
  req.max_body_bytes = max_body == 0 ? kJsonReplyCap : max_body;
  const std::string what = "kubo " + base_url_ + " " + command;
  auto resp = http_->Fetch(req);
  if (!resp.ok()) return std::move(resp).error().With(what);
  if (auto e = ResponseError(*resp, what)) return std::move(*e);
  return resp;
}

Result<KuboVersion> KuboRpcClient::Version(Deadline deadline) {
  auto resp = IPFLY_TRY(Call("version", "", deadline));
  json j = ParseJson(resp.body_text());
  if (!j.is_object()) {
    return Corrupt("kubo " + base_url_ +
                   " version: not a JSON object: " + std::string(resp.body_text().substr(0, 200)));
  }
  KuboVersion v;
  v.version = JsonString(j, "Version");
  v.commit = JsonString(j, "Commit");
  v.system = JsonString(j, "System");
  v.js_ipfs = j.contains("ipfs-core");
  return v;
}

Result<Block> KuboRpcClient::BlockGet(const mf::Cid& cid, Deadline deadline) {
  if (cid.is_identity()) return Block::Verify(cid, cid.multihash().digest());
  const std::string cid_str = cid.ToString();
  const std::string what = "kubo " + base_url_ + " block/get " + cid_str;
  // The node's own timeout must fire before ours, so that "missing" is reported as such.
  auto left = duration_cast<milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return Timeout(what + ": deadline passed");
  auto node_timeout = std::min(options_.missing_block_timeout, left * 9 / 10);
  node_timeout = std::max(node_timeout, milliseconds(1));
  std::string query = "arg=" + UrlEscape(cid_str) +
                      "&offline=true&timeout=" + std::to_string(node_timeout.count()) + "ms";
  HttpRequest req = MakeRequest("block/get", query, deadline);
  req.max_body_bytes = kMaxBlockSize;
  auto resp = http_->Fetch(req);
  if (!resp.ok()) {
    if (resp.error().code() == Errc::kTooLarge) {
      return TooLarge(what + ": block is larger than 2 MiB");
    }
    return std::move(resp).error().With(what);
  }
  if (auto e = ResponseError(*resp, what)) return std::move(*e);
  auto block = Block::Verify(cid, std::move(resp->body));
  if (!block.ok()) return block.error().With(what + " sent bad bytes");
  return block;
}

Status KuboRpcClient::PutOnce(const Block& block, Deadline deadline, bool legacy_format,
                              mf::Cid* key) {
  const std::string codec = mf::CodecName(block.cid().codec());
  std::string query = legacy_format ? "format=" + codec : "cid-codec=" + codec;
  query += "&mhtype=sha2-256";
  if (block.size() > kKuboSoftBlockLimit) query += "&allow-big-block=true";
  MultipartPart part;
  part.name = "file";
  part.filename = "block";
  part.data.assign(block.data().begin(), block.data().end());
  std::vector<MultipartPart> parts;
  parts.push_back(std::move(part));
  auto resp = IPFLY_TRY(Call("block/put", query, deadline, std::move(parts)));
  const std::string what = "kubo " + base_url_ + " block/put " + block.cid().ToString();
  auto lines = ParseNdjson(resp.body_text());
  std::string key_str = lines.empty() ? "" : JsonString(lines.back(), "Key");
  if (key_str.empty()) {
    return Corrupt(what + ": no Key in the reply: " + std::string(resp.body_text().substr(0, 200)));
  }
  auto parsed = mf::Cid::Parse(key_str);
  if (!parsed.ok()) return parsed.error().With(what + ": bad Key in the reply");
  *key = *parsed;
  return OkStatus();
}

Status KuboRpcClient::BlockPut(const Block& block, Deadline deadline) {
  const std::string what = "kubo " + base_url_ + " block/put " + block.cid().ToString();
  bool legacy = legacy_block_format_.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < 2; ++attempt) {
    mf::Cid key = block.cid();
    IPFLY_RETURN_IF_ERROR(PutOnce(block, deadline, legacy, &key));
    if (!(key.multihash() == block.cid().multihash())) {
      return Corrupt(what + ": the node stored the block as " + key.ToString() +
                     " (different multihash)");
    }
    if (key.codec() == block.cid().codec()) return OkStatus();
    if (legacy) break;
    // The node ignored cid-codec (js-ipfs does): it stored the same bytes under another codec.
    // Retry once with the legacy `format=` flag that such nodes understand, and remember it.
    IPFLY_LOG_DEBUG("{}: node ignored cid-codec (got {}); using format=", what, key.ToString());
    legacy = true;
    legacy_block_format_.store(true, std::memory_order_relaxed);
  }
  return Corrupt(what + ": the node reports a different codec for the block");
}

Result<std::vector<mf::Cid>> KuboRpcClient::DagImport(const std::string& car_path,
                                                      Deadline deadline) {
  MultipartPart part;
  part.name = "file";
  part.filename = UrlEscape(Basename(car_path));
  part.file_path = car_path;
  std::vector<MultipartPart> parts;
  parts.push_back(std::move(part));
  auto resp = IPFLY_TRY(Call("dag/import", "pin-roots=true", deadline, std::move(parts)));
  const std::string what = "kubo " + base_url_ + " dag/import " + car_path;
  std::vector<mf::Cid> roots;
  for (const json& j : ParseNdjson(resp.body_text())) {
    auto it = j.find("Root");
    if (it == j.end() || !it->is_object()) continue;  // {"Stats": ...} and the like
    std::string pin_error = JsonString(*it, "PinErrorMsg");
    std::string cid_str;
    if (auto c = it->find("Cid"); c != it->end()) cid_str = JsonString(*c, "/");
    if (!pin_error.empty()) return MapKuboError(0, pin_error, what + " root " + cid_str);
    auto cid = mf::Cid::Parse(cid_str);
    if (!cid.ok()) return cid.error().With(what + ": bad root in the reply");
    roots.push_back(*cid);
  }
  return roots;
}

Result<mf::Cid> KuboRpcClient::Add(const std::string& file_path, const KuboAddParams& p,
                                   Deadline deadline) {
  auto flag = [](bool b) { return b ? "true" : "false"; };
  std::string query = "cid-version=" + std::to_string(p.cid_version);
  if (p.raw_leaves) query += std::string("&raw-leaves=") + flag(*p.raw_leaves);
  if (!p.chunker.empty()) query += "&chunker=" + UrlEscape(p.chunker);
  if (!p.hash.empty()) query += "&hash=" + UrlEscape(p.hash);
  query += std::string("&pin=") + flag(p.pin);
  if (p.only_hash) query += "&only-hash=true";
  if (p.trickle) query += "&trickle=true";
  if (p.wrap_with_directory) query += "&wrap-with-directory=true";
  query += "&progress=false";
  for (const auto& [k, v] : p.extra) query += "&" + UrlEscape(k) + "=" + UrlEscape(v);
  MultipartPart part;
  part.name = "file";
  part.filename = UrlEscape(Basename(file_path));  // the RPC expects an escaped relative path
  part.file_path = file_path;
  std::vector<MultipartPart> parts;
  parts.push_back(std::move(part));
  auto resp = IPFLY_TRY(Call("add", query, deadline, std::move(parts)));
  const std::string what = "kubo " + base_url_ + " add " + file_path;
  std::string hash;
  for (const json& j : ParseNdjson(resp.body_text())) {
    if (std::string h = JsonString(j, "Hash"); !h.empty()) hash = h;
  }
  if (hash.empty()) {
    return Corrupt(what +
                   ": no Hash in the reply: " + std::string(resp.body_text().substr(0, 200)));
  }
  auto cid = mf::Cid::Parse(hash);
  if (!cid.ok()) return cid.error().With(what + ": bad Hash in the reply");
  return *cid;
}

Status KuboRpcClient::DagExport(const mf::Cid& root, Deadline deadline,
                                const std::function<Status(ByteView)>& on_chunk) {
  const std::string root_str = root.ToString();
  const std::string what = "kubo " + base_url_ + " dag/export " + root_str;
  auto left = duration_cast<milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return Timeout(what + ": deadline passed");
  // offline + timeout as for block/get: a missing block must end the export, not hang it.
  std::string query = "arg=" + UrlEscape(root_str) + "&offline=true&timeout=" +
                      std::to_string(std::max<int64_t>(1, (left * 9 / 10).count())) + "ms";
  HttpRequest req = MakeRequest("dag/export", query, deadline);
  auto resp = http_->Stream(req, on_chunk);
  if (!resp.ok()) {
    Error e = std::move(resp).error();
    if (e.message().find(base_url_) == std::string::npos) e = std::move(e).With(what);
    return e;
  }
  if (auto e = ResponseError(*resp, what)) return std::move(*e);
  return OkStatus();
}

Status KuboRpcClient::Cat(const mf::Cid& cid, uint64_t offset, std::optional<uint64_t> length,
                          Deadline deadline, const std::function<Status(ByteView)>& on_chunk) {
  const std::string cid_str = cid.ToString();
  const std::string what = "kubo " + base_url_ + " cat " + cid_str;
  std::string query = "arg=" + UrlEscape(cid_str) + "&offset=" + std::to_string(offset);
  if (length) query += "&length=" + std::to_string(*length);
  HttpRequest req = MakeRequest("cat", query, deadline);
  auto resp = http_->Stream(req, on_chunk);
  if (!resp.ok()) {
    Error e = std::move(resp).error();
    if (e.message().find(base_url_) == std::string::npos) e = std::move(e).With(what);
    return e;
  }
  if (auto e = ResponseError(*resp, what)) return std::move(*e);
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------
// KuboRpcSource

Result<Block> KuboRpcSource::Get(const mf::Cid& cid, Deadline deadline) {
  return client_->BlockGet(cid, deadline);
}

Status KuboRpcSource::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                                const std::function<Status(const Block&)>& on_block) {
  if (!range.whole()) {
    return Unsupported(name() + " streams whole DAGs only (dag/export has no byte ranges)");
  }
  const std::string root_str = root.ToString();
  // dag/export's node-side timeout has to cover the whole export, so on js-ipfs a missing root
  // would only be reported after most of the deadline. Asking for the root block first (short
  // node timeout, ~1 ms when present) reports a missing DAG at once.
  if (!root.is_identity()) IPFLY_RETURN_IF_ERROR(client_->BlockGet(root, deadline));
  codec::CarParser parser(
      [](const codec::CarHeader&) { return OkStatus(); },
      [&](mf::Cid cid, Bytes data) -> Status {
        auto block = Block::Verify(cid, std::move(data));
        if (!block.ok()) {
          return block.error().With(name() + " sent bad bytes in dag/export " + root_str);
        }
        return on_block(*block);
      });
  IPFLY_RETURN_IF_ERROR(
      client_->DagExport(root, deadline, [&](ByteView chunk) { return parser.Feed(chunk); }));
  if (Status s = parser.Finish(); !s.ok()) {
    return std::move(s).error().With(name() + ": dag/export " + root_str);
  }
  return OkStatus();
}

}  // namespace ipfly::fetch
