#include "layer/layer_index.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "core/base/log.h"

namespace ipfly::layer {
namespace {

constexpr char kMagic[8] = {'I', 'P', 'F', 'L', 'Y', 'I', 'X', '1'};
// Guards against absurd allocations when decoding a corrupt (but checksum-valid) index.
constexpr uint64_t kMaxDecodedIndex = 1ull << 30;
constexpr uint32_t kMaxWindow = 32768;
// Window encodings (format version 2).
constexpr uint8_t kWindowDense = 0;
constexpr uint8_t kWindowSparse = 1;

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { Raw(&v, 2); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Raw(s.data(), s.size());
  }
  void Blob(ByteView b) {
    U32(static_cast<uint32_t>(b.size()));
    Raw(b.data(), b.size());
  }
  void Raw(const void* p, size_t n) {
    auto* c = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), c, c + n);
  }
  Bytes& bytes() { return out_; }

 private:
  Bytes out_;  // little-endian: the only hosts we build for (x86_64, aarch64) are LE
};

class Reader {
 public:
  explicit Reader(ByteView in) : in_(in) {}
  Status Need(size_t n) {
    if (in_.size() - pos_ < n) {
      return Corrupt("layer index truncated at byte " + std::to_string(pos_) + " (need " +
                     std::to_string(n) + " more)");
    }
    return OkStatus();
  }
  Result<uint8_t> U8() {
    IPFLY_RETURN_IF_ERROR(Need(1));
    return in_[pos_++];
  }
  template <typename T>
  Result<T> Fixed() {
    IPFLY_RETURN_IF_ERROR(Need(sizeof(T)));
    T v;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  Result<std::string> Str() {
    uint32_t n = IPFLY_TRY(Fixed<uint32_t>());
    IPFLY_RETURN_IF_ERROR(Need(n));
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  Result<Bytes> Blob() {
    uint32_t n = IPFLY_TRY(Fixed<uint32_t>());
    IPFLY_RETURN_IF_ERROR(Need(n));
    Bytes b(in_.begin() + pos_, in_.begin() + pos_ + n);
    pos_ += n;
    return b;
  }
  // A count of items that each take at least `min_size` bytes: bounds allocations.
  Result<uint32_t> Count(size_t min_size) {
    uint32_t n = IPFLY_TRY(Fixed<uint32_t>());
    if (static_cast<uint64_t>(n) * min_size > in_.size() - pos_) {
      return Corrupt("layer index: count " + std::to_string(n) + " at byte " +
                     std::to_string(pos_) + " exceeds the data");
    }
    return n;
  }
  bool done() const { return pos_ == in_.size(); }
  size_t pos() const { return pos_; }

 private:
  ByteView in_;
  size_t pos_ = 0;
};

bool IsDir(const IndexEntry& e) { return e.type == EntryType::kDirectory; }

std::string ParentOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

}  // namespace

size_t LayerIndex::SpanOf(uint64_t off) const {
  auto it =
      std::upper_bound(points.begin(), points.end(), off,
                       [](uint64_t o, const AccessPoint& p) { return o < p.uncompressed_offset; });
  return it == points.begin() ? 0 : static_cast<size_t>(it - points.begin() - 1);
}

Bytes LayerIndex::Encode() const {
  Writer w;
  w.Str(layer_digest ? layer_digest->ToString() : "");
  w.Blob(blob_cid ? blob_cid->ToBytes() : Bytes{});
  w.U8(static_cast<uint8_t>(compression));
  w.U64(compressed_size);
  w.U64(uncompressed_size);
  w.U64(span);
  w.U64(frames);
  w.U8(seekable ? 1 : 0);
  w.U32(static_cast<uint32_t>(points.size()));
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    w.U64(p.compressed_bit_offset);
    w.U64(p.uncompressed_offset);
    w.U8(p.member_start ? 1 : 0);
    if (!p.sparse()) {
      w.U8(kWindowDense);
      w.Blob(p.window);
    } else {
      w.U8(kWindowSparse);
      w.U32(p.window_size);
      w.U32(static_cast<uint32_t>(p.window_runs.size()));
      uint32_t end = 0;
      for (const auto& r : p.window_runs) {
        w.U16(static_cast<uint16_t>(r.offset - end));
        w.U16(static_cast<uint16_t>(r.length - 1));
        end = r.offset + r.length;
      }
      w.Blob(p.window);
    }
    const auto& h = i < span_hashes.size() ? span_hashes[i] : Sha256Hash{};
    w.Raw(h.data(), h.size());
  }
  w.U32(static_cast<uint32_t>(entries.size()));
  for (const auto& e : entries) {
    w.Str(e.path);
    w.U8(static_cast<uint8_t>(e.type));
    w.U32(e.mode);
    w.U32(e.uid);
    w.U32(e.gid);
    w.I64(e.mtime_sec);
    w.U32(e.mtime_nsec);
    w.U64(e.size);
    w.U64(e.data_offset);
    w.Str(e.link_target);
    w.U32(e.dev_major);
    w.U32(e.dev_minor);
    w.U32(static_cast<uint32_t>(e.xattrs.size()));
    for (const auto& [k, v] : e.xattrs) {
      w.Str(k);
      w.Str(v);
    }
  }
  Bytes& payload = w.bytes();
  auto sum = Sha256Of(payload);
  Bytes out(kMagic, kMagic + 8);
  uint32_t version = kFormatVersion;
  out.insert(out.end(), reinterpret_cast<uint8_t*>(&version),
             reinterpret_cast<uint8_t*>(&version) + 4);
  uint64_t raw_size = payload.size();
  out.insert(out.end(), reinterpret_cast<uint8_t*>(&raw_size),
             reinterpret_cast<uint8_t*>(&raw_size) + 8);
  size_t bound = ZSTD_compressBound(payload.size());
  size_t head = out.size();
  out.resize(head + bound);
  size_t n = ZSTD_compress(out.data() + head, bound, payload.data(), payload.size(), 9);
  // Compression into a buffer of compressBound size cannot fail for valid parameters.
  out.resize(head + (ZSTD_isError(n) ? 0 : n));
  out.insert(out.end(), sum.begin(), sum.end());
  return out;
}

