#include "registry_shim/server.h"

#include <crypt.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "core/base/digest.h"
#include "core/base/log.h"
#include "core/base/sha256.h"
#include "core/codec/car.h"
#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"
#include "core/multiformats/cid.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/unixfs_reader.h"
#include "registry_shim/catalog.h"
#include "registry_shim/http_server.h"
#include "registry_shim/ingest.h"
#include "registry_shim/publisher.h"
#include "registry_shim/upstream.h"
#include "registry_shim/validate.h"

namespace ipfly::registry {
namespace fs = std::filesystem;
using json = nlohmann::json;
using httplib::ContentReader;
using httplib::Request;
using httplib::Response;

namespace {

constexpr size_t kMaxManifestBytes = 4 << 20;
constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
constexpr char kDockerManifest[] = "application/vnd.docker.distribution.manifest.v2+json";
constexpr char kDockerList[] = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr char kRawType[] = "application/vnd.ipld.raw";
constexpr char kCarType[] = "application/vnd.ipld.car";
// Repositories under this prefix are IPFS-format views of the repository without it.
constexpr char kIpfsPrefix[] = "ipfs/";

bool IsIndexType(std::string_view mt) { return mt == kOciIndex || mt == kDockerList; }
bool IsKnownManifestType(std::string_view mt) {
  return mt == kOciManifest || mt == kOciIndex || mt == kDockerManifest || mt == kDockerList;
}

std::string BaseMediaType(std::string_view ct) {
  size_t semi = ct.find(';');
  std::string_view v = ct.substr(0, semi);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return std::string(v);
}

std::string NewUuid() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  uint64_t a = rng(), b = rng();
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

void SendError(Response& res, int status, std::string_view code, std::string_view message,
               const json& detail = nullptr) {
  json err = {{"code", code}, {"message", message}};
  if (!detail.is_null()) err["detail"] = detail;
  res.status = status;
  res.set_content(json{{"errors", json::array({err})}}.dump(), "application/json");
}

// Parsed /v2/ path.
struct V2Path {
  enum Kind { kBase, kCatalog, kTags, kManifest, kBlob, kUploadStart, kUpload, kReferrers, kBad };
  Kind kind = kBad;
  std::string name;
  std::string ref;
};

V2Path ParseV2(const std::string& path) {
  V2Path p;
  if (path == "/v2/" || path == "/v2") {
    p.kind = V2Path::kBase;
    return p;
  }
  if (path == "/v2/_catalog") {
    p.kind = V2Path::kCatalog;
    return p;
  }
  std::string_view rest(path);
  rest.remove_prefix(4);
  auto tail = [&](std::string_view marker, V2Path::Kind kind) -> bool {
    size_t at = rest.rfind(marker);
    if (at == std::string_view::npos || at == 0) return false;
    std::string_view ref = rest.substr(at + marker.size());
    if (ref.find('/') != std::string_view::npos) return false;
    p.kind = kind;
    p.name = std::string(rest.substr(0, at));
    p.ref = std::string(ref);
    return true;
  };
  if (rest.ends_with("/tags/list")) {
    p.kind = V2Path::kTags;
    p.name = std::string(rest.substr(0, rest.size() - 10));
    return p;
  }
  if (rest.ends_with("/blobs/uploads")) {
    p.kind = V2Path::kUploadStart;
    p.name = std::string(rest.substr(0, rest.size() - 14));
    return p;
  }
  if (tail("/blobs/uploads/", V2Path::kUpload)) {
    if (p.ref.empty()) p.kind = V2Path::kUploadStart;
    return p;
  }
  if (tail("/manifests/", V2Path::kManifest)) return p;
  if (tail("/blobs/", V2Path::kBlob)) return p;
  if (tail("/referrers/", V2Path::kReferrers)) return p;
  p.kind = V2Path::kBad;
  return p;
}

// A blob upload in progress: a spool file plus the running sha256 of its bytes.
struct Upload {
  std::mutex mu;
  std::string uuid;
  std::string repo;
  std::string path;
  int fd = -1;
  uint64_t size = 0;
  Sha256 hasher;
  bool finished = false;
  std::chrono::steady_clock::time_point last_used = std::chrono::steady_clock::now();
  ~Upload() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct RegistryServer::Impl {
  ServerOptions options;
  const Config& config() const { return options.config; }
  unixfs::ImportProfile profile;
  std::string root_dir, uploads_dir;
  std::unique_ptr<Catalog> catalog;
  std::unique_ptr<fetch::Fetcher> fetcher;
  std::unique_ptr<fetch::UnixfsReader> ufs_reader;
  fetch::BlockStore* store = nullptr;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<UpstreamClient> upstream;  // null unless mirroring
  std::unique_ptr<KuboPublisher> publisher;  // null unless publish_kubo is set

  // (digest, CID) pairs whose whole-blob sha256 matched while streaming in this process. The
  // bytes of a CID never change (every block is verified against its CID on read), so a pair
  // that matched once always matches: later reads skip the second hash (the per-block one stays).
  // A catalog row that maps a digest to another CID is a new pair and is checked again.
  std::mutex verified_mu;
  std::unordered_set<std::string> verified;

  std::map<std::string, std::string> htpasswd_users;  // user -> bcrypt hash
  std::mutex auth_mu;
  std::unordered_set<std::string> auth_ok;

  std::mutex uploads_mu;
  std::unordered_map<std::string, std::shared_ptr<Upload>> uploads;

  // Metrics.
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (method, status) -> count
  std::atomic<uint64_t> blob_bytes_out{0}, blob_bytes_in{0}, blobs_ingested{0},
      digest_mismatches{0}, gateway_blocks{0}, manifests_pushed{0}, upstream_hits{0},
      upstream_misses{0}, upstream_errors{0}, upstream_bytes{0};

  // ---- helpers -------------------------------------------------------------------------------

  // Hands freshly imported content to the Kubo publisher (asynchronous; never fails the caller).
  void Publish(std::string what, const std::vector<std::string>& roots) {
    if (publisher) publisher->Enqueue(std::move(what), roots);
  }

  static std::string Param(const Request& req, const char* key) {
    return req.has_param(key) ? req.get_param_value(key) : std::string();
  }

  // Reads the whole request body into `out` (at most `limit` bytes). False on overflow/error.
  static bool ReadBody(const Request& req, const ContentReader* reader, size_t limit,
                       std::string* out, bool* too_large) {
    *too_large = false;
    if (!reader) {
      if (req.body.size() > limit) {
        *too_large = true;
        return false;
      }
      *out = req.body;
      return true;
    }
    return (*reader)([&](const char* data, size_t len) {
      if (out->size() + len > limit) {
        *too_large = true;
        return false;
      }
      out->append(data, len);
      return true;
    });
  }

  static void Drain(const ContentReader* reader) {
    if (reader) (*reader)([](const char*, size_t) { return true; });
  }

  bool AuthConfigured() const {
    return !config().registry.push_token.empty() || !htpasswd_users.empty();
  }

  // True if the request carries credentials that allow writes: "Bearer <push_token>", Basic
  // with the push token as password, or Basic checked against the htpasswd file (bcrypt through
  // libcrypt; a verified user:password is remembered by its sha256, so bcrypt runs once).
  bool Authorized(const Request& req) {
    const auto& rc = config().registry;
    std::string auth = req.get_header_value("Authorization");
    if (!rc.push_token.empty() && auth == "Bearer " + rc.push_token) return true;
    if (!auth.starts_with("Basic ")) return false;
    std::string user, pass;
    if (!DecodeBasic(auth.substr(6), &user, &pass)) return false;
    if (!rc.push_token.empty() && pass == rc.push_token) return true;
    auto it = htpasswd_users.find(user);
    if (it == htpasswd_users.end()) return false;
    std::string key = Digest::FromSha256(Sha256Of(AsBytes(user + ":" + pass))).hex();
    {
      std::lock_guard lock(auth_mu);
      if (auth_ok.count(key)) return true;
    }
    crypt_data data{};
    const char* out = crypt_r(pass.c_str(), it->second.c_str(), &data);
    bool ok = out != nullptr && out[0] != '*' && it->second == out;
    if (ok) {
      std::lock_guard lock(auth_mu);
      auth_ok.insert(key);
    }
    return ok;
  }

  static void Challenge(Response& res) {
    res.set_header("WWW-Authenticate", "Basic realm=\"ipfly-registry\"");
    SendError(res, 401, "UNAUTHORIZED", "authentication required to push");
  }

  bool CheckWriteAllowed(const Request& req, Response& res) {
    if (config().registry.read_only) {
      SendError(res, 405, "UNSUPPORTED", "this registry is read-only");
      return false;
    }
    if (AuthConfigured() && !Authorized(req)) {
      Challenge(res);
      return false;
    }
    return true;
  }

  static bool DecodeBasic(const std::string& b64, std::string* user, std::string* pass) {
    static const std::string kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : b64) {
      if (c == '=') break;
      size_t v = kAlphabet.find(c);
      if (v == std::string::npos) return false;
      acc = (acc << 6) | static_cast<uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push_back(static_cast<char>((acc >> bits) & 0xff));
      }
    }
    size_t colon = out.find(':');
    if (colon == std::string::npos) return false;
    *user = out.substr(0, colon);
    *pass = out.substr(colon + 1);
    return true;
  }

  // ---- /v2/ ----------------------------------------------------------------------------------

