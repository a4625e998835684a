#include "ipfs_fetch/kubo_rpc.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/base/log.h"
#include "core/codec/car.h"
#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"

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
  req.headers = options_.headers;
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

namespace {

// One piece of a file's bytes in order: inline Data.Data of a dag-pb node (already verified as
// part of its node) or a raw leaf known only by its CID and size.
struct Segment {
  uint64_t offset = 0;
  uint64_t size = 0;
  std::optional<mf::Cid> leaf;  // raw leaf; nullopt = inline bytes below
  Bytes inline_bytes;
};

}  // namespace

// The fast path for raw-leaf DAGs (ipfly's default kubo-v1 and unixfs-v1-2025): the few dag-pb
// nodes come from block/get (verified), the leaves from ONE /api/v0/cat stream of the byte range,
// cut at the leaf boundaries the nodes' blocksizes give, and each piece is verified against its
// leaf CID before anyone sees it (for a raw leaf the bytes are the block). cat is the node's
// cheapest path (no per-block request, no CAR framing); a node sending wrong bytes only makes the
// stream fail, and the reader completes the DAG block by block. Returns kUnsupported when the DAG
// has dag-pb leaves (CIDv0 imports): their protobuf framing is not in cat's output.
Status KuboRpcSource::StreamViaCat(const mf::Cid& root, EntityRange range, Deadline deadline,
                                   const std::function<Status(const Block&)>& on_block) {
  std::vector<Segment> segs;
  uint64_t from = range.from, to = range.to;  // inclusive
  // Depth-first walk over the dag-pb nodes that overlap the range.
  std::function<Status(const mf::Cid&, uint64_t, int)> walk = [&](const mf::Cid& cid, uint64_t base,
                                                                  int depth) -> Status {
    if (depth > 32) return Corrupt("DAG " + root.ToString() + " deeper than 32 levels");
    auto block = IPFLY_TRY(client_->BlockGet(cid, deadline));
    IPFLY_RETURN_IF_ERROR(on_block(block));
    auto node = IPFLY_TRY(codec::DecodeDagPb(block.data()));
    if (!node.data) return Corrupt(cid.ToString() + ": dag-pb node without UnixFS data");
    auto fs = IPFLY_TRY(codec::DecodeUnixfs(*node.data));
    if (fs.type != codec::UnixfsType::kFile && fs.type != codec::UnixfsType::kRaw) {
      return Unsupported(cid.ToString() + " is not a file");
    }
    if (fs.blocksizes.size() != node.links.size()) {
      return Corrupt(cid.ToString() + ": links and blocksizes differ in number");
    }
    uint64_t pos = base;
    Bytes inline_data = fs.data.value_or(Bytes{});
    if (!inline_data.empty()) {
      Segment sg;
      sg.offset = pos;
      sg.size = inline_data.size();
      pos += sg.size;
      sg.inline_bytes = std::move(inline_data);
      segs.push_back(std::move(sg));
    }
    for (size_t i = 0; i < node.links.size(); ++i) {
      uint64_t size = fs.blocksizes[i];
      bool overlaps = size > 0 && pos <= to && pos + size - 1 >= from;
      if (overlaps) {
        const mf::Cid& child = node.links[i].hash;
        if (child.codec() == mf::kCodecRaw) {
          Segment sg;
          sg.offset = pos;
          sg.size = size;
          sg.leaf = child;
          segs.push_back(std::move(sg));
        } else if (child.codec() == mf::kCodecDagPb) {
          IPFLY_RETURN_IF_ERROR(walk(child, pos, depth + 1));
        } else {
          return Unsupported("unexpected child codec in " + cid.ToString());
        }
      }
      pos += size;
    }
    return OkStatus();
  };
  if (root.codec() == mf::kCodecRaw) {
    auto block = IPFLY_TRY(client_->BlockGet(root, deadline));
    return on_block(block);
  }
  IPFLY_RETURN_IF_ERROR(walk(root, 0, 0));
  // Leaves that are dag-pb (v0 imports) were fetched whole by the walk; only raw leaves stream.
  std::vector<Segment*> leaves;
  for (auto& sg : segs) {
    if (sg.leaf) leaves.push_back(&sg);
  }
  if (leaves.empty()) return OkStatus();
  uint64_t start = leaves.front()->offset;
  uint64_t end = leaves.back()->offset + leaves.back()->size;
  // Walk the segments from the first leaf on, cutting the cat stream into them.
  size_t idx = 0;
  while (idx < segs.size() && segs[idx].offset < start) ++idx;
  Bytes cur;
  uint64_t at = start;
  auto feed = [&](ByteView chunk) -> Status {
    while (!chunk.empty()) {
      if (idx >= segs.size()) return Corrupt(name() + ": cat sent more bytes than the DAG holds");
      Segment& sg = segs[idx];
      size_t want = static_cast<size_t>(sg.offset + sg.size - at);
      size_t take = std::min(want, chunk.size());
      if (sg.leaf) {
        if (cur.empty()) cur.reserve(static_cast<size_t>(sg.size));
        cur.insert(cur.end(), chunk.begin(), chunk.begin() + take);
      } else {
        size_t in = static_cast<size_t>(at - sg.offset);
        if (!std::equal(chunk.begin(), chunk.begin() + take, sg.inline_bytes.begin() + in)) {
          return Corrupt(name() + ": cat bytes differ from the verified inline data");
        }
      }
      at += take;
      chunk = chunk.subspan(take);
      if (at == sg.offset + sg.size) {
        if (sg.leaf) {
          auto b = Block::Verify(*sg.leaf, std::move(cur));
          cur = Bytes();
          if (!b.ok()) return b.error().With(name() + " sent bad bytes through cat");
          IPFLY_RETURN_IF_ERROR(on_block(*b));
        }
        ++idx;
      }
    }
    return OkStatus();
  };
  IPFLY_RETURN_IF_ERROR(client_->Cat(root, start, end - start, deadline, feed));
  if (at != end) {
    return Unavailable(name() + ": cat of " + root.ToString() + " ended early at byte " +
                       std::to_string(at));
  }
  return OkStatus();
}

Status KuboRpcSource::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                                const std::function<Status(const Block&)>& on_block) {
  // Raw-leaf DAGs: verified cat (any range). Otherwise dag/export (whole DAGs only).
  bool raw_leaves_likely = root.version() == 1;
  if (raw_leaves_likely) {
    uint64_t delivered = 0;
    Status st = StreamViaCat(root, range, deadline, [&](const Block& b) {
      ++delivered;
      return on_block(b);
    });
    // Once blocks flowed, the caller completes the rest; before that, dag/export may still work
    // (a node without cat, a DAG with dag-pb leaves).
    if (st.ok() || delivered > 0) return st;
    if (st.error().code() == Errc::kNotFound || st.error().code() == Errc::kTimeout) return st;
  }
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