Result<LayerIndex> LayerIndex::Decode(ByteView bytes) {
  if (bytes.size() < 8 + 4 + 8 + 32 || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    return Corrupt("not an ipfly layer index (bad magic)");
  }
  uint32_t version;
  uint64_t raw_size;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&raw_size, bytes.data() + 12, 8);
  if (version > kFormatVersion) {
    return Unsupported("layer index format version " + std::to_string(version) +
                       " is newer than this ipfly (" + std::to_string(kFormatVersion) + ")");
  }
  if (version == 0) return Corrupt("layer index format version 0 is invalid");
  if (raw_size > kMaxDecodedIndex) {
    return Corrupt("layer index claims " + std::to_string(raw_size) + " bytes, over the limit");
  }
  ByteView body = bytes.subspan(20, bytes.size() - 20 - 32);
  Bytes payload(raw_size);
  size_t n = ZSTD_decompress(payload.data(), payload.size(), body.data(), body.size());
  if (ZSTD_isError(n)) {
    return Corrupt(std::string("layer index: zstd: ") + ZSTD_getErrorName(n));
  }
  if (n != raw_size) return Corrupt("layer index: decompressed size mismatch");
  auto sum = Sha256Of(payload);
  if (std::memcmp(sum.data(), bytes.data() + bytes.size() - 32, 32) != 0) {
    return Corrupt("layer index: checksum mismatch");
  }

  Reader r(payload);
  LayerIndex idx;
  std::string digest = IPFLY_TRY(r.Str());
  if (!digest.empty()) idx.layer_digest = IPFLY_TRY(Digest::Parse(digest));
  Bytes cid = IPFLY_TRY(r.Blob());
  if (!cid.empty()) idx.blob_cid = IPFLY_TRY(mf::Cid::FromBytes(cid));
  uint8_t comp = IPFLY_TRY(r.U8());
  if (comp > 2) return Corrupt("layer index: unknown compression " + std::to_string(comp));
  idx.compression = static_cast<Compression>(comp);
  idx.compressed_size = IPFLY_TRY(r.Fixed<uint64_t>());
  idx.uncompressed_size = IPFLY_TRY(r.Fixed<uint64_t>());
  idx.span = IPFLY_TRY(r.Fixed<uint64_t>());
  idx.frames = IPFLY_TRY(r.Fixed<uint64_t>());
  idx.seekable = IPFLY_TRY(r.U8()) != 0;
  uint32_t np = IPFLY_TRY(r.Count(8 + 8 + 1 + (version >= 2 ? 1 : 0) + 4 + 32));
  idx.points.reserve(np);
  idx.span_hashes.reserve(np);
  for (uint32_t i = 0; i < np; ++i) {
    AccessPoint p;
    p.compressed_bit_offset = IPFLY_TRY(r.Fixed<uint64_t>());
    p.uncompressed_offset = IPFLY_TRY(r.Fixed<uint64_t>());
    p.member_start = IPFLY_TRY(r.U8()) != 0;
    const uint8_t kind = version >= 2 ? IPFLY_TRY(r.U8()) : kWindowDense;
    if (kind == kWindowDense) {
      p.window = IPFLY_TRY(r.Blob());
      if (p.window.size() > kMaxWindow) return Corrupt("layer index: window over 32 KiB");
    } else if (kind == kWindowSparse) {
      p.window_size = IPFLY_TRY(r.Fixed<uint32_t>());
      if (p.window_size == 0 || p.window_size > kMaxWindow) {
        return Corrupt("layer index: sparse window size " + std::to_string(p.window_size) +
                       " out of range");
      }
      if (p.member_start) return Corrupt("layer index: a member start with a window");
      const uint32_t nr = IPFLY_TRY(r.Count(4));
      if (nr > p.window_size) return Corrupt("layer index: too many window runs");
      p.window_runs.reserve(nr);
      uint64_t end = 0, total = 0;
      for (uint32_t k = 0; k < nr; ++k) {
        const uint16_t gap = IPFLY_TRY(r.Fixed<uint16_t>());
        const uint16_t len_m1 = IPFLY_TRY(r.Fixed<uint16_t>());
        const uint64_t len = uint64_t{len_m1} + 1;
        // Runs are sorted, disjoint and never adjacent (adjacent runs would be one run).
        if (k > 0 && gap == 0) return Corrupt("layer index: adjacent window runs");
        const uint64_t off = end + gap;
        if (off + len > p.window_size) return Corrupt("layer index: window run out of range");
        p.window_runs.push_back({static_cast<uint32_t>(off), static_cast<uint32_t>(len)});
        end = off + len;
        total += len;
      }
      p.window = IPFLY_TRY(r.Blob());
      if (p.window.size() != total) {
        return Corrupt("layer index: sparse window holds " + std::to_string(p.window.size()) +
                       " bytes, its runs " + std::to_string(total));
      }
    } else {
      return Corrupt("layer index: unknown window encoding " + std::to_string(kind));
    }
    if (i == 0 ? p.uncompressed_offset != 0
               : p.uncompressed_offset <= idx.points.back().uncompressed_offset) {
      return Corrupt("layer index: access points out of order");
    }
    if (p.uncompressed_offset > idx.uncompressed_size ||
        p.compressed_bit_offset > idx.compressed_size * 8) {
      return Corrupt("layer index: access point beyond the end of the layer");
    }
    Sha256Hash h;
    IPFLY_RETURN_IF_ERROR(r.Need(32));
    for (auto& b : h) b = IPFLY_TRY(r.U8());
    idx.points.push_back(std::move(p));
    idx.span_hashes.push_back(h);
  }
  if (idx.points.empty() && idx.uncompressed_size > 0) {
    return Corrupt("layer index: no access points");
  }
  uint32_t ne = IPFLY_TRY(r.Count(4 + 1 + 4 * 3 + 8 + 4 + 8 + 8 + 4 + 8 + 4));
  idx.entries.reserve(ne);
  for (uint32_t i = 0; i < ne; ++i) {
    IndexEntry e;
    e.path = IPFLY_TRY(r.Str());
    uint8_t t = IPFLY_TRY(r.U8());
    if (t > static_cast<uint8_t>(EntryType::kFifo)) {
      return Corrupt("layer index: unknown entry type " + std::to_string(t));
    }
    e.type = static_cast<EntryType>(t);
    e.mode = IPFLY_TRY(r.Fixed<uint32_t>());
    e.uid = IPFLY_TRY(r.Fixed<uint32_t>());
    e.gid = IPFLY_TRY(r.Fixed<uint32_t>());
    e.mtime_sec = IPFLY_TRY(r.Fixed<int64_t>());
    e.mtime_nsec = IPFLY_TRY(r.Fixed<uint32_t>());
    e.size = IPFLY_TRY(r.Fixed<uint64_t>());
    e.data_offset = IPFLY_TRY(r.Fixed<uint64_t>());
    e.link_target = IPFLY_TRY(r.Str());
    e.dev_major = IPFLY_TRY(r.Fixed<uint32_t>());
    e.dev_minor = IPFLY_TRY(r.Fixed<uint32_t>());
    uint32_t nx = IPFLY_TRY(r.Count(8));
    for (uint32_t j = 0; j < nx; ++j) {
      std::string k = IPFLY_TRY(r.Str());
      e.xattrs[k] = IPFLY_TRY(r.Str());
    }
    if (e.mtime_nsec > 999'999'999) return Corrupt("layer index: bad mtime nanoseconds");
    if ((e.type == EntryType::kFile || e.type == EntryType::kHardlink) &&
        (e.data_offset > idx.uncompressed_size || e.size > idx.uncompressed_size - e.data_offset)) {
      return Corrupt("layer index: file '" + e.path + "' extends beyond the layer");
    }
    if (i == 0 ? !(e.path.empty() && IsDir(e))
               : (e.path.empty() || e.path <= idx.entries.back().path)) {
      return Corrupt("layer index: entries not sorted or root missing at '" + e.path + "'");
    }
    if (i > 0) {
      // Parents come first (sorted order) and must be directories.
      std::string parent = ParentOf(e.path);
      auto it =
          std::lower_bound(idx.entries.begin(), idx.entries.end(), parent,
                           [](const IndexEntry& a, const std::string& p) { return a.path < p; });
      if (it == idx.entries.end() || it->path != parent || !IsDir(*it)) {
        return Corrupt("layer index: '" + e.path + "' has no parent directory");
      }
    }
    idx.entries.push_back(std::move(e));
  }
  if (!r.done()) return Corrupt("layer index: trailing bytes");
  return idx;
}

