#include "cli/image_commands.h"

#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/base/digest.h"
#include "core/base/sha256.h"
#include "core/codec/car.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/kubo_rpc.h"
#include "layer/tar.h"

namespace ipfly::cli {
namespace {

using json = nlohmann::json;

constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
constexpr char kDockerManifest[] = "application/vnd.docker.distribution.manifest.v2+json";
constexpr char kDockerList[] = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr size_t kMaxManifest = 4 << 20;

bool IsIndex(const std::string& mt) { return mt == kOciIndex || mt == kDockerList; }
bool IsForeign(const std::string& mt) { return mt.find("foreign") != std::string::npos; }

std::string Sha256Digest(std::string_view data) {
  return Digest::FromSha256(Sha256Of(AsBytes(data))).ToString();
}

// "REPO:TAG" or "REPO@sha256:..." → (repo, reference).
Result<std::pair<std::string, std::string>> SplitRef(const std::string& ref) {
  size_t at = ref.find('@');
  if (at != std::string::npos) return std::make_pair(ref.substr(0, at), ref.substr(at + 1));
  size_t colon = ref.rfind(':');
  size_t slash = ref.rfind('/');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    return std::make_pair(ref, std::string("latest"));
  }
  if (colon == 0 || colon + 1 == ref.size()) return InvalidArgument("bad reference " + ref);
  return std::make_pair(ref.substr(0, colon), ref.substr(colon + 1));
}

// The registry URL: --registry, else http://<[registry] listen> from the config.
Result<std::string> RegistryUrl(const GlobalOptions& g, const std::string& flag) {
  std::string url = flag;
  if (url.empty()) {
    auto env = IPFLY_TRY(Env::Make(g));
    url = env->config().registry.listen;
  }
  if (url.find("://") == std::string::npos) url = "http://" + url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// What `image export` and `image import` start from, checked in this order: the environment,
// the registry URL (RegistryUrl) and the image reference (SplitRef).
struct ImageTarget {
  std::unique_ptr<Env> env;
  std::string url;
  std::string repo;
  std::string reference;  // tag or digest
};

Result<ImageTarget> OpenImageTarget(const GlobalOptions& g, const std::string& registry_flag,
                                    const std::string& ref) {
  ImageTarget t;
  t.env = IPFLY_TRY(Env::Make(g));
  t.url = IPFLY_TRY(RegistryUrl(g, registry_flag));
  std::tie(t.repo, t.reference) = IPFLY_TRY(SplitRef(ref));
  return t;
}

// The blobs of an image manifest: its config (if any), then its layers.
std::vector<json> BlobDescriptors(const json& manifest) {
  std::vector<json> descs;
  if (manifest.contains("config")) descs.push_back(manifest["config"]);
  for (const auto& l : manifest.value("layers", json::array())) descs.push_back(l);
  return descs;
}

// A CID from a descriptor: the first ipfs:// URL, else the ipfly.cid annotation.
Result<Cid> DescriptorCid(const json& d) {
  if (d.contains("urls") && d["urls"].is_array()) {
    for (const auto& u : d["urls"]) {
      if (u.is_string() && u.get<std::string>().starts_with("ipfs://")) {
        return ParseCidArg(u.get<std::string>().substr(7));
      }
    }
  }
  if (d.contains("annotations") && d["annotations"].is_object()) {
    const json& a = d["annotations"];
    if (a.contains("containerd.io/snapshot/ipfly.cid") &&
        a["containerd.io/snapshot/ipfly.cid"].is_string()) {
      return ParseCidArg(a["containerd.io/snapshot/ipfly.cid"].get<std::string>());
    }
  }
  return NotFound("descriptor " + d.value("digest", std::string("?")) +
                  " has no ipfs:// URL (not an IPFS-format image?)");
}

// ---- registry client (plain HTTP v2 API) ---------------------------------------------------

struct FetchedManifest {
  std::string bytes;
  std::string media_type;
  std::string digest;
};

class Registry {
 public:
  explicit Registry(std::string url) : url_(std::move(url)), http_(url_) {
    http_.set_connection_timeout(10);
    http_.set_read_timeout(600);
    http_.set_write_timeout(600);
    if (const char* t = std::getenv("IPFLY_REGISTRY_TOKEN"); t && *t) {
      headers_.emplace("Authorization", std::string("Bearer ") + t);
    }
  }
  const std::string& url() const { return url_; }
  std::string host() const {
    size_t p = url_.find("://");
    return p == std::string::npos ? url_ : url_.substr(p + 3);
  }

  Result<bool> HasBlob(const std::string& repo, const std::string& digest) {
    auto r = http_.Head("/v2/" + repo + "/blobs/" + digest, headers_);
    if (!r) return Transport("HEAD blob", r.error());
    if (r->status == 200) return true;
    if (r->status == 404) return false;
    return HttpError("HEAD blob " + digest, *r);
  }

  // Monolithic upload of `size` bytes produced by `read(offset, buf, len)`.
  Status UploadBlob(const std::string& repo, const std::string& digest, uint64_t size,
                    const std::function<Status(uint64_t, char*, size_t)>& read) {
    auto start =
        http_.Post("/v2/" + repo + "/blobs/uploads/", headers_, "", "application/octet-stream");
    if (!start) return Transport("start upload", start.error());
    if (start->status != 202) return HttpError("start upload of " + digest, *start);
    std::string loc = start->get_header_value("Location");
    if (size_t p = loc.find("://"); p != std::string::npos) {
      size_t slash = loc.find('/', p + 3);
      loc = slash == std::string::npos ? "/" : loc.substr(slash);
    }
    loc += (loc.find('?') == std::string::npos ? "?digest=" : "&digest=") + digest;
    Status read_status = OkStatus();
    std::vector<char> buf(1 << 20);
    auto put = http_.Put(
        loc, headers_, static_cast<size_t>(size),
        [&](size_t offset, size_t length, httplib::DataSink& sink) {
          size_t n = std::min(length, buf.size());
          read_status = read(offset, buf.data(), n);
          if (!read_status.ok()) return false;
          return sink.write(buf.data(), n);
        },
        "application/octet-stream");
    if (!read_status.ok()) return read_status;
    if (!put) return Transport("upload " + digest, put.error());
    if (put->status != 201) return HttpError("upload " + digest, *put);
    return OkStatus();
  }

  Result<std::string> PutManifest(const std::string& repo, const std::string& ref,
                                  const std::string& media_type, const std::string& bytes) {
    auto r = http_.Put("/v2/" + repo + "/manifests/" + ref, headers_, bytes, media_type.c_str());
    if (!r) return Transport("PUT manifest", r.error());
    if (r->status != 201) return HttpError("PUT manifest " + repo + ":" + ref, *r);
    return r->get_header_value("Docker-Content-Digest");
  }

  Result<FetchedManifest> GetManifest(const std::string& repo, const std::string& ref) {
    httplib::Headers h = headers_;
    h.emplace("Accept", std::string(kOciManifest) + ", " + kOciIndex + ", " + kDockerManifest +
                            ", " + kDockerList);
    auto r = http_.Get("/v2/" + repo + "/manifests/" + ref, h);
    if (!r) return Transport("GET manifest", r.error());
    if (r->status != 200) return HttpError("GET manifest " + repo + ":" + ref, *r);
    FetchedManifest m;
    m.bytes = r->body;
    m.media_type = r->get_header_value("Content-Type");
    if (size_t semi = m.media_type.find(';'); semi != std::string::npos) {
      m.media_type.resize(semi);
    }
    auto doc = json::parse(m.bytes, nullptr, false);
    if (doc.is_object() && doc.contains("mediaType") && doc["mediaType"].is_string()) {
      m.media_type = doc["mediaType"].get<std::string>();
    }
    m.digest = Sha256Digest(m.bytes);
    std::string header = r->get_header_value("Docker-Content-Digest");
    if (!header.empty() && header != m.digest) {
      return Corrupt("manifest " + repo + ":" + ref + " hashes to " + m.digest +
                     ", the registry says " + header);
    }
    if (ref.starts_with("sha256:") && ref != m.digest) {
      return Corrupt("manifest " + ref + " hashes to " + m.digest);
    }
    return m;
  }

  // The resolver entry {cid, index_cid, size, mediaType}; null when unknown or not an ipfly
  // registry.
  json Resolve(const std::string& digest) {
    auto r = http_.Get("/ipfly/v1/layers/" + digest, headers_);
    if (!r || r->status != 200) return nullptr;
    auto j = json::parse(r->body, nullptr, false);
    return j.is_discarded() ? json(nullptr) : j;
  }

  Result<json> Search(const std::string& term, int limit) {
    auto r = http_.Get(
        "/v1/search?q=" + httplib::detail::encode_query_param(term) + "&n=" + std::to_string(limit),
        headers_);
    if (!r) return Transport("search", r.error());
    if (r->status != 200) return HttpError("search", *r);
    auto j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.contains("results") || !j["results"].is_array()) {
      return Corrupt(url_ + "/v1/search: unexpected answer");
    }
    return j;
  }

 private:
  Error Transport(const std::string& what, httplib::Error e) const {
    return Unavailable(what + ": cannot reach " + url_ + ": " + httplib::to_string(e));
  }
  Error HttpError(const std::string& what, const httplib::Response& r) const {
    std::string detail = r.body.substr(0, 400);
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == '\r')) detail.pop_back();
    std::string msg = what + ": HTTP " + std::to_string(r.status) + " " + detail;
    if (r.status == 401 || r.status == 403) return Error(Errc::kPermissionDenied, msg);
    if (r.status == 404) return NotFound(msg);
    if (r.status == 400) return InvalidArgument(msg);
    return Unavailable(msg);
  }

  std::string url_;
  httplib::Client http_;
  httplib::Headers headers_;
};