  void HandleV2(const Request& req, Response& res, const ContentReader* reader) {
    res.set_header("Docker-Distribution-API-Version", "registry/2.0");
    const std::string& m = req.method;
    V2Path p = ParseV2(req.path);
    bool write = m == "POST" || m == "PUT" || m == "PATCH" || m == "DELETE";
    if (p.kind == V2Path::kBase) {
      if (m != "GET" && m != "HEAD") return MethodNotAllowed(res, reader);
      // With push auth configured, /v2/ challenges anonymous clients (as distribution does), so
      // that clients with credentials send them; reads stay anonymous everywhere else.
      if (AuthConfigured() && !Authorized(req)) return Challenge(res);
      res.set_content("{}", "application/json");
      return;
    }
    if (p.kind == V2Path::kBad) {
      Drain(reader);
      return SendError(res, 404, "NOT_FOUND", "unknown endpoint");
    }
    if (p.kind != V2Path::kCatalog && !ValidRepoName(p.name)) {
      Drain(reader);
      return SendError(res, 400, "NAME_INVALID", "invalid repository name", p.name);
    }
    if (p.kind != V2Path::kCatalog && p.name.starts_with(kIpfsPrefix)) {
      return HandleIpfsView(req, res, reader, p);
    }
    if (write && !CheckWriteAllowed(req, res)) {
      Drain(reader);
      return;
    }
    switch (p.kind) {
      case V2Path::kCatalog:
        if (m != "GET" && m != "HEAD") return MethodNotAllowed(res, reader);
        return ListCatalog(req, res);
      case V2Path::kTags:
        if (m != "GET" && m != "HEAD") return MethodNotAllowed(res, reader);
        if (upstream && MirrorTags(req, res, p.name)) return;
        return ListTags(req, res, p.name);
      case V2Path::kManifest:
        if ((m == "GET" || m == "HEAD") && upstream) return MirrorManifest(req, res, p.name, p.ref);
        if (m == "GET" || m == "HEAD") return GetManifest(req, res, p.name, p.ref);
        if (m == "PUT") return PutManifest(req, res, reader, p.name, p.ref);
        if (m == "DELETE") return DeleteManifest(res, reader, p.name, p.ref);
        return MethodNotAllowed(res, reader);
      case V2Path::kBlob:
        if ((m == "GET" || m == "HEAD") && upstream) return MirrorBlob(req, res, p.name, p.ref);
        if (m == "GET" || m == "HEAD") return GetBlob(req, res, p.name, p.ref);
        if (m == "DELETE") return DeleteBlob(res, reader, p.name, p.ref);
        return MethodNotAllowed(res, reader);
      case V2Path::kUploadStart:
        if (m == "POST") return StartUpload(req, res, reader, p.name);
        return MethodNotAllowed(res, reader);
      case V2Path::kUpload:
        if (m == "GET") return UploadStatus(res, p.name, p.ref);
        if (m == "PATCH") return PatchUpload(req, res, reader, p.name, p.ref);
        if (m == "PUT") return PutUpload(req, res, reader, p.name, p.ref);
        if (m == "DELETE") return CancelUpload(res, reader, p.name, p.ref);
        return MethodNotAllowed(res, reader);
      case V2Path::kReferrers:
        if (m != "GET" && m != "HEAD") return MethodNotAllowed(res, reader);
        return Referrers(req, res, p.name, p.ref);
      default:
        return SendError(res, 404, "NOT_FOUND", "unknown endpoint");
    }
  }

  static void MethodNotAllowed(Response& res, const ContentReader* reader) {
    Drain(reader);
    SendError(res, 405, "UNSUPPORTED", "method not allowed on this endpoint");
  }

  static void InternalError(Response& res, const Error& e) {
    IPFLY_LOG_ERROR("registry: {}", e.ToString());
    SendError(res, 500, "UNKNOWN", e.message());
  }

  // True if the catalog lookup `r` found something. Otherwise writes the response: 500 for a
  // failed lookup, else `status` with `code`, `message` and `detail`.
  template <typename T>
  static bool Found(Response& res, const Result<std::optional<T>>& r, int status,
                    std::string_view code, std::string_view message, const json& detail) {
    if (!r.ok()) {
      InternalError(res, r.error());
      return false;
    }
    if (!*r) {
      SendError(res, status, code, message, detail);
      return false;
    }
    return true;
  }

  // Parses n/last; false (and a 400 written) on a bad n.
  static bool PageParams(const Request& req, Response& res, size_t* n, bool* has_n,
                         std::string* last) {
    *last = Param(req, "last");
    *has_n = req.has_param("n");
    *n = 0;
    if (*has_n) {
      const std::string s = Param(req, "n");
      if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) {
        SendError(res, 400, "PAGINATION_NUMBER_INVALID", "invalid n", s);
        return false;
      }
      *n = std::stoul(s);
    }
    return true;
  }

  static std::string PageLink(const std::string& base, size_t n, const std::string& last) {
    return "<" + base + "?n=" + std::to_string(n) + "&last=" + last + ">; rel=\"next\"";
  }

  void ListCatalog(const Request& req, Response& res) {
    size_t n;
    bool has_n;
    std::string last;
    if (!PageParams(req, res, &n, &has_n, &last)) return;
    std::vector<std::string> repos;
    if (!has_n || n > 0) {
      auto r = catalog->ListRepositories(last, has_n ? n + 1 : 0);
      if (!r.ok()) return InternalError(res, r.error());
      repos = std::move(*r);
    }
    if (has_n && repos.size() > n) {
      repos.resize(n);
      res.set_header("Link", PageLink("/v2/_catalog", n, repos.back()));
    }
    res.set_content(json{{"repositories", repos}}.dump(), "application/json");
  }

  void ListTags(const Request& req, Response& res, const std::string& name) {
    size_t n;
    bool has_n;
    std::string last;
    if (!PageParams(req, res, &n, &has_n, &last)) return;
    auto exists = catalog->RepoExists(name);
    if (!exists.ok()) return InternalError(res, exists.error());
    if (!*exists) return SendError(res, 404, "NAME_UNKNOWN", "repository not known", name);
    std::vector<std::string> tags;
    if (!has_n || n > 0) {
      auto r = catalog->ListTags(name, last, has_n ? n + 1 : 0);
      if (!r.ok()) return InternalError(res, r.error());
      tags = std::move(*r);
    }
    if (has_n && tags.size() > n) {
      tags.resize(n);
      res.set_header("Link", PageLink("/v2/" + name + "/tags/list", n, tags.back()));
    }
    res.set_content(json{{"name", name}, {"tags", tags}}.dump(), "application/json");
  }

  // ---- manifests -----------------------------------------------------------------------------

  // Resolves a tag or digest reference to a stored manifest; writes the error response and
  // returns nullopt when it cannot.
  std::optional<ManifestInfo> FindManifest(Response& res, const std::string& name,
                                           const std::string& ref) {
    std::string digest = ref;
    if (LooksLikeDigest(ref)) {
      if (!ValidSha256Digest(ref)) {
        SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", ref);
        return std::nullopt;
      }
    } else {
      if (!ValidTag(ref)) {
        SendError(res, 400, "TAG_INVALID", "invalid tag", ref);
        return std::nullopt;
      }
      auto d = catalog->ResolveTag(name, ref);
      if (!Found(res, d, 404, "MANIFEST_UNKNOWN", "manifest unknown", json{{"tag", ref}})) {
        return std::nullopt;
      }
      digest = **d;
    }
    auto mf = catalog->GetManifest(name, digest);
    if (!Found(res, mf, 404, "MANIFEST_UNKNOWN", "manifest unknown", json{{"digest", digest}})) {
      return std::nullopt;
    }
    return std::move(**mf);
  }