Result<std::vector<IndexEntry>> ResolveEntries(std::vector<TarEntry> members) {
  std::map<std::string, IndexEntry> tree;
  IndexEntry root;
  root.type = EntryType::kDirectory;
  root.mode = 0755;
  tree[""] = root;

  auto ensure_parents = [&](const std::string& path) {
    std::string p = ParentOf(path);
    std::vector<std::string> missing;
    while (true) {
      auto it = tree.find(p);
      if (it != tree.end()) {
        if (!IsDir(it->second)) {
          // A non-directory in the way of a path: extraction replaces it with a directory.
          it->second = IndexEntry{};
          it->second.path = p;
          it->second.type = EntryType::kDirectory;
          it->second.mode = 0755;
        }
        break;
      }
      missing.push_back(p);
      if (p.empty()) break;
      p = ParentOf(p);
    }
    for (auto& m : missing) {
      IndexEntry d;
      d.path = m;
      d.type = EntryType::kDirectory;
      d.mode = 0755;
      tree[m] = d;
    }
  };

  for (auto& m : members) {
    IndexEntry e;
    e.path = std::move(m.path);
    e.type = m.type;
    e.mode = m.mode & 07777;
    e.uid = m.uid;
    e.gid = m.gid;
    e.mtime_sec = m.mtime_sec;
    e.mtime_nsec = m.mtime_nsec;
    e.size = m.type == EntryType::kFile ? m.size : 0;
    e.data_offset = m.type == EntryType::kFile ? m.data_offset : 0;
    e.link_target = std::move(m.link_target);
    e.dev_major = m.dev_major;
    e.dev_minor = m.dev_minor;
    e.xattrs = std::move(m.xattrs);

    if (e.type == EntryType::kHardlink) {
      auto t = tree.find(e.link_target);
      if (t == tree.end() || IsDir(t->second) || t->first == e.path) {
        // Extraction fails for this member and goes on; so do we, loudly.
        IPFLY_LOG_WARN("layer: hard link '{}' -> '{}': target missing or a directory; skipped",
                       e.path, e.link_target);
        continue;
      }
      // A link to a link is a link to the same inode.
      const IndexEntry& target = t->second;
      std::string inode_path = target.type == EntryType::kHardlink ? target.link_target : t->first;
      IndexEntry link = target;
      link.path = e.path;
      link.type = EntryType::kHardlink;
      link.link_target = inode_path;
      e = std::move(link);
    }
    if (e.path.empty()) {
      if (e.type != EntryType::kDirectory) return Corrupt("layer: the root is not a directory");
      auto& r = tree[""];
      r.mode = e.mode;
      r.uid = e.uid;
      r.gid = e.gid;
      r.mtime_sec = e.mtime_sec;
      r.mtime_nsec = e.mtime_nsec;
      r.xattrs = e.xattrs;
      continue;
    }
    ensure_parents(e.path);
    auto it = tree.find(e.path);
    if (it != tree.end()) {
      if (IsDir(it->second) && IsDir(e)) {
        it->second = std::move(e);  // metadata replaced, children kept
        continue;
      }
      if (IsDir(it->second)) {
        // Replacing a directory by a non-directory drops everything under it.
        std::string lo = it->first + "/", hi = it->first + "0";  // '0' == '/' + 1
        tree.erase(tree.lower_bound(lo), tree.lower_bound(hi));
      }
      it->second = std::move(e);
    } else {
      std::string key = e.path;
      tree.emplace(std::move(key), std::move(e));
    }
  }
  // Hard links whose inode source was replaced later keep pointing at a path that now names
  // another file; make such links stand alone (same content as when they were made).
  for (auto& [path, e] : tree) {
    if (e.type != EntryType::kHardlink) continue;
    auto t = tree.find(e.link_target);
    if (t == tree.end() || t->second.type != EntryType::kFile ||
        t->second.data_offset != e.data_offset || t->second.size != e.size) {
      e.type = EntryType::kFile;
      e.link_target.clear();
    }
  }
  std::vector<IndexEntry> out;
  out.reserve(tree.size());
  for (auto& [path, e] : tree) {
    e.path = path;
    out.push_back(std::move(e));
  }
  return out;
}