// ---- OCI image layout (directory or tar archive) -------------------------------------------

class OciLayout {
 public:
  static Result<std::unique_ptr<OciLayout>> Open(const std::string& path) {
    auto l = std::unique_ptr<OciLayout>(new OciLayout);
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      l->dir_ = path;
    } else {
      l->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (l->fd_ < 0) return ErrnoError("open " + path, errno);
      // Index the archive's members (content offsets); blobs are then read in place.
      layer::TarParser parser([&](layer::TarEntry&& e) -> Status {
        if (e.type == layer::EntryType::kFile) l->members_[e.path] = {e.data_offset, e.size};
        return OkStatus();
      });
      std::vector<char> buf(1 << 20);
      for (;;) {
        ssize_t n = ::read(l->fd_, buf.data(), buf.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          return ErrnoError("read " + path, errno);
        }
        if (n == 0) break;
        IPFLY_RETURN_IF_ERROR(parser.Feed(
            ByteView(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(n))));
        if (parser.at_end()) break;
      }
      if (!parser.at_end()) IPFLY_RETURN_IF_ERROR(parser.Finish());
    }
    auto index = IPFLY_TRY(l->ReadSmall("index.json"));
    l->index_ = json::parse(index, nullptr, false);
    if (l->index_.is_discarded() || !l->index_.contains("manifests") ||
        !l->index_["manifests"].is_array()) {
      return InvalidArgument(path + ": index.json is not an OCI image index (not an OCI layout?)");
    }
    return l;
  }
  ~OciLayout() {
    if (fd_ >= 0) ::close(fd_);
  }

  const json& index() const { return index_; }

  Result<uint64_t> BlobSize(const std::string& digest) {
    std::string rel = BlobPath(digest);
    if (fd_ < 0) {
      std::error_code ec;
      uint64_t n = fs::file_size(dir_ + "/" + rel, ec);
      if (ec) return NotFound("blob " + digest + " is not in the layout");
      return n;
    }
    auto it = members_.find(rel);
    if (it == members_.end()) return NotFound("blob " + digest + " is not in the archive");
    return it->second.second;
  }

  // Reads len bytes at off of the blob.
  Status ReadBlob(const std::string& digest, uint64_t off, char* out, size_t len) {
    std::string rel = BlobPath(digest);
    int fd = fd_;
    uint64_t base = 0;
    if (fd_ < 0) {
      fd = ::open((dir_ + "/" + rel).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return ErrnoError("open " + rel, errno);
    } else {
      auto it = members_.find(rel);
      if (it == members_.end()) return NotFound("blob " + digest + " is not in the archive");
      base = it->second.first;
    }
    Status st = OkStatus();
    size_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd, out + done, len - done, static_cast<off_t>(base + off + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        st = n < 0 ? ErrnoError("read " + rel, errno) : Corrupt(rel + ": truncated");
        break;
      }
      done += static_cast<size_t>(n);
    }
    if (fd != fd_) ::close(fd);
    return st;
  }

  Result<std::string> ReadSmallBlob(const std::string& digest) {
    uint64_t size = IPFLY_TRY(BlobSize(digest));
    if (size > kMaxManifest) return TooLarge("blob " + digest + " is too large for a manifest");
    std::string s(size, '\0');
    IPFLY_RETURN_IF_ERROR(ReadBlob(digest, 0, s.data(), s.size()));
    if (Sha256Digest(s) != digest) return Corrupt("blob " + digest + " does not match its digest");
    return s;
  }

 private:
  OciLayout() = default;
  static std::string BlobPath(const std::string& digest) {
    size_t colon = digest.find(':');
    return "blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
  }
  Result<std::string> ReadSmall(const std::string& rel) {
    if (fd_ < 0) {
      std::ifstream in(dir_ + "/" + rel, std::ios::binary);
      if (!in) return NotFound(dir_ + "/" + rel + " is missing (not an OCI layout?)");
      return std::string(std::istreambuf_iterator<char>(in), {});
    }
    auto it = members_.find(rel);
    if (it == members_.end()) return NotFound(rel + " is missing from the archive");
    if (it->second.second > kMaxManifest) return TooLarge(rel + " is too large");
    std::string s(it->second.second, '\0');
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::pread(fd_, s.data() + done, s.size() - done,
                          static_cast<off_t>(it->second.first + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Corrupt(rel + ": truncated");
      done += static_cast<size_t>(n);
    }
    return s;
  }

  std::string dir_;
  int fd_ = -1;
  std::map<std::string, std::pair<uint64_t, uint64_t>> members_;  // path → (offset, size)
  json index_;
};