  // True if the client's Accept header admits `media_type` (no header, */* or an exact match).
  static bool Accepts(const Request& req, const std::string& media_type) {
    if (!req.has_header("Accept")) return true;
    bool any_listed = false;
    size_t count = req.get_header_value_count("Accept");
    for (size_t i = 0; i < count; ++i) {
      std::string v = req.get_header_value("Accept", i);
      size_t start = 0;
      while (start <= v.size()) {
        size_t comma = v.find(',', start);
        std::string item = BaseMediaType(
            std::string_view(v).substr(start, comma == std::string::npos ? v.npos : comma - start));
        if (!item.empty()) {
          any_listed = true;
          if (item == "*/*" || item == media_type) return true;
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    return !any_listed;
  }

  void GetManifest(const Request& req, Response& res, const std::string& name,
                   const std::string& ref) {
    auto mf = FindManifest(res, name, ref);
    if (!mf) return;
    if (!Accepts(req, mf->media_type)) {
      return SendError(res, 404, "MANIFEST_UNKNOWN",
                       "manifest is " + mf->media_type + ", which the Accept header excludes",
                       json{{"digest", mf->digest}, {"mediaType", mf->media_type}});
    }
    res.set_header("Docker-Content-Digest", mf->digest);
    res.set_header("ETag", "\"" + mf->digest + "\"");
    res.set_content(mf->content, mf->media_type);
  }

  void PutManifest(const Request& req, Response& res, const ContentReader* reader,
                   const std::string& name, const std::string& ref) {
    bool ref_is_digest = LooksLikeDigest(ref);
    if (ref_is_digest && !ValidSha256Digest(ref)) {
      Drain(reader);
      return SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", ref);
    }
    if (!ref_is_digest && !ValidTag(ref)) {
      Drain(reader);
      return SendError(res, 400, "TAG_INVALID", "invalid tag", ref);
    }
    std::string body;
    bool too_large = false;
    if (!ReadBody(req, reader, kMaxManifestBytes, &body, &too_large)) {
      if (too_large) {
        return SendError(res, 413, "MANIFEST_INVALID", "manifest larger than 4 MiB");
      }
      return SendError(res, 400, "MANIFEST_INVALID", "could not read the manifest body");
    }
    json doc = json::parse(body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      return SendError(res, 400, "MANIFEST_INVALID", "manifest is not a JSON object");
    }
    std::string ct = BaseMediaType(req.get_header_value("Content-Type"));
    std::string body_mt = doc.contains("mediaType") && doc["mediaType"].is_string()
                              ? doc["mediaType"].get<std::string>()
                              : "";
    if (!doc.contains("schemaVersion") || doc["schemaVersion"] != 2) {
      return SendError(res, 400, "MANIFEST_INVALID", "only schemaVersion 2 manifests are accepted");
    }
    std::string mt = !ct.empty() ? ct : body_mt;
    if (mt.empty()) mt = doc.contains("manifests") ? kOciIndex : kOciManifest;
    if (!body_mt.empty() && !ct.empty() && body_mt != ct) {
      return SendError(res, 400, "MANIFEST_INVALID",
                       "mediaType " + body_mt + " does not match Content-Type " + ct);
    }
    if (!IsKnownManifestType(mt)) {
      return SendError(res, 400, "MANIFEST_INVALID", "unsupported manifest media type", mt);
    }
    std::string digest = Digest::FromSha256(Sha256Of(AsBytes(body))).ToString();
    if (ref_is_digest && ref != digest) {
      return SendError(res, 400, "DIGEST_INVALID", "manifest digest does not match the reference",
                       json{{"expected", ref}, {"computed", digest}});
    }

    std::vector<std::string> blob_digests;
    std::vector<std::pair<std::string, std::string>> media_types;
    auto check_descriptor = [&](const json& d, bool is_manifest) -> bool {
      if (!d.is_object() || !d.contains("digest") || !d["digest"].is_string() ||
          !d.contains("size") || !d["size"].is_number_unsigned()) {
        SendError(res, 400, "MANIFEST_INVALID", "malformed descriptor", d);
        return false;
      }
      std::string dd = d["digest"].get<std::string>();
      if (!ValidSha256Digest(dd)) {
        SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest in descriptor", dd);
        return false;
      }
      if (is_manifest) {
        auto child = catalog->GetManifest(name, dd);
        return Found(res, child, 400, "MANIFEST_BLOB_UNKNOWN", "referenced manifest unknown", dd);
      }
      // Foreign / non-distributable layers carry urls and may be absent.
      if (d.contains("urls") && d["urls"].is_array() && !d["urls"].empty()) return true;
      auto blob = catalog->GetBlob(dd);
      if (!Found(res, blob, 400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", dd)) {
        return false;
      }
      if ((*blob)->size != d["size"].get<uint64_t>()) {
        SendError(res, 400, "SIZE_INVALID", "descriptor size does not match the blob", dd);
        return false;
      }
      blob_digests.push_back(dd);
      if (d.contains("mediaType") && d["mediaType"].is_string()) {
        media_types.emplace_back(dd, d["mediaType"].get<std::string>());
      }
      return true;
    };

    ManifestInfo info;
    if (IsIndexType(mt)) {
      if (!doc.contains("manifests") || !doc["manifests"].is_array()) {
        return SendError(res, 400, "MANIFEST_INVALID", "index without a manifests array");
      }
      for (const auto& d : doc["manifests"]) {
        if (!check_descriptor(d, true)) return;
      }
    } else {
      if (!doc.contains("config") || !doc.contains("layers") || !doc["layers"].is_array()) {
        return SendError(res, 400, "MANIFEST_INVALID", "image manifest without config or layers");
      }
      if (!check_descriptor(doc["config"], false)) return;
      for (const auto& d : doc["layers"]) {
        if (!check_descriptor(d, false)) return;
      }
      if (doc["config"].contains("mediaType") && doc["config"]["mediaType"].is_string()) {
        info.artifact_type = doc["config"]["mediaType"].get<std::string>();
      }
    }
    if (doc.contains("artifactType") && doc["artifactType"].is_string()) {
      info.artifact_type = doc["artifactType"].get<std::string>();
    }
    if (doc.contains("subject")) {
      const json& s = doc["subject"];
      if (!s.is_object() || !s.contains("digest") || !s["digest"].is_string() ||
          !ValidSha256Digest(s["digest"].get<std::string>())) {
        return SendError(res, 400, "MANIFEST_INVALID", "malformed subject descriptor");
      }
      info.subject = s["digest"].get<std::string>();
    }
    if (doc.contains("annotations") && doc["annotations"].is_object()) {
      info.annotations_json = doc["annotations"].dump();
    }
    auto cid = IngestBytes(AsBytes(body), profile, store);
    if (!cid.ok()) return InternalError(res, cid.error());
    info.digest = digest;
    info.media_type = mt;
    info.content = std::move(body);
    info.cid = *cid;
    if (Status s =
            catalog->PutManifest(name, info, ref_is_digest ? "" : ref, blob_digests, media_types);
        !s.ok()) {
      return InternalError(res, s.error());
    }
    manifests_pushed.fetch_add(1);
    Publish("manifest " + name + "@" + digest, {info.cid});
    res.status = 201;
    res.set_header("Location", "/v2/" + name + "/manifests/" + digest);
    res.set_header("Docker-Content-Digest", digest);
    if (!info.subject.empty()) res.set_header("OCI-Subject", info.subject);
  }

  void DeleteManifest(Response& res, const ContentReader* reader, const std::string& name,
                      const std::string& ref) {
    Drain(reader);
    if (LooksLikeDigest(ref)) {
      if (!ValidSha256Digest(ref)) {
        return SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", ref);
      }
      auto r = catalog->DeleteManifest(name, ref);
      if (!r.ok()) return InternalError(res, r.error());
      if (!*r) return SendError(res, 404, "MANIFEST_UNKNOWN", "manifest unknown", ref);
    } else {
      if (!ValidTag(ref)) return SendError(res, 400, "TAG_INVALID", "invalid tag", ref);
      auto r = catalog->DeleteTag(name, ref);
      if (!r.ok()) return InternalError(res, r.error());
      if (!*r) return SendError(res, 404, "MANIFEST_UNKNOWN", "tag unknown", ref);
    }
    res.status = 202;
  }

  void Referrers(const Request& req, Response& res, const std::string& name,
                 const std::string& digest) {
    if (!ValidSha256Digest(digest)) {
      return SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", digest);
    }
    auto refs = catalog->Referrers(name, digest);
    if (!refs.ok()) return InternalError(res, refs.error());
    std::string filter = Param(req, "artifactType");
    json manifests = json::array();
    for (const auto& m : *refs) {
      if (!filter.empty() && m.artifact_type != filter) continue;
      json d = {{"mediaType", m.media_type}, {"digest", m.digest}, {"size", m.content.size()}};
      if (!m.artifact_type.empty()) d["artifactType"] = m.artifact_type;
      json ann = json::parse(m.annotations_json, nullptr, false);
      if (!ann.is_discarded() && ann.is_object() && !ann.empty()) d["annotations"] = ann;
      manifests.push_back(std::move(d));
    }
    if (!filter.empty()) res.set_header("OCI-Filters-Applied", "artifactType");
    json index = {{"schemaVersion", 2}, {"mediaType", kOciIndex}, {"manifests", manifests}};
    res.set_content(index.dump(), kOciIndex);
  }

  // ---- pull-through mirror ------------------------------------------------------------------

  static std::string UpstreamAccept() {
    return std::string(kOciManifest) + ", " + kOciIndex + ", " + kDockerManifest + ", " +
           kDockerList;
  }

  void UpstreamFailed(Response& res, const std::string& what, const Error& e) {
    upstream_errors.fetch_add(1);
    IPFLY_LOG_WARN("mirror: {}: {}", what, e.ToString());
    SendError(res, 503, "UNAVAILABLE", "upstream registry unavailable: " + e.message(), what);
  }

  void MirrorManifest(const Request& req, Response& res, const std::string& name,
                      const std::string& ref) {
    const bool is_digest = LooksLikeDigest(ref);
    if ((is_digest && !ValidSha256Digest(ref)) || (!is_digest && !ValidTag(ref))) {
      return GetManifest(req, res, name, ref);  // writes the validation error
    }
    bool have_local = false;
    if (is_digest) {
      auto local = catalog->GetManifest(name, ref);
      if (!local.ok()) return InternalError(res, local.error());
      if (*local) {
        upstream_hits.fetch_add(1);
        return GetManifest(req, res, name, ref);
      }
    } else {
      auto t = catalog->ResolveTagWithTime(name, ref);
      if (!t.ok()) return InternalError(res, t.error());
      if (*t) {
        have_local = true;
        int64_t age = static_cast<int64_t>(std::time(nullptr)) - (*t)->second;
        if (age >= 0 && age < static_cast<int64_t>(config().registry.tag_ttl_s)) {
          upstream_hits.fetch_add(1);
          return GetManifest(req, res, name, ref);
        }
      }
    }
    upstream_misses.fetch_add(1);
    const std::string uname = upstream->UpstreamName(name);
    auto up = upstream->Fetch("GET", uname, "/v2/" + uname + "/manifests/" + ref,
                              {{"Accept", UpstreamAccept()}}, kMaxManifestBytes);
    if (!up.ok() || up->status >= 500 || up->status == 429) {
      if (have_local) {  // stale but usable: the upstream is down
        IPFLY_LOG_WARN("mirror: serving {}:{} from the catalog, upstream failed", name, ref);
        return GetManifest(req, res, name, ref);
      }
      if (!up.ok()) return UpstreamFailed(res, name + ":" + ref, up.error());
      return UpstreamFailed(res, name + ":" + ref,
                            Unavailable("upstream answered " + std::to_string(up->status)));
    }
    if (up->status == 404) {
      return SendError(res, 404, "MANIFEST_UNKNOWN", "manifest unknown upstream", ref);
    }
    if (up->status != 200) {
      if (have_local) return GetManifest(req, res, name, ref);
      return UpstreamFailed(res, name + ":" + ref,
                            Unavailable("upstream answered " + std::to_string(up->status)));
    }
    std::string digest = Digest::FromSha256(Sha256Of(AsBytes(up->body))).ToString();
    std::string claimed = up->Header("Docker-Content-Digest");
    if ((is_digest && digest != ref) || (!claimed.empty() && claimed != digest)) {
      return UpstreamFailed(res, name + ":" + ref,
                            Corrupt("upstream manifest hashes to " + digest));
    }
    ManifestInfo info;
    info.digest = digest;
    info.media_type = BaseMediaType(up->Header("Content-Type"));
    json doc = json::parse(up->body, nullptr, false);
    if (!IsKnownManifestType(info.media_type) && !doc.is_discarded() && doc.is_object()) {
      info.media_type = doc.value("mediaType", "");
    }
    if (!IsKnownManifestType(info.media_type)) {
      return SendError(res, 400, "MANIFEST_INVALID",
                       "upstream manifest type not supported: " + info.media_type);
    }
    if (!doc.is_discarded() && doc.is_object() && doc.contains("subject") &&
        doc["subject"].is_object()) {
      info.subject = doc["subject"].value("digest", "");
    }
    auto cid = IngestBytes(AsBytes(up->body), profile, store);
    if (!cid.ok()) return InternalError(res, cid.error());
    info.cid = *cid;
    info.content = std::move(up->body);
    if (Status s = catalog->PutManifest(name, info, is_digest ? "" : ref, {}, {}); !s.ok()) {
      return InternalError(res, s.error());
    }
    Publish("manifest " + name + "@" + info.digest, {info.cid});
    GetManifest(req, res, name, ref);
  }

  // Returns true if the upstream answered the tag list (and the response was written).
  bool MirrorTags(const Request& req, Response& res, const std::string& name) {
    const std::string uname = upstream->UpstreamName(name);
    std::string path = "/v2/" + uname + "/tags/list";
    std::string q;
    if (req.has_param("n")) q += "n=" + Param(req, "n");
    if (req.has_param("last"))
      q += std::string(q.empty() ? "" : "&") + "last=" + Param(req, "last");
    if (!q.empty()) path += "?" + q;
    auto up = upstream->Fetch("GET", uname, path, {}, 16 << 20);
    if (!up.ok() || up->status != 200) return false;
    json j = json::parse(up->body, nullptr, false);
    if (j.is_discarded()) return false;
    j["name"] = name;
    res.set_content(j.dump(), "application/json");
    return true;
  }

  // Fetches a blob upstream into a spool (hashing), forwarding all but the last piece to
  // `forward` as it arrives; after the digest and size checks the last piece is forwarded, then
  // the spool is imported into IPFS and the blob recorded. A mismatch never forwards the end.
  Status FetchUpstreamBlob(const std::string& name, const std::string& digest,
                           uint64_t expected_size,
                           const std::function<bool(const char*, size_t)>& forward) {
    const std::string path = uploads_dir + "/mirror-" + NewUuid();
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError("create " + path, errno);
    struct Cleanup {
      int fd;
      std::string path;
      ~Cleanup() {
        if (fd >= 0) ::close(fd);
        ::unlink(path.c_str());
      }
    } cleanup{fd, path};
    Sha256 hasher;
    std::string held;
    uint64_t total = 0;
    bool write_failed = false, forward_failed = false;
    const std::string uname = upstream->UpstreamName(name);
    auto up = upstream->Stream(
        uname, "/v2/" + uname + "/blobs/" + digest, {}, [&](const char* data, size_t len) {
          size_t off = 0;
          while (off < len) {
            ssize_t n = ::write(fd, data + off, len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
              write_failed = true;
              return false;
            }
            off += static_cast<size_t>(n);
          }
          hasher.Update(ByteView(reinterpret_cast<const uint8_t*>(data), len));
          total += len;
          upstream_bytes.fetch_add(len);
          if (forward) {
            if (!held.empty() && !forward(held.data(), held.size())) {
              forward_failed = true;
              return false;
            }
            held.assign(data, len);
          }
          return true;
        });
    if (write_failed) return ErrnoError("write " + path, errno);
    if (forward_failed) return Error(Errc::kCancelled, "client went away");
    if (!up.ok()) return std::move(up).error();
    if (up->status == 404) return NotFound("blob " + digest + " unknown upstream");
    if (up->status != 200) {
      return Unavailable("upstream answered " + std::to_string(up->status) + " for " + digest);
    }
    std::string got = Digest::FromSha256(hasher.Final()).ToString();
    if (got != digest || (expected_size != UINT64_MAX && total != expected_size)) {
      digest_mismatches.fetch_add(1);
      return Corrupt("upstream blob " + digest + " hashes to " + got + " (" +
                     std::to_string(total) + " bytes)");
    }
    // Import before the client gets the last bytes: once a pull has completed, the blob is
    // served from IPFS (a second pull works with the upstream gone).
    if (::fsync(fd) != 0) return ErrnoError("fsync " + path, errno);
    auto ing = IPFLY_TRY(IngestFile(path, profile, store));
    if (!ing.digest.empty() && ing.digest != digest) {
      return Corrupt("mirror spool changed while importing");
    }
    BlobInfo b;
    b.digest = digest;
    b.cid = ing.cid;
    b.size = ing.size;
    b.index_cid = ing.index_cid;
    IPFLY_RETURN_IF_ERROR(catalog->PutBlob(b, name));
    blobs_ingested.fetch_add(1);
    Publish("blob " + digest, {b.cid, b.index_cid});
    if (forward && !held.empty() && !forward(held.data(), held.size())) {
      return Error(Errc::kCancelled, "client went away at the end (blob cached)");
    }
    return OkStatus();
  }

  void MirrorBlob(const Request& req, Response& res, const std::string& name,
                  const std::string& digest) {
    if (!ValidSha256Digest(digest)) return GetBlob(req, res, name, digest);
    auto blob = catalog->GetBlob(digest);
    if (!blob.ok()) return InternalError(res, blob.error());
    if (*blob) {
      auto linked = catalog->RepoHasBlob(name, digest);
      if (!linked.ok()) return InternalError(res, linked.error());
      if (!*linked) {
        // Known content, but not for this repository: the upstream decides whether this
        // repository may see it, so repositories stay as isolated as upstream's (the bytes are
        // not downloaded again).
        const std::string uname = upstream->UpstreamName(name);
        auto head = upstream->Fetch("HEAD", uname, "/v2/" + uname + "/blobs/" + digest, {}, 0);
        if (!head.ok()) return UpstreamFailed(res, digest, head.error());
        if (head->status == 404) return SendError(res, 404, "BLOB_UNKNOWN", "blob unknown", digest);
        if (head->status != 200) {
          return UpstreamFailed(res, digest,
                                Unavailable("upstream answered " + std::to_string(head->status)));
        }
        if (Status s = catalog->LinkBlob(name, digest); !s.ok()) {
          return InternalError(res, s.error());
        }
      }
      upstream_hits.fetch_add(1);
      return GetBlob(req, res, name, digest);
    }
    upstream_misses.fetch_add(1);
    const std::string uname = upstream->UpstreamName(name);
    auto head = upstream->Fetch("HEAD", uname, "/v2/" + uname + "/blobs/" + digest, {}, 0);
    if (!head.ok()) return UpstreamFailed(res, digest, head.error());
    if (head->status == 404) return SendError(res, 404, "BLOB_UNKNOWN", "blob unknown", digest);
    if (head->status != 200) {
      return UpstreamFailed(res, digest,
                            Unavailable("upstream answered " + std::to_string(head->status)));
    }
    uint64_t size = UINT64_MAX;
    try {
      size = std::stoull(head->Header("Content-Length"));
    } catch (...) {
    }
    if (req.method == "HEAD" || !req.ranges.empty() || size == UINT64_MAX) {
      // Fetch whole into IPFS first, then answer from there.
      Status st = FetchUpstreamBlob(name, digest, size, nullptr);
      if (!st.ok()) return UpstreamFailed(res, digest, st.error());
      return GetBlob(req, res, name, digest);
    }
    res.set_header("Docker-Content-Digest", digest);
    res.set_header("Accept-Ranges", "bytes");
    res.set_content_provider(
        size, "application/octet-stream",
        [this, name, digest, size](size_t offset, size_t length, httplib::DataSink& sink) {
          if (offset != 0 || length != size) return false;  // ranges take the path above
          Status st = FetchUpstreamBlob(name, digest, size, [&](const char* d, size_t n) {
            if (!sink.write(d, n)) return false;
            blob_bytes_out.fetch_add(n);
            return true;
          });
          if (!st.ok()) {
            upstream_errors.fetch_add(1);
            IPFLY_LOG_WARN("mirror: blob {}: {}", digest, st.error().ToString());
          }
          return st.ok();
        });
  }

  // ---- IPFS-format view: /v2/ipfs/<repo>/... ---------------------------------------------------

  // The manifest of <repo> with every blob descriptor carrying urls ["ipfs://<CID>"] and layer
  // descriptors the containerd.io/snapshot/ipfly.cid|index annotations; index children are
  // rewritten recursively. Every rewritten manifest is stored under ipfs/<repo> so that it is
  // served by its own digest, consistently.
  Result<ManifestInfo> RewriteForIpfs(const std::string& base, const ManifestInfo& orig,
                                      int depth) {
    if (depth > 4) return InvalidArgument("manifest index nesting deeper than 4");
    json doc = json::parse(orig.content, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) return Corrupt("stored manifest is not JSON");
    std::vector<std::string> blob_digests;
    if (IsIndexType(orig.media_type)) {
      for (auto& d : doc["manifests"]) {
        std::string cd = d.value("digest", "");
        auto child = IPFLY_TRY(catalog->GetManifest(base, cd));
        if (!child && upstream && ValidSha256Digest(cd)) {
          Request fake;
          fake.method = "GET";
          Response scratch;
          MirrorManifest(fake, scratch, base, cd);
          child = IPFLY_TRY(catalog->GetManifest(base, cd));
        }
        if (!child) return NotFound("child manifest " + cd + " of " + base);
        ManifestInfo rc = IPFLY_TRY(RewriteForIpfs(base, *child, depth + 1));
        d["digest"] = rc.digest;
        d["size"] = rc.content.size();
        // As for blobs: the child manifest is a UnixFS file in IPFS (nerdctl / stargz resolve
        // every descriptor of an IPFS image through its ipfs:// URL).
        d["urls"] = json::array({"ipfs://" + rc.cid});
      }
    } else {
      auto rewrite = [&](json& d, bool is_layer) -> Status {
        std::string bd = d.value("digest", "");
        auto blob = IPFLY_TRY(catalog->GetBlob(bd));
        if (!blob && upstream && ValidSha256Digest(bd)) {
          // Mirroring: the blob must be in IPFS to have a CID, so fetch it now.
          IPFLY_RETURN_IF_ERROR(FetchUpstreamBlob(base, bd, UINT64_MAX, nullptr));
          blob = IPFLY_TRY(catalog->GetBlob(bd));
        }
        if (!blob) return OkStatus();  // foreign layer: left as it is
        blob_digests.push_back(bd);
        std::string url = "ipfs://" + blob->cid;
        if (!d.contains("urls") || !d["urls"].is_array()) d["urls"] = json::array();
        bool has = false;
        for (const auto& u : d["urls"]) has = has || u == url;
        if (!has) d["urls"].push_back(url);
        if (is_layer) {
          if (!d.contains("annotations") || !d["annotations"].is_object()) {
            d["annotations"] = json::object();
          }
          d["annotations"]["containerd.io/snapshot/ipfly.cid"] = blob->cid;
          if (!blob->index_cid.empty()) {
            d["annotations"]["containerd.io/snapshot/ipfly.index"] = blob->index_cid;
          }
        }
        return OkStatus();
      };
      if (doc.contains("config")) IPFLY_RETURN_IF_ERROR(rewrite(doc["config"], false));
      if (doc.contains("layers")) {
        for (auto& l : doc["layers"]) IPFLY_RETURN_IF_ERROR(rewrite(l, true));
      }
    }
    ManifestInfo out = orig;
    out.content = doc.dump();
    out.digest = Digest::FromSha256(Sha256Of(AsBytes(out.content))).ToString();
    out.subject.clear();  // the view has no referrers of its own
    out.cid = IPFLY_TRY(IngestBytes(AsBytes(out.content), profile, store));
    const std::string view = std::string(kIpfsPrefix) + base;
    // The view is rewritten on every GET by tag; publish a rewritten manifest only once.
    const bool fresh = !IPFLY_TRY(catalog->GetManifest(view, out.digest)).has_value();
    IPFLY_RETURN_IF_ERROR(catalog->PutManifest(view, out, "", blob_digests, {}));
    if (fresh) Publish("manifest " + view + "@" + out.digest, {out.cid});
    return out;
  }

  void HandleIpfsView(const Request& req, Response& res, const ContentReader* reader,
                      const V2Path& p) {
    const std::string view = p.name;
    const std::string base = view.substr(std::strlen(kIpfsPrefix));
    const std::string& m = req.method;
    if (m != "GET" && m != "HEAD") {
      Drain(reader);
      return SendError(res, 405, "UNSUPPORTED",
                       "ipfs/ repositories are read-only views of the repository without the "
                       "prefix");
    }
    if (!ValidRepoName(base)) return SendError(res, 400, "NAME_INVALID", "invalid name", view);
    switch (p.kind) {
      case V2Path::kTags:
        return ListTags(req, res, base);
      case V2Path::kBlob:
        return upstream ? MirrorBlob(req, res, base, p.ref) : GetBlob(req, res, base, p.ref);
      case V2Path::kReferrers:
        return Referrers(req, res, view, p.ref);
      case V2Path::kManifest:
        break;
      default:
        return SendError(res, 405, "UNSUPPORTED", "not available on ipfs/ views");
    }
    if (!LooksLikeDigest(p.ref)) {
      if (upstream) {
        // Mirror (or revalidate) <repo>:<tag> first; its errors are the view's errors.
        Response scratch;
        MirrorManifest(req, scratch, base, p.ref);
        if (scratch.status != 200 && scratch.status != -1) {
          res.status = scratch.status;
          res.set_content(scratch.body, "application/json");
          return;
        }
      }
      // A tag: rewrite the current manifest of <repo>:<tag> and point the view's tag at it.
      auto orig = FindManifest(res, base, p.ref);
      if (!orig) return;
      auto rw = RewriteForIpfs(base, *orig, 0);
      if (!rw.ok()) return InternalError(res, rw.error());
      if (Status s = catalog->PutManifest(view, *rw, p.ref, {}, {}); !s.ok()) {
        return InternalError(res, s.error());
      }
    }
    GetManifest(req, res, view, p.ref);
  }

  // ---- blobs ---------------------------------------------------------------------------------

  void GetBlob(const Request& req, Response& res, const std::string& name,
               const std::string& digest) {
    if (!ValidSha256Digest(digest)) {
      return SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", digest);
    }
    auto linked = catalog->RepoHasBlob(name, digest);
    if (!linked.ok()) return InternalError(res, linked.error());
    auto blob = catalog->GetBlob(digest);
    if (!blob.ok()) return InternalError(res, blob.error());
    if (!*linked || !*blob) return SendError(res, 404, "BLOB_UNKNOWN", "blob unknown", digest);
    const BlobInfo info = **blob;
    auto cid = mf::Cid::Parse(info.cid);
    if (!cid.ok()) return InternalError(res, cid.error());
    if (req.method != "HEAD") {
      // Resolve the root through the fetch chain before answering 200: once the headers are out
      // a failure can only drop the connection. This is where a blob no IPFS source has (only
      // Powergate: "being retrieved from Filecoin, job <id>") gets a clear error instead.
      auto size = ufs_reader->Size(
          *cid, fetch::DeadlineIn(std::chrono::milliseconds(config().fetch.timeout_ms)));
      if (!size.ok()) {
        IPFLY_LOG_WARN("blob {} ({}): {}", digest, info.cid, size.error().ToString());
        if (size.error().code() == Errc::kUnavailable || size.error().code() == Errc::kTimeout) {
          res.set_header("Retry-After", "10");
        }
        return SendError(res, 503, "UNAVAILABLE",
                         "blob content cannot be read now: " + size.error().message(), digest);
      }
    }
    res.set_header("Docker-Content-Digest", digest);
    res.set_header("ETag", "\"" + digest + "\"");
    res.set_header("Accept-Ranges", "bytes");
    res.set_header("Cache-Control", "max-age=31536000");
    if (!req.ranges.empty()) {
      // One satisfiable range only; httplib slices the provider output and sets Content-Range.
      const auto& r = req.ranges.front();
      bool bad = req.ranges.size() != 1 || info.size == 0 ||
                 (r.first >= 0 && static_cast<uint64_t>(r.first) >= info.size) ||
                 (r.first >= 0 && r.second >= 0 && r.second < r.first);
      if (bad) {
        res.set_header("Content-Range", "bytes */" + std::to_string(info.size));
        res.status = 416;
        return;
      }
    }
    mf::Cid root = *cid;
    const uint64_t size = info.size;
    res.set_content_provider(
        size, "application/octet-stream",
        [this, root, size, digest](size_t offset, size_t length, httplib::DataSink& sink) {
          return StreamBlob(root, size, digest, offset, length, sink);
        });
  }

  // Writes [offset, offset+length) of the blob to `sink`. A whole-blob read is checked against
  // the digest as it streams (until the pair passed once, see `verified`): the last piece is
  // held back until the hash matched, so a client never receives the complete wrong content
  // (the connection is dropped instead). Range reads rely on the per-block CID checks.
  bool StreamBlob(const mf::Cid& root, uint64_t size, const std::string& digest, uint64_t offset,
                  uint64_t length, httplib::DataSink& sink) {
    const std::string pair = digest + "|" + root.ToString();
    bool known_good;
    {
      std::lock_guard lock(verified_mu);
      known_good = verified.count(pair) > 0;
    }
    const bool whole = offset == 0 && length == size && !known_good;
    Sha256 hasher;
    Bytes held;
    bool sink_failed = false;
    auto deadline = fetch::DeadlineIn(std::chrono::hours(1));
    Status st = ufs_reader->Stream(
        root, offset, length,
        [&](ByteView chunk) -> Status {
          if (!whole) {
            if (!sink.write(reinterpret_cast<const char*>(chunk.data()), chunk.size())) {
              sink_failed = true;
              return Error(Errc::kCancelled, "client went away");
            }
            blob_bytes_out.fetch_add(chunk.size());
            return OkStatus();
          }
          hasher.Update(chunk);
          if (!held.empty()) {
            if (!sink.write(reinterpret_cast<const char*>(held.data()), held.size())) {
              sink_failed = true;
              return Error(Errc::kCancelled, "client went away");
            }
            blob_bytes_out.fetch_add(held.size());
          }
          held.assign(chunk.begin(), chunk.end());
          return OkStatus();
        },
        deadline);
    if (!st.ok()) {
      if (!sink_failed) {
        IPFLY_LOG_ERROR("blob {} ({}): read failed, aborting response: {}", digest, root.ToString(),
                        st.error().ToString());
      }
      return false;
    }
    if (whole) {
      std::string got = Digest::FromSha256(hasher.Final()).ToString();
      if (got != digest) {
        digest_mismatches.fetch_add(1);
        IPFLY_LOG_ERROR("blob {} ({}): content hashes to {}, aborting response", digest,
                        root.ToString(), got);
        return false;
      }
      {
        std::lock_guard lock(verified_mu);
        verified.insert(pair);
      }
      if (!held.empty()) {
        if (!sink.write(reinterpret_cast<const char*>(held.data()), held.size())) return false;
        blob_bytes_out.fetch_add(held.size());
      }
    }
    return true;
  }

  void DeleteBlob(Response& res, const ContentReader* reader, const std::string& name,
                  const std::string& digest) {
    Drain(reader);
    if (!ValidSha256Digest(digest)) {
      return SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", digest);
    }
    auto linked = catalog->RepoHasBlob(name, digest);
    if (!linked.ok()) return InternalError(res, linked.error());
    if (!*linked) return SendError(res, 404, "BLOB_UNKNOWN", "blob unknown", digest);
    if (Status s = catalog->UnlinkBlob(name, digest); !s.ok()) return InternalError(res, s.error());
    res.status = 202;
  }

  // ---- uploads -------------------------------------------------------------------------------

  Result<std::shared_ptr<Upload>> NewUpload(const std::string& name) {
    ExpireUploads();
    auto up = std::make_shared<Upload>();
    up->uuid = NewUuid();
    up->repo = name;
    up->path = uploads_dir + "/" + up->uuid;
    up->fd = ::open(up->path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (up->fd < 0) return ErrnoError("create " + up->path, errno);
    return up;
  }

  void ForgetUpload(const std::shared_ptr<Upload>& up) {
    {
      std::lock_guard lock(uploads_mu);
      uploads.erase(up->uuid);
    }
    if (up->fd >= 0) {
      ::close(up->fd);
      up->fd = -1;
    }
    ::unlink(up->path.c_str());
  }

  std::shared_ptr<Upload> FindUpload(const std::string& name, const std::string& uuid) {
    std::lock_guard lock(uploads_mu);
    auto it = uploads.find(uuid);
    if (it == uploads.end() || it->second->repo != name) return nullptr;
    it->second->last_used = std::chrono::steady_clock::now();
    return it->second;
  }

  // Drops upload sessions idle for more than an hour (abandoned by their clients), with their
  // spools. Sessions busy in a request are skipped.
  void ExpireUploads() {
    const auto cutoff = std::chrono::steady_clock::now() - std::chrono::hours(1);
    std::vector<std::shared_ptr<Upload>> stale;
    {
      std::lock_guard lock(uploads_mu);
      for (const auto& [uuid, up] : uploads) {
        if (up->last_used < cutoff) stale.push_back(up);
      }
    }
    for (const auto& up : stale) {
      std::unique_lock l(up->mu, std::try_to_lock);
      if (!l.owns_lock()) continue;
      up->finished = true;
      ForgetUpload(up);
    }
  }

  static std::string RangeHeader(uint64_t size) {
    return "0-" + std::to_string(size == 0 ? 0 : size - 1);
  }

  // Where the upload continues and how much it holds.
  static void SetUploadHeaders(Response& res, const std::string& name, const Upload& up) {
    res.set_header("Location", "/v2/" + name + "/blobs/uploads/" + up.uuid);
    res.set_header("Range", RangeHeader(up.size));
    res.set_header("Docker-Upload-UUID", up.uuid);
  }

  void UploadAccepted(Response& res, const std::string& name, const Upload& up) {
    res.status = 202;
    SetUploadHeaders(res, name, up);
  }

  // Appends the request body to the upload. Requires up.mu. Writes the error response on failure.
  bool AppendBody(const Request& req, Response& res, const ContentReader* reader, Upload& up) {
    const uint64_t limit = config().registry.max_upload_size;
    bool too_large = false, io_error = false;
    auto sink = [&](const char* data, size_t len) {
      if (limit > 0 && up.size + len > limit) {
        too_large = true;
        return false;
      }
      size_t off = 0;
      while (off < len) {
        ssize_t n = ::write(up.fd, data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          io_error = true;
          return false;
        }
        off += static_cast<size_t>(n);
      }
      up.hasher.Update(ByteView(reinterpret_cast<const uint8_t*>(data), len));
      up.size += len;
      blob_bytes_in.fetch_add(len);
      return true;
    };
    bool ok = reader ? (*reader)(sink) : sink(req.body.data(), req.body.size());
    if (ok) return true;
    if (too_large) {
      SendError(res, 413, "SIZE_INVALID",
                "upload exceeds the size limit of " + std::to_string(limit) + " bytes");
    } else if (io_error) {
      InternalError(res, ErrnoError("write " + up.path, errno));
    } else {
      SendError(res, 400, "BLOB_UPLOAD_INVALID", "could not read the request body");
    }
    return false;
  }

  // Verifies and imports a complete upload, links it into the repository. Requires up.mu.
  void FinishUpload(Response& res, Upload& up, const std::string& name, const std::string& digest) {
    up.finished = true;
    std::string computed = Digest::FromSha256(up.hasher.Final()).ToString();
    if (computed != digest) {
      return SendError(res, 400, "DIGEST_INVALID", "uploaded content does not match the digest",
                       json{{"expected", digest}, {"computed", computed}});
    }
    if (::fsync(up.fd) != 0) return InternalError(res, ErrnoError("fsync " + up.path, errno));
    auto existing = catalog->GetBlob(digest);
    if (!existing.ok()) return InternalError(res, existing.error());
    if (*existing) {
      if (Status s = catalog->LinkBlob(name, digest); !s.ok()) return InternalError(res, s.error());
    } else {
      auto ing = IngestFile(up.path, profile, store);
      if (!ing.ok()) return InternalError(res, ing.error());
      if (!ing->digest.empty() && ing->digest != digest) {
        return SendError(res, 400, "DIGEST_INVALID", "spooled content changed while importing");
      }
      BlobInfo b;
      b.digest = digest;
      b.cid = ing->cid;
      b.size = ing->size;
      b.index_cid = ing->index_cid;
      if (Status s = catalog->PutBlob(b, name); !s.ok()) return InternalError(res, s.error());
      blobs_ingested.fetch_add(1);
      Publish("blob " + digest, {b.cid, b.index_cid});
    }
    res.status = 201;
    res.set_header("Location", "/v2/" + name + "/blobs/" + digest);
    res.set_header("Docker-Content-Digest", digest);
  }

  void StartUpload(const Request& req, Response& res, const ContentReader* reader,
                   const std::string& name) {
    std::string mount = Param(req, "mount");
    if (!mount.empty() && ValidSha256Digest(mount)) {
      std::string from = Param(req, "from");
      auto blob = catalog->GetBlob(mount);
      if (!blob.ok()) return InternalError(res, blob.error());
      bool can = false;
      if (*blob) {
        if (from.empty()) {
          can = true;
        } else if (ValidRepoName(from)) {
          auto in_from = catalog->RepoHasBlob(from, mount);
          if (!in_from.ok()) return InternalError(res, in_from.error());
          can = *in_from;
        }
      }
      if (can) {
        Drain(reader);
        if (Status s = catalog->LinkBlob(name, mount); !s.ok()) {
          return InternalError(res, s.error());
        }
        res.status = 201;
        res.set_header("Location", "/v2/" + name + "/blobs/" + mount);
        res.set_header("Docker-Content-Digest", mount);
        return;
      }
    }
    std::string digest = Param(req, "digest");
    if (req.has_param("digest") && !ValidSha256Digest(digest)) {
      Drain(reader);
      return SendError(res, 400, "DIGEST_INVALID", "invalid or unsupported digest", digest);
    }
    auto up_r = NewUpload(name);
    if (!up_r.ok()) {
      Drain(reader);
      return InternalError(res, up_r.error());
    }
    auto up = *up_r;
    std::lock_guard lock(up->mu);
    if (!digest.empty()) {  // monolithic upload
      if (AppendBody(req, res, reader, *up)) FinishUpload(res, *up, name, digest);
      ForgetUpload(up);
      return;
    }
    Drain(reader);
    {
      std::lock_guard l2(uploads_mu);
      uploads[up->uuid] = up;
    }
    UploadAccepted(res, name, *up);
  }

  void UploadStatus(Response& res, const std::string& name, const std::string& uuid) {
    auto up = FindUpload(name, uuid);
    if (!up) return SendError(res, 404, "BLOB_UPLOAD_UNKNOWN", "upload unknown", uuid);
    std::lock_guard lock(up->mu);
    UploadAccepted(res, name, *up);
    res.status = 204;
  }

  // Checks Content-Range "<start>-<end>" against the upload's size; writes 416 if it does not
  // continue the upload.
  bool CheckContentRange(const Request& req, Response& res, const std::string& name,
                         const Upload& up) {
    if (!req.has_header("Content-Range")) return true;
    std::string cr = req.get_header_value("Content-Range");
    if (cr.starts_with("bytes ")) cr = cr.substr(6);
    size_t dash = cr.find('-');
    uint64_t start = 0;
    bool ok = dash != std::string::npos && dash > 0;
    if (ok) {
      try {
        start = std::stoull(cr.substr(0, dash));
      } catch (...) {
        ok = false;
      }
    }
    if (!ok || start != up.size) {
      SetUploadHeaders(res, name, up);
      SendError(res, 416, "BLOB_UPLOAD_INVALID", "Content-Range does not continue the upload", cr);
      return false;
    }
    return true;
  }

  // An upload session locked for one request; the lock is released before the session is.
  struct LockedUpload {
    std::shared_ptr<Upload> up;  // null: the error response was written
    std::unique_lock<std::mutex> lock;
  };

  // Finds and locks the unfinished upload `uuid` of `name`; otherwise drains the body and writes
  // 404.
  LockedUpload LockOpenUpload(Response& res, const ContentReader* reader, const std::string& name,
                              const std::string& uuid) {
    LockedUpload l{FindUpload(name, uuid), {}};
    if (!l.up) {
      Drain(reader);
      SendError(res, 404, "BLOB_UPLOAD_UNKNOWN", "upload unknown", uuid);
      return l;
    }
    l.lock = std::unique_lock(l.up->mu);
    if (l.up->finished) {
      Drain(reader);
      SendError(res, 404, "BLOB_UPLOAD_UNKNOWN", "upload already finished", uuid);
      l.lock.unlock();
      l.up.reset();
    }
    return l;
  }

  // Appends the request body to the locked upload if its Content-Range (if any) continues it.
  // Otherwise writes the error response (a 413 also drops the upload) and returns false.
  bool AppendChunk(const Request& req, Response& res, const ContentReader* reader,
                   const std::string& name, const std::shared_ptr<Upload>& up) {
    if (!CheckContentRange(req, res, name, *up)) {
      Drain(reader);
      return false;
    }
    if (!AppendBody(req, res, reader, *up)) {
      if (res.status == 413) ForgetUpload(up);
      return false;
    }
    return true;
  }

  void PatchUpload(const Request& req, Response& res, const ContentReader* reader,
                   const std::string& name, const std::string& uuid) {
    LockedUpload l = LockOpenUpload(res, reader, name, uuid);
    if (!l.up || !AppendChunk(req, res, reader, name, l.up)) return;
    UploadAccepted(res, name, *l.up);
  }

  void PutUpload(const Request& req, Response& res, const ContentReader* reader,
                 const std::string& name, const std::string& uuid) {
    LockedUpload l = LockOpenUpload(res, reader, name, uuid);
    if (!l.up) return;
    std::string digest = Param(req, "digest");
    if (!ValidSha256Digest(digest)) {
      Drain(reader);
      return SendError(res, 400, "DIGEST_INVALID", "missing, invalid or unsupported digest",
                       digest);
    }
    if (!AppendChunk(req, res, reader, name, l.up)) return;
    FinishUpload(res, *l.up, name, digest);
    ForgetUpload(l.up);
  }

  void CancelUpload(Response& res, const ContentReader* reader, const std::string& name,
                    const std::string& uuid) {
    Drain(reader);
    auto up = FindUpload(name, uuid);
    if (!up) return SendError(res, 404, "BLOB_UPLOAD_UNKNOWN", "upload unknown", uuid);
    std::lock_guard lock(up->mu);
    up->finished = true;
    ForgetUpload(up);
    res.status = 204;
  }

  // ---- resolver ------------------------------------------------------------------------------

  void HandleResolver(const Request& req, Response& res) {
    const std::string prefix = "/ipfly/v1/layers/";
    if (!req.path.starts_with(prefix)) {
      res.status = 404;
      res.set_content(json{{"error", "unknown endpoint"}}.dump(), "application/json");
      return;
    }
    std::string digest = req.path.substr(prefix.size());
    if (!ValidSha256Digest(digest)) {
      res.status = 400;
      res.set_content(json{{"error", "invalid digest"}, {"digest", digest}}.dump(),
                      "application/json");
      return;
    }
    auto blob = catalog->GetBlob(digest);
    if (!blob.ok()) {
      res.status = 500;
      res.set_content(json{{"error", blob.error().message()}}.dump(), "application/json");
      return;
    }
    if (!*blob) {
      res.status = 404;
      res.set_content(json{{"error", "layer unknown"}, {"digest", digest}}.dump(),
                      "application/json");
      return;
    }
    json j = {{"digest", digest},
              {"cid", (*blob)->cid},
              {"size", (*blob)->size},
              {"mediaType", (*blob)->media_type}};
    j["index_cid"] = (*blob)->index_cid;
    res.set_content(j.dump(), "application/json");
  }

  // ---- trustless gateway ---------------------------------------------------------------------

  enum class Scope { kAll, kEntity, kBlock };

  // Depth-first CAR body of the DAG at `cid` (see HandleGateway for the scopes).
  Status WalkCar(const mf::Cid& cid, Scope scope, uint64_t node_start, uint64_t from, uint64_t to,
                 int depth, std::unordered_set<mf::Cid>* seen,
                 const std::function<Status(ByteView)>& write) {
    if (depth > 64) return Corrupt("DAG deeper than 64 levels");
    if (seen) {
      if (seen->count(cid)) return OkStatus();
      seen->insert(cid);
    }
    Block block = IPFLY_TRY(fetcher->GetLocal(cid));
    IPFLY_RETURN_IF_ERROR(write(codec::EncodeCarSection(cid, block.data())));
    gateway_blocks.fetch_add(1);
    if (scope == Scope::kBlock || cid.codec() != 0x70) return OkStatus();
    auto node = IPFLY_TRY(codec::DecodeDagPb(block.data()));
    std::optional<codec::UnixfsData> ufs;
    if (node.data) {
      auto u = codec::DecodeUnixfs(*node.data);
      if (u.ok()) ufs = std::move(*u);
    }
    bool is_file =
        ufs && (ufs->type == codec::UnixfsType::kFile || ufs->type == codec::UnixfsType::kRaw);
    if (scope == Scope::kEntity && is_file) {
      if (ufs->blocksizes.size() != node.links.size()) {
        return Corrupt("file node " + cid.ToString() + ": links and blocksizes differ");
      }
      uint64_t off = node_start + (ufs->data ? ufs->data->size() : 0);
      for (size_t i = 0; i < node.links.size(); ++i) {
        uint64_t bs = ufs->blocksizes[i];
        uint64_t end = off + bs;  // exclusive
        bool overlap = bs == 0 ? (off >= from && off <= to) : (off <= to && end > from);
        if (overlap) {
          IPFLY_RETURN_IF_ERROR(
              WalkCar(node.links[i].hash, scope, off, from, to, depth + 1, seen, write));
        }
        off = end;
      }
      return OkStatus();
    }
    if (scope == Scope::kEntity && ufs) return OkStatus();  // directory/symlink: the node only
    for (const auto& l : node.links) {
      IPFLY_RETURN_IF_ERROR(WalkCar(l.hash, Scope::kAll, 0, 0, 0, depth + 1, seen, write));
    }
    return OkStatus();
  }

  static void GwError(Response& res, int status, const std::string& msg) {
    res.status = status;
    res.set_content(msg + "\n", "text/plain");
  }

  void HandleGateway(const Request& req, Response& res) {
    std::string rest = req.path.substr(6);  // after "/ipfs/"
    if (rest.find('/') != std::string::npos) {
      return GwError(res, 400, "paths below a CID are not supported; ask for the CID itself");
    }
    auto cid = mf::Cid::Parse(rest);
    if (!cid.ok()) return GwError(res, 400, "invalid CID: " + cid.error().message());
    std::string format = Param(req, "format");
    std::string accept = req.get_header_value("Accept");
    if (format.empty()) {
      if (accept.find(kRawType) != std::string::npos) {
        format = "raw";
      } else if (accept.find(kCarType) != std::string::npos) {
        format = "car";
      }
    }
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Cache-Control", "public, max-age=29030400, immutable");
    if (format == "raw") {
      auto block = fetcher->GetLocal(*cid);
      if (!block.ok()) {
        int status = block.error().code() == Errc::kNotFound ? 404 : 500;
        return GwError(res, status, block.error().message());
      }
      gateway_blocks.fetch_add(1);
      res.set_header("ETag", "\"" + rest + ".raw\"");
      res.set_content(std::string(AsString(block->data())), kRawType);
      return;
    }
    if (format != "car") {
      return GwError(res, 406, "this gateway serves only ?format=raw and ?format=car");
    }
    std::string scope_s = Param(req, "dag-scope");
    Scope scope = Scope::kAll;
    if (scope_s == "entity") {
      scope = Scope::kEntity;
    } else if (scope_s == "block") {
      scope = Scope::kBlock;
    } else if (!scope_s.empty() && scope_s != "all") {
      return GwError(res, 400, "invalid dag-scope " + scope_s);
    }
    uint64_t from = 0, to = UINT64_MAX;
    std::string eb = Param(req, "entity-bytes");
    if (!eb.empty()) {
      if (scope != Scope::kEntity) return GwError(res, 400, "entity-bytes needs dag-scope=entity");
      size_t colon = eb.find(':');
      std::string a = eb.substr(0, colon);
      std::string b = colon == std::string::npos ? "" : eb.substr(colon + 1);
      auto num = [](const std::string& s, uint64_t* v) {
        if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
          return false;
        *v = std::stoull(s);
        return true;
      };
      if (colon == std::string::npos || !num(a, &from) || (b != "*" && !num(b, &to)) || to < from) {
        return GwError(res, 400, "unsupported entity-bytes " + eb + " (use from:to or from:*)");
      }
    }
    bool dups = accept.find("dups=n") == std::string::npos;
    if (!fetcher->HasLocal(*cid)) return GwError(res, 404, "block " + rest + " not found");
    res.set_header("ETag", "\"" + rest + ".car\"");
    const mf::Cid root = *cid;
    res.set_chunked_content_provider(
        std::string(kCarType) + "; version=1; order=dfs; dups=" + (dups ? "y" : "n"),
        [this, root, scope, from, to, dups](size_t, httplib::DataSink& sink) {
          auto write = [&](ByteView b) -> Status {
            if (!sink.write(reinterpret_cast<const char*>(b.data()), b.size())) {
              return Error(Errc::kCancelled, "client went away");
            }
            return OkStatus();
          };
          std::unordered_set<mf::Cid> seen;
          Status st = write(codec::EncodeCarV1Header({root}));
          if (st.ok()) st = WalkCar(root, scope, 0, from, to, 0, dups ? nullptr : &seen, write);
          if (!st.ok()) {
            IPFLY_LOG_WARN("gateway CAR {}: {}", root.ToString(), st.error().ToString());
            return false;  // truncates the response: the client sees the CAR end early
          }
          sink.done();
          return true;
        });
  }

  // ---- search (Docker's /v1/search, as `docker search HOST/TERM` uses it) --------------------

  // The description of a repository: the org.opencontainers.image.description (or
  // "description") label of the image config of its "latest" tag, else of its first tag.
  std::string Description(const std::string& repo) {
    auto tags = catalog->ListTags(repo, "", 0);
    if (!tags.ok() || tags->empty()) return "";
    std::string tag = std::find(tags->begin(), tags->end(), "latest") != tags->end()
                          ? std::string("latest")
                          : tags->front();
    auto d = catalog->ResolveTag(repo, tag);
    if (!d.ok() || !*d) return "";
    auto m = catalog->GetManifest(repo, **d);
    if (!m.ok() || !*m) return "";
    json doc = json::parse((*m)->content, nullptr, false);
    if (doc.is_discarded() || !doc.contains("config")) return "";
    auto blob = catalog->GetBlob(doc["config"].value("digest", ""));
    if (!blob.ok() || !*blob || (*blob)->size > (1 << 20)) return "";
    auto cid = mf::Cid::Parse((*blob)->cid);
    if (!cid.ok()) return "";
    Bytes buf((*blob)->size);
    auto n = ufs_reader->ReadAt(*cid, 0, buf, fetch::DeadlineIn(std::chrono::seconds(5)));
    if (!n.ok()) return "";
    json cfg = json::parse(AsString(ByteView(buf.data(), *n)), nullptr, false);
    if (cfg.is_discarded() || !cfg.contains("config") || !cfg["config"].is_object()) return "";
    const json& labels = cfg["config"].value("Labels", json::object());
    if (!labels.is_object()) return "";
    for (const char* key : {"org.opencontainers.image.description", "description"}) {
      if (labels.contains(key) && labels[key].is_string()) return labels[key].get<std::string>();
    }
    return "";
  }

  void Search(const Request& req, Response& res) {
    std::string q = Param(req, "q");
    size_t n = 25;
    std::string ns = Param(req, "n");
    if (!ns.empty() && ns.size() < 6 && ns.find_first_not_of("0123456789") == std::string::npos) {
      n = std::max<size_t>(1, std::stoul(ns));
    }
    auto repos = catalog->SearchRepositories(q, n);
    if (!repos.ok()) return InternalError(res, repos.error());
    json results = json::array();
    for (const auto& r : *repos) {
      results.push_back({{"name", r},
                         {"description", Description(r)},
                         {"star_count", 0},
                         {"is_official", false},
                         {"is_automated", false}});
    }
    res.set_content(
        json{{"num_results", results.size()}, {"query", q}, {"results", results}}.dump(),
        "application/json");
  }

  // ---- metrics -------------------------------------------------------------------------------

  void CountRequest(const Request& req, const Response& res) {
    std::lock_guard lock(metrics_mu);
    ++requests[{req.method, res.status}];
  }

  std::string MetricsText() {
    std::string out;
    out += "# TYPE ipfly_registry_requests_total counter\n";
    {
      std::lock_guard lock(metrics_mu);
      for (const auto& [k, v] : requests) {
        out += "ipfly_registry_requests_total{method=\"" + k.first + "\",code=\"" +
               std::to_string(k.second) + "\"} " + std::to_string(v) + "\n";
      }
    }
    auto counter = [&](const char* name, uint64_t v) {
      out += std::string("# TYPE ") + name + " counter\n" + name + " " + std::to_string(v) + "\n";
    };
    counter("ipfly_registry_blob_bytes_sent_total", blob_bytes_out.load());
    counter("ipfly_registry_blob_bytes_received_total", blob_bytes_in.load());
    counter("ipfly_registry_blobs_ingested_total", blobs_ingested.load());
    counter("ipfly_registry_manifests_pushed_total", manifests_pushed.load());
    counter("ipfly_registry_digest_mismatches_total", digest_mismatches.load());
    counter("ipfly_registry_gateway_blocks_total", gateway_blocks.load());
    counter("ipfly_registry_upstream_hits_total", upstream_hits.load());
    counter("ipfly_registry_upstream_misses_total", upstream_misses.load());
    counter("ipfly_registry_upstream_errors_total", upstream_errors.load());
    counter("ipfly_registry_upstream_bytes_total", upstream_bytes.load());
    counter("ipfly_registry_tls_hellos_total", http ? http->tls_hellos() : 0);
    out += fetcher->MetricsText();
    if (publisher) out += publisher->MetricsText();
    return out;
  }

  void Route(const Request& req, Response& res, const ContentReader* reader) {
    if (req.path.starts_with("/v2")) return HandleV2(req, res, reader);
    Drain(reader);
    if (req.method == "GET" || req.method == "HEAD") {
      if (req.path.starts_with("/ipfs/")) return HandleGateway(req, res);
      if (req.path.starts_with("/ipfly/v1/")) return HandleResolver(req, res);
      if (req.path == "/v1/search") return Search(req, res);
      if (req.path == "/metrics") {
        return res.set_content(MetricsText(), "text/plain; version=0.0.4");
      }
    }
    res.status = 404;
    res.set_content("not found\n", "text/plain");
  }
};

RegistryServer::RegistryServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RegistryServer::~RegistryServer() { Stop(); }

Result<std::unique_ptr<RegistryServer>> RegistryServer::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const Config& config = impl->options.config;
  impl->root_dir = config.registry.root;
  if (impl->root_dir.empty()) return InvalidArgument("registry root is not set");
  impl->uploads_dir = impl->root_dir + "/uploads";
  std::error_code ec;
  fs::create_directories(impl->root_dir, ec);
  if (ec) return IoError("create " + impl->root_dir + ": " + ec.message());
  // Upload sessions do not survive a restart: their spools are dropped, so nothing partial
  // can ever become visible.
  fs::remove_all(impl->uploads_dir, ec);
  fs::create_directories(impl->uploads_dir, ec);
  if (ec) return IoError("create " + impl->uploads_dir + ": " + ec.message());
  impl->profile = IPFLY_TRY(unixfs::ImportProfile::ByName(config.profile));
  impl->catalog = IPFLY_TRY(Catalog::Open(impl->root_dir + "/catalog.db"));
  impl->fetcher = IPFLY_TRY(fetch::MakeFetcher(config));
  impl->store = impl->fetcher->store();
  if (!impl->store) return InvalidArgument("the registry needs an embedded block store");
  if (!config.registry.htpasswd.empty()) {
    std::ifstream in(config.registry.htpasswd);
    if (!in) return IoError("cannot read htpasswd file " + config.registry.htpasswd);
    std::string line;
    while (std::getline(in, line)) {
      size_t colon = line.find(':');
      if (line.empty() || line[0] == '#' || colon == std::string::npos) continue;
      std::string hash = line.substr(colon + 1);
      while (!hash.empty() && (hash.back() == '\r' || hash.back() == ' ')) hash.pop_back();
      if (!hash.starts_with("$2")) {
        return InvalidArgument("htpasswd " + config.registry.htpasswd + ": user " +
                               line.substr(0, colon) + " has no bcrypt hash (use htpasswd -B)");
      }
      impl->htpasswd_users[line.substr(0, colon)] = hash;
    }
  }
  if (!config.registry.upstream.empty()) {
    impl->upstream = std::make_unique<UpstreamClient>(config.registry.upstream,
                                                      config.registry.upstream_username,
                                                      config.registry.upstream_password);
  }
  if (!config.registry.publish_kubo.empty()) {
    PublisherOptions po;
    po.kubo_url = config.registry.publish_kubo;
    po.spool_dir = impl->root_dir + "/publish";
    impl->publisher = IPFLY_TRY(KuboPublisher::Create(std::move(po), impl->fetcher.get()));
  }
  impl->ufs_reader = std::make_unique<fetch::UnixfsReader>(
      impl->fetcher.get(), fetch::UnixfsReaderOptions::FromConfig(config.fetch));

  HttpServer::Timeouts t;
  impl->http = std::make_unique<HttpServer>(t);
  size_t threads = impl->options.threads ? impl->options.threads : 128;
  impl->http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  Impl* p = impl.get();
  auto plain = [p](const Request& req, Response& res) { p->Route(req, res, nullptr); };
  auto with_reader = [p](const Request& req, Response& res, const ContentReader& reader) {
    p->Route(req, res, &reader);
  };
  impl->http->Get(".*", plain);
  impl->http->Options(".*", plain);
  impl->http->Delete(".*", with_reader);
  impl->http->Post(".*", with_reader);
  impl->http->Put(".*", with_reader);
  impl->http->Patch(".*", with_reader);
  impl->http->set_logger([p](const Request& req, const Response& res) {
    p->CountRequest(req, res);
    IPFLY_LOG_INFO("access {} {} {} {} {}", req.remote_addr, req.method, req.target, res.status,
                   res.get_header_value("Content-Length"));
  });
  return std::unique_ptr<RegistryServer>(new RegistryServer(std::move(impl)));
}

Result<int> RegistryServer::Bind(const std::string& host, int port) {
  if (port == 0) {
    int p = impl_->http->bind_to_any_port(host);
    if (p <= 0) return Unavailable("cannot bind " + host + ":0");
    impl_->http->RaiseBacklog(1024);
    return p;
  }
  if (!impl_->http->bind_to_port(host, port)) {
    return Unavailable("cannot bind " + host + ":" + std::to_string(port));
  }
  impl_->http->RaiseBacklog(1024);
  return port;
}

Status RegistryServer::Serve() {
  bool ok = impl_->http->listen_after_bind();
  // In-flight requests are done: publish what they queued before returning.
  if (impl_->publisher) impl_->publisher->Shutdown();
  if (!ok) return Unavailable("listener failed");
  return OkStatus();
}

void RegistryServer::Stop() {
  if (impl_ && impl_->http) impl_->http->stop();
}

}  // namespace ipfly::registry