struct LayerIndexBuilder::Impl {
  BuildOptions options;
  Bytes head;  // first bytes until the compression is known
  std::unique_ptr<StreamIndexer> indexer;
  std::unique_ptr<TarParser> tar;
  std::vector<TarEntry> members;
  Sha256 blob_hash;
  uint64_t compressed = 0;
  Compression compression = Compression::kNone;

  // Span hashing lags one output chunk behind, so that every access point inside a chunk is
  // known (recorded by the indexer) before that chunk is hashed.
  Sha256 span_hash;
  std::vector<Sha256Hash> span_hashes;
  size_t next_point = 1;  // index of the next span boundary to cross
  uint64_t hashed = 0;    // uncompressed bytes hashed so far
  Bytes pending;

  // Closes spans whose end boundary sits exactly at the hashed position.
  void CrossBoundaries() {
    const auto& pts = indexer->points();
    while (next_point < pts.size() && pts[next_point].uncompressed_offset == hashed) {
      span_hashes.push_back(span_hash.Final());
      ++next_point;
    }
  }

  void HashPending() {
    const auto& pts = indexer->points();
    ByteView data(pending);
    CrossBoundaries();
    while (!data.empty()) {
      uint64_t limit = UINT64_MAX;
      if (next_point < pts.size()) limit = pts[next_point].uncompressed_offset;
      uint64_t take = std::min<uint64_t>(data.size(), limit - hashed);
      span_hash.Update(data.first(static_cast<size_t>(take)));
      data = data.subspan(static_cast<size_t>(take));
      hashed += take;
      CrossBoundaries();
    }
    pending.clear();
  }