struct PushedBlob {
  std::string digest;
  bool uploaded;
};

Status PushLayoutManifest(OciLayout& layout, Registry& reg, const std::string& repo,
                          const json& desc, const std::string& ref, int depth,
                          std::vector<PushedBlob>* blobs, std::string* digest_out) {
  if (depth > 4) return InvalidArgument("image index nesting deeper than 4");
  std::string digest = desc.value("digest", "");
  std::string bytes = IPFLY_TRY(layout.ReadSmallBlob(digest));
  auto doc = json::parse(bytes, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return Corrupt("manifest " + digest + " is not JSON");
  std::string mt = desc.value("mediaType", doc.value("mediaType", std::string(kOciManifest)));
  if (IsIndex(mt)) {
    for (const auto& child : doc.value("manifests", json::array())) {
      if (!child.is_object()) continue;
      std::string cd = child.value("digest", "");
      if (!layout.BlobSize(cd).ok()) continue;  // a platform the layout does not carry
      IPFLY_RETURN_IF_ERROR(
          PushLayoutManifest(layout, reg, repo, child, cd, depth + 1, blobs, nullptr));
    }
  } else {
    for (const auto& d : BlobDescriptors(doc)) {
      std::string bd = d.value("digest", "");
      if (IsForeign(d.value("mediaType", "")) && !layout.BlobSize(bd).ok()) continue;
      bool have = IPFLY_TRY(reg.HasBlob(repo, bd));
      if (!have) {
        uint64_t size = IPFLY_TRY(layout.BlobSize(bd));
        IPFLY_RETURN_IF_ERROR(
            reg.UploadBlob(repo, bd, size, [&](uint64_t off, char* buf, size_t len) {
              return layout.ReadBlob(bd, off, buf, len);
            }));
      }
      blobs->push_back({bd, !have});
    }
  }
  std::string got = IPFLY_TRY(reg.PutManifest(repo, ref, mt, bytes));
  if (!got.empty() && got != digest) {
    return Corrupt("the registry stored manifest " + digest + " as " + got);
  }
  if (digest_out) *digest_out = digest;
  return OkStatus();
}

// Collects blocks in memory (small DAGs: descriptors and manifests) for a CAR.
class CollectSink : public BlockSink {
 public:
  Status Put(const Block& b) override {
    blocks.push_back(b);
    return OkStatus();
  }
  std::vector<Block> blocks;
};

class TeeSink2 : public BlockSink {
 public:
  TeeSink2(BlockSink* a, BlockSink* b) : a_(a), b_(b) {}
  Status Put(const Block& blk) override {
    IPFLY_RETURN_IF_ERROR(a_->Put(blk));
    return b_->Put(blk);
  }

 private:
  BlockSink* a_;
  BlockSink* b_;
};

Result<std::string> ReadIpfsSmall(fetch::UnixfsReader& reader, const Cid& cid, size_t limit,
                                  Deadline dl) {
  uint64_t size = IPFLY_TRY(reader.Size(cid, dl));
  if (size > limit) return TooLarge(cid.ToString() + " is larger than " + std::to_string(limit));
  std::string out;
  IPFLY_RETURN_IF_ERROR(reader.Stream(
      cid, 0, size,
      [&](ByteView b) -> Status {
        out.append(AsString(b));
        return OkStatus();
      },
      dl));
  return out;
}

// Fetches the manifest a descriptor points at by its ipfs:// URL and verifies it.
Result<std::string> FetchDescribed(fetch::UnixfsReader& reader, const json& desc, Deadline dl) {
  Cid cid = IPFLY_TRY(DescriptorCid(desc));
  std::string bytes = IPFLY_TRY(ReadIpfsSmall(reader, cid, kMaxManifest, dl));
  std::string want = desc.value("digest", "");
  if (Sha256Digest(bytes) != want) {
    return Corrupt(cid.ToString() + " does not match the digest " + want + " of its descriptor");
  }
  if (desc.contains("size") && desc["size"].is_number_unsigned() &&
      desc["size"].get<uint64_t>() != bytes.size()) {
    return Corrupt(cid.ToString() + ": size differs from its descriptor");
  }
  return bytes;
}

Status ImportFromIpfs(fetch::UnixfsReader& reader, Registry& reg, const std::string& repo,
                      const json& desc, const std::string& ref, int depth, Deadline dl,
                      uint64_t* blob_count) {
  if (depth > 4) return InvalidArgument("image index nesting deeper than 4");
  std::string bytes = IPFLY_TRY(FetchDescribed(reader, desc, dl));
  auto doc = json::parse(bytes, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return Corrupt("manifest is not JSON");
  std::string mt = desc.value("mediaType", doc.value("mediaType", std::string(kOciManifest)));
  if (IsIndex(mt)) {
    for (const auto& child : doc.value("manifests", json::array())) {
      IPFLY_RETURN_IF_ERROR(ImportFromIpfs(reader, reg, repo, child, child.value("digest", ""),
                                           depth + 1, dl, blob_count));
    }
  } else {
    for (const auto& d : BlobDescriptors(doc)) {
      std::string bd = d.value("digest", "");
      if (IPFLY_TRY(reg.HasBlob(repo, bd))) continue;
      auto cid = DescriptorCid(d);
      if (!cid.ok() && IsForeign(d.value("mediaType", ""))) continue;
      if (!cid.ok()) return cid.error();
      uint64_t size = IPFLY_TRY(reader.Size(*cid, dl));
      if (d.contains("size") && d["size"].is_number_unsigned() &&
          d["size"].get<uint64_t>() != size) {
        return Corrupt("blob " + bd + ": " + cid->ToString() + " has " + std::to_string(size) +
                       " bytes, the descriptor says " + std::to_string(d["size"].get<uint64_t>()));
      }
      // Spool (unlinked temp file) while hashing; upload only verified bytes.
      std::string tmpl = (fs::temp_directory_path() / "ipfly-import-XXXXXX").string();
      int fd = ::mkstemp(tmpl.data());
      if (fd < 0) return ErrnoError("create temporary file", errno);
      ::unlink(tmpl.c_str());
      Sha256 hasher;
      Status st = reader.Stream(
          *cid, 0, size,
          [&](ByteView b) -> Status {
            hasher.Update(b);
            return WriteAll(fd, b);
          },
          dl);
      if (st.ok()) {
        std::string got = Digest::FromSha256(hasher.Final()).ToString();
        if (got != bd) {
          st = Corrupt("blob " + cid->ToString() + " hashes to " + got + ", want " + bd);
        }
      }
      if (st.ok()) {
        st = reg.UploadBlob(repo, bd, size, [&](uint64_t off, char* buf, size_t len) -> Status {
          ssize_t n = ::pread(fd, buf, len, static_cast<off_t>(off));
          if (n != static_cast<ssize_t>(len)) return IoError("read spool");
          return OkStatus();
        });
      }
      ::close(fd);
      IPFLY_RETURN_IF_ERROR(st);
      ++*blob_count;
    }
  }
  std::string got = IPFLY_TRY(reg.PutManifest(repo, ref, mt, bytes));
  std::string want = desc.value("digest", "");
  if (!got.empty() && got != want) {
    return Corrupt("the registry stored manifest " + want + " as " + got);
  }
  return OkStatus();
}

// Exports the view manifest (and its children) into `sink`; returns the manifest's CID.
Result<Cid> ExportManifest(Registry& reg, const std::string& view, const FetchedManifest& m,
                           const unixfs::ImportProfile& profile, BlockSink* sink, int depth) {
  if (depth > 4) return InvalidArgument("image index nesting deeper than 4");
  auto doc = json::parse(m.bytes, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return Corrupt("manifest is not JSON");
  if (IsIndex(m.media_type)) {
    for (const auto& child : doc.value("manifests", json::array())) {
      std::string cd = child.value("digest", "");
      auto cm = IPFLY_TRY(reg.GetManifest(view, cd));
      Cid ccid = IPFLY_TRY(ExportManifest(reg, view, cm, profile, sink, depth + 1));
      Cid listed = IPFLY_TRY(DescriptorCid(child));
      if (listed != ccid) {
        return Corrupt("child " + cd + " is listed as " + listed.ToString() + " but adds as " +
                       ccid.ToString());
      }
    }
  } else {
    for (const auto& d : BlobDescriptors(doc)) {
      if (IsForeign(d.value("mediaType", ""))) continue;
      auto c = DescriptorCid(d);
      if (!c.ok()) return c.error();
    }
  }
  auto node = IPFLY_TRY(unixfs::ImportBytes(AsBytes(m.bytes), profile, sink));
  return node.cid;
}

}  // namespace

std::optional<CliError> CmdSearch(const GlobalOptions& g, const SearchOptions& o) {
  auto url = RegistryUrl(g, o.registry);
  if (!url.ok()) return FromError(url.error());
  if (o.limit < 1 || o.limit > 100) return CliError{kExitUsage, "--limit must be 1..100"};
  Registry reg(*url);
  auto res = reg.Search(o.term, o.limit);
  if (!res.ok()) return FromError(res.error());
  std::vector<std::pair<std::string, std::string>> rows;
  size_t width = 4;
  for (const auto& r : (*res)["results"]) {
    std::string name = r.value("name", "");
    std::string desc = r.value("description", "");
    for (char& c : desc) {
      if (c == '\n' || c == '\t' || c == '\r') c = ' ';
    }
    if (!o.no_trunc && desc.size() > 45) desc = desc.substr(0, 44) + "\u2026";
    width = std::max(width, name.size());
    rows.emplace_back(std::move(name), std::move(desc));
  }
  std::printf("%-*s   %s\n", static_cast<int>(width), "NAME", "DESCRIPTION");
  for (const auto& [name, desc] : rows) {
    std::printf("%-*s   %s\n", static_cast<int>(width), name.c_str(), desc.c_str());
  }
  return std::nullopt;
}

std::optional<CliError> CmdPush(const GlobalOptions& g, const PushOptions& o) {
  auto url = RegistryUrl(g, o.registry);
  if (!url.ok()) return FromError(url.error());
  auto ref = SplitRef(o.ref);
  if (!ref.ok()) return FromError(ref.error());
  auto [repo, tag] = *ref;
  if (tag.starts_with("sha256:")) return CliError{kExitUsage, "push needs REPO:TAG"};
  auto layout = OciLayout::Open(o.layout);
  if (!layout.ok()) return FromError(layout.error().With(o.layout));
  // The manifest to push: the only one in index.json, else the one named by the tag.
  const json& manifests = (*layout)->index()["manifests"];
  const json* pick = nullptr;
  if (manifests.size() == 1) {
    pick = &manifests[0];
  } else {
    std::string names;
    for (const auto& m : manifests) {
      std::string n = m.value("annotations", json::object())
                          .value("org.opencontainers.image.ref.name", std::string());
      names += " " + n;
      if (n == tag || n == o.ref) pick = &m;
    }
    if (!pick) {
      return CliError{kExitUsage, o.layout + " holds " + std::to_string(manifests.size()) +
                                      " images; none is named " + tag + " (names:" + names + ")"};
    }
  }
  Registry reg(*url);
  std::vector<PushedBlob> blobs;
  std::string digest;
  Status st = PushLayoutManifest(**layout, reg, repo, *pick, tag, 0, &blobs, &digest);
  if (!st.ok()) return FromError(st.error());
  std::printf("pushed %s/%s:%s\n", reg.host().c_str(), repo.c_str(), tag.c_str());
  std::printf("digest: %s\n", digest.c_str());
  std::printf("ipfs:   %s/ipfs/%s:%s\n", reg.host().c_str(), repo.c_str(), tag.c_str());
  for (const auto& b : blobs) {
    json r = reg.Resolve(b.digest);
    std::string cid = r.is_object() ? r.value("cid", "-") : "-";
    std::string index = r.is_object() ? r.value("index_cid", "") : "";
    std::printf("blob %s cid %s%s%s%s\n", b.digest.c_str(), cid.c_str(),
                index.empty() ? "" : " index ", index.c_str(), b.uploaded ? "" : " (existed)");
  }
  return std::nullopt;
}

std::optional<CliError> CmdImageExport(const GlobalOptions& g, const ImageExportOptions& o) {
  auto target = OpenImageTarget(g, o.registry, o.ref);
  if (!target.ok()) return FromError(target.error());
  auto& env = *target->env;
  const std::string& repo = target->repo;
  std::string view = repo.starts_with("ipfs/") ? repo : "ipfs/" + repo;
  std::optional<SourceSpec> to;
  if (!o.to.empty()) {
    auto s = SourceSpec::Parse(o.to);
    if (!s.ok() || s->kind != SourceSpec::Kind::kKubo) {
      return CliError{kExitUsage, "--to: want kubo=URL"};
    }
    to = *s;
  }
  // CIDv1 UnixFS files, as `ipfs add --cid-version=1` (what nerdctl and stargz add with).
  auto profile = unixfs::ImportProfile::ByName("kubo-v1");
  if (!profile.ok()) return FromError(profile.error());
  auto store = env.store();
  if (!store.ok()) return FromError(store.error());
  CollectSink collected;
  TeeSink2 sink(*store, &collected);

  Registry reg(target->url);
  auto m = reg.GetManifest(view, target->reference);
  if (!m.ok()) return FromError(m.error());
  auto mcid = ExportManifest(reg, view, *m, *profile, &sink, 0);
  if (!mcid.ok()) return FromError(mcid.error());
  json desc = {{"mediaType", m->media_type},
               {"digest", m->digest},
               {"size", m->bytes.size()},
               {"urls", json::array({"ipfs://" + mcid->ToString()})}};
  std::string desc_bytes = desc.dump();
  auto root = unixfs::ImportBytes(AsBytes(desc_bytes), *profile, &sink);
  if (!root.ok()) return FromError(root.error());
  if (to) {
    std::string tmpl = (fs::temp_directory_path() / "ipfly-export-XXXXXX").string();
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0)
      return CliError{kExitFailure, "create temporary CAR: " + std::string(strerror(errno))};
    codec::CarV1Writer car([fd](ByteView b) { return WriteAll(fd, b); });
    Status st = car.WriteHeader({root->cid});
    for (const auto& b : collected.blocks) {
      if (st.ok()) st = car.Put(b);
    }
    ::close(fd);
    if (st.ok()) {
      fetch::KuboRpcClient kubo(to->url, nullptr);
      auto imp = kubo.DagImport(tmpl, env.deadline());
      if (!imp.ok()) st = imp.error().With("--to " + to->url);
    }
    ::unlink(tmpl.c_str());
    if (!st.ok()) return FromError(st.error());
  }
  std::printf("%s\n", root->cid.ToString().c_str());
  return std::nullopt;
}

std::optional<CliError> CmdImageImport(const GlobalOptions& g, const ImageImportOptions& o) {
  auto cid = ParseCidArg(o.cid);
  if (!cid.ok()) return FromError(cid.error());
  auto target = OpenImageTarget(g, o.registry, o.tag);
  if (!target.ok()) return FromError(target.error());
  auto& env = *target->env;
  const std::string& repo = target->repo;
  const std::string& tag = target->reference;
  if (tag.starts_with("sha256:")) return CliError{kExitUsage, "--tag needs REPO:TAG"};
  auto reader = env.reader();
  if (!reader.ok()) return FromError(reader.error());
  Deadline dl = env.deadline();
  auto desc_bytes = ReadIpfsSmall(**reader, *cid, 1 << 20, dl);
  if (!desc_bytes.ok()) return FromError(desc_bytes.error().With(o.cid));
  auto desc = json::parse(*desc_bytes, nullptr, false);
  if (desc.is_discarded() || !desc.is_object() || !desc.contains("digest")) {
    return CliError{kExitFailure, o.cid + " is not an OCI descriptor"};
  }
  Registry reg(target->url);
  uint64_t blobs = 0;
  Status st = ImportFromIpfs(**reader, reg, repo, desc, tag, 0, dl, &blobs);
  if (!st.ok()) return FromError(st.error());
  std::printf("imported %s/%s:%s\n", reg.host().c_str(), repo.c_str(), tag.c_str());
  std::printf("digest: %s\n", desc.value("digest", "").c_str());
  return std::nullopt;
}

}  // namespace ipfly::cli