  Status OnOutput(ByteView out) {
    HashPending();
    pending.assign(out.begin(), out.end());
    return tar->Feed(out);
  }

  Status Start() {
    compression = DetectCompression(head);
    tar = std::make_unique<TarParser>([this](TarEntry&& e) -> Status {
      members.push_back(std::move(e));
      return OkStatus();
    });
    IndexerOptions io;
    io.span = options.span;
    io.sparse_windows = options.sparse_windows;
    indexer = std::make_unique<StreamIndexer>(compression, io,
                                              [this](ByteView b) { return OnOutput(b); });
    Bytes h = std::move(head);
    head.clear();
    return indexer->Feed(h);
  }
};

LayerIndexBuilder::LayerIndexBuilder(BuildOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
}
LayerIndexBuilder::~LayerIndexBuilder() = default;

Status LayerIndexBuilder::Feed(ByteView compressed) {
  auto& m = *impl_;
  m.blob_hash.Update(compressed);
  m.compressed += compressed.size();
  if (!m.indexer) {
    m.head.insert(m.head.end(), compressed.begin(), compressed.end());
    if (m.head.size() < 8) return OkStatus();
    return m.Start();
  }
  return m.indexer->Feed(compressed);
}

Result<LayerIndex> LayerIndexBuilder::Finish() {
  auto& m = *impl_;
  if (!m.indexer) IPFLY_RETURN_IF_ERROR(m.Start());
  IPFLY_RETURN_IF_ERROR(m.indexer->Finish());
  m.HashPending();
  IPFLY_RETURN_IF_ERROR(m.tar->Finish());
  const auto& pts = m.indexer->points();
  LayerIndex idx;
  idx.layer_digest = Digest::FromSha256(m.blob_hash.Final());
  idx.compression = m.compression;
  idx.compressed_size = m.compressed;
  idx.uncompressed_size = m.indexer->uncompressed_size();
  idx.span = m.options.span;
  idx.frames = m.indexer->frames();
  idx.seekable = m.indexer->seekable();
  idx.points = pts;
  if (idx.points.empty()) idx.points.push_back(AccessPoint{});
  // The last span ends at the end of the stream.
  m.span_hashes.push_back(m.span_hash.Final());
  if (m.span_hashes.size() != idx.points.size() || m.hashed != idx.uncompressed_size) {
    return Internal("layer index: span hashing lost track of access points (" +
                    std::to_string(m.span_hashes.size()) + " hashes for " +
                    std::to_string(idx.points.size()) + " points)");
  }
  idx.span_hashes = std::move(m.span_hashes);
  idx.entries = IPFLY_TRY(ResolveEntries(std::move(m.members)));
  return idx;
}

}  // namespace ipfly::layer
