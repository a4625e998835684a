#include "core/unixfs/importer.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/base/fd.h"
#include "core/codec/dagpb.h"
#include "core/codec/protobuf_wire.h"
#include "core/codec/unixfs_pb.h"
#include "core/multiformats/multihash.h"

namespace ipfly::unixfs {
namespace {

// Room in front of the chunk data for the dag-pb leaf prefix `0a L 08 02 12 n` (at most
// 1 + 3 + 2 + 1 + 3 bytes for chunks <= kMaxChunkSize) and behind it for `18 n`.
constexpr size_t kHeadroom = 16;
constexpr size_t kTrailerRoom = 16;
constexpr size_t kMaxTreeDepth = 4096;

class DirHandle {
 public:
  explicit DirHandle(DIR* d) : d_(d) {}
  ~DirHandle() {
    if (d_) ::closedir(d_);
  }
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;
  DIR* get() const { return d_; }

 private:
  DIR* d_;
};

// Hashes `bytes` once and, with a sink, stores them. Without a sink no copy is made, which keeps
// hash-only imports at memory bandwidth + SHA-256 speed; with a sink the one copy into the
// Block's own buffer is unavoidable because Block owns immutable shared bytes.
Result<mf::Cid> StoreBlock(uint64_t codec, int version, ByteView bytes, BlockSink* sink) {
  if (sink) {
    Block b = IPFLY_TRY(Block::Make(codec, Bytes(bytes.begin(), bytes.end()), version));
    IPFLY_RETURN_IF_ERROR(sink->Put(b));
    return b.cid();
  }
  mf::Multihash mh = mf::Multihash::Sha256Of(bytes);
  if (version == 0 && codec == mf::kCodecDagPb) return mf::Cid::V0(std::move(mh));
  return mf::Cid::V1(codec, std::move(mh));
}

Status NotUsable() { return Internal("FileImporter used after an error or Finish()"); }

}  // namespace

// --- ImportProfile ------------------------------------------------------------------------------

Result<ImportProfile> ImportProfile::ByName(std::string_view name) {
  ImportProfile p;
  if (name == "kubo-v1") {
    return p;
  }
  if (name == "kubo-v0" || name == "unixfs-v0-2015") {
    p.name = "kubo-v0";
    p.cid_version = 0;
    p.raw_leaves = false;
    return p;
  }
  if (name == "unixfs-v1-2025") {
    p.name = "unixfs-v1-2025";
    p.chunk_size = 1048576;
    p.max_links = 1024;
    p.hamt_estimate = HamtEstimate::kBlockBytes;
    return p;
  }
  return InvalidArgument("unknown import profile \"" + std::string(name) +
                         "\" (known: kubo-v1, kubo-v0, unixfs-v1-2025)");
}

Status ImportProfile::Validate() const {
  if (cid_version != 0 && cid_version != 1) {
    return InvalidArgument("import profile " + name + ": cid_version must be 0 or 1");
  }
  if (chunk_size < 1 || chunk_size > kMaxChunkSize) {
    return InvalidArgument("import profile " + name + ": chunk_size must be in [1, " +
                           std::to_string(kMaxChunkSize) + "]");
  }
  if (max_links < 2) {
    return InvalidArgument("import profile " + name + ": max_links must be at least 2");
  }
  return OkStatus();
}

// --- FileImporter -------------------------------------------------------------------------------

FileImporter::FileImporter(const ImportProfile& profile, BlockSink* sink)
    : profile_(profile), sink_(sink), status_(profile.Validate()) {
  if (status_.ok()) buf_.resize(kHeadroom + profile_.chunk_size + kTrailerRoom);
}

MutableByteView FileImporter::WritableSpace() {
  if (!status_.ok() || finished_) return {};
  return MutableByteView(buf_.data() + kHeadroom + fill_, profile_.chunk_size - fill_);
}

Status FileImporter::Commit(size_t n) {
  if (!status_.ok()) return status_;
  if (finished_) return NotUsable();
  if (n > profile_.chunk_size - fill_) {
    status_ = Internal("FileImporter::Commit beyond WritableSpace()");
    return status_;
  }
  fill_ += n;
  total_ += n;
  if (fill_ == profile_.chunk_size) {
    Status s = EmitLeaf();
    if (!s.ok()) status_ = s;
    return s;
  }
  return OkStatus();
}

Status FileImporter::Write(ByteView data) {
  while (!data.empty()) {
    MutableByteView space = WritableSpace();
    if (space.empty()) return status_.ok() ? NotUsable() : status_;
    const size_t n = std::min(space.size(), data.size());
    std::memcpy(space.data(), data.data(), n);
    data = data.subspan(n);
    IPFLY_RETURN_IF_ERROR(Commit(n));
  }
  return OkStatus();
}

Result<mf::Cid> FileImporter::Store(uint64_t codec, int version, ByteView bytes) {
  return StoreBlock(codec, version, bytes, sink_);
}

Status FileImporter::EmitLeaf() {
  const size_t n = fill_;
  uint8_t* data = buf_.data() + kHeadroom;
  auto make_leaf = [&]() -> Result<Link> {
    if (profile_.raw_leaves) {
      mf::Cid cid = IPFLY_TRY(Store(mf::kCodecRaw, 1, ByteView(data, n)));
      return Link{std::move(cid), n, n};
    }
    // Build the leaf in place around the data: PBNode{Data: UnixFS{Type=File, Data=chunk,
    // filesize=n}}. Kubo omits the Data field only for the empty file (0a 04 08 02 18 00).
    const size_t vn = codec::pb::VarintSize(n);
    const size_t inner = 2 + (n ? 1 + vn + n : 0) + 1 + vn;
    uint8_t prefix[kHeadroom];
    uint8_t* p = prefix;
    *p++ = 0x0a;
    p = codec::pb::WriteVarint(p, inner);
    *p++ = 0x08;
    *p++ = 0x02;
    if (n) {
      *p++ = 0x12;
      p = codec::pb::WriteVarint(p, n);
    }
    const size_t plen = static_cast<size_t>(p - prefix);
    std::memcpy(data - plen, prefix, plen);
    uint8_t* t = data + n;
    *t++ = 0x18;
    t = codec::pb::WriteVarint(t, n);
    ByteView block(data - plen, static_cast<size_t>(t - (data - plen)));
    mf::Cid cid = IPFLY_TRY(Store(mf::kCodecDagPb, profile_.cid_version, block));
    return Link{std::move(cid), block.size(), n};
  };
  Link leaf = IPFLY_TRY(make_leaf());
  fill_ = 0;
  ++leaves_;
  return AddLink(0, std::move(leaf));
}

Result<FileImporter::Link> FileImporter::BuildNode(const std::vector<Link>& links) {
  codec::UnixfsData fs;
  fs.type = codec::UnixfsType::kFile;
  fs.blocksizes.reserve(links.size());
  codec::PbNode node;
  node.links.reserve(links.size());
  uint64_t filesize = 0, tsize = 0;
  for (const Link& l : links) {
    filesize += l.filesize;
    tsize += l.tsize;
    fs.blocksizes.push_back(l.filesize);
    // Kubo writes an empty Name on chunk links; omitting it changes the CID.
    node.links.push_back(codec::PbLink{l.cid, std::string(), l.tsize});
  }
  fs.filesize = filesize;
  node.data = codec::EncodeUnixfs(fs);
  Bytes enc = codec::EncodeDagPb(node);
  mf::Cid cid = IPFLY_TRY(Store(mf::kCodecDagPb, profile_.cid_version, enc));
  return Link{std::move(cid), tsize + enc.size(), filesize};
}

// Appends a child to the open node at `level`. A full node is closed lazily, only when another
// child arrives, because whether a tree grows a level depends on whether more data follows.
Status FileImporter::AddLink(size_t level, Link link) {
  if (levels_.size() <= level) levels_.resize(level + 1);
  if (levels_[level].size() == profile_.max_links) {
    Link parent = IPFLY_TRY(BuildNode(levels_[level]));
    levels_[level].clear();
    IPFLY_RETURN_IF_ERROR(AddLink(level + 1, std::move(parent)));
  }
  levels_[level].push_back(std::move(link));
  return OkStatus();
}

Result<ImportedNode> FileImporter::Finish() {
  if (!status_.ok()) return status_.error();
  if (finished_) return NotUsable().error();
  finished_ = true;
  auto fail = [this](Error e) -> Error {
    status_ = e;
    return e;
  };
  // The empty file is one empty leaf; otherwise flush the partial last chunk.
  if (leaves_ == 0 || fill_ > 0) {
    Status s = EmitLeaf();
    if (!s.ok()) return fail(std::move(s).error());
  }
  // Close the open nodes bottom-up. All levels up to the top one are non-empty (a level only
  // gains a parent when the level below overflows and immediately takes the new child).
  for (size_t i = 0; i < levels_.size(); ++i) {
    bool higher = false;
    for (size_t j = i + 1; j < levels_.size(); ++j) higher |= !levels_[j].empty();
    if (!higher) {
      if (i == 0 && levels_[0].size() == 1) {
        // Single chunk: the root is the leaf itself.
        Link& l = levels_[0][0];
        ImportedNode out{l.cid, l.tsize, l.filesize};
        levels_.clear();
        buf_ = Bytes();
        return out;
      }
      auto root = BuildNode(levels_[i]);
      if (!root.ok()) return fail(std::move(root).error());
      levels_.clear();
      buf_ = Bytes();
      return ImportedNode{root->cid, root->tsize, root->filesize};
    }
    if (levels_[i].empty()) continue;
    auto node = BuildNode(levels_[i]);
    if (!node.ok()) return fail(std::move(node).error());
    levels_[i].clear();
    Status s = AddLink(i + 1, std::move(node).value());
    if (!s.ok()) return fail(std::move(s).error());
  }
  return fail(Internal("FileImporter: no root after Finish"));
}

// --- Whole files --------------------------------------------------------------------------------

Result<ImportedNode> ImportBytes(ByteView data, const ImportProfile& profile, BlockSink* sink) {
  FileImporter imp(profile, sink);
  IPFLY_RETURN_IF_ERROR(imp.Write(data));
  return imp.Finish();
}

Result<ImportedNode> ImportFile(const std::string& path, const ImportProfile& profile,
                                BlockSink* sink) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path, errno);
  if (S_ISDIR(st.st_mode)) return InvalidArgument(path + " is a directory");
  // Advisory only; failure is harmless.
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

  FileImporter imp(profile, sink);
  IPFLY_RETURN_IF_ERROR(profile.Validate());
  for (;;) {
    // Read straight into the importer's chunk buffer: no intermediate copy.
    MutableByteView space = imp.WritableSpace();
    ssize_t n = ::read(fd.get(), space.data(), space.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read " + path, errno);
    }
    if (n == 0) break;
    IPFLY_RETURN_IF_ERROR(imp.Commit(static_cast<size_t>(n)));
  }
  return imp.Finish();
}

Result<ImportedNode> MakeSymlink(std::string_view target, const ImportProfile& profile,
                                 BlockSink* sink) {
  IPFLY_RETURN_IF_ERROR(profile.Validate());
  codec::UnixfsData fs;
  fs.type = codec::UnixfsType::kSymlink;
  fs.data = Bytes(target.begin(), target.end());
  codec::PbNode node;
  node.data = codec::EncodeUnixfs(fs);
  Bytes enc = codec::EncodeDagPb(node);
  mf::Cid cid = IPFLY_TRY(StoreBlock(mf::kCodecDagPb, profile.cid_version, enc, sink));
  return ImportedNode{std::move(cid), enc.size(), 0};
}

// --- Directories --------------------------------------------------------------------------------

Status DirectoryBuilder::Add(std::string name, const ImportedNode& child) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return InvalidArgument("invalid directory entry name \"" + name + "\"");
  }
  auto [it, inserted] = entries_.emplace(std::move(name), child);
  if (!inserted) return InvalidArgument("duplicate directory entry \"" + it->first + "\"");
  return OkStatus();
}

Result<ImportedNode> DirectoryBuilder::Finish(BlockSink* sink) {
  IPFLY_RETURN_IF_ERROR(profile_.Validate());
  codec::PbNode node;
  node.links.reserve(entries_.size());
  uint64_t tsize = 0;
  uint64_t links_bytes = 0;
  for (const auto& [name, child] : entries_) {
    tsize += child.tsize;
    links_bytes += name.size() + child.cid.ToBytes().size();
    node.links.push_back(codec::PbLink{child.cid, name, child.tsize});
  }
  codec::UnixfsData fs;
  fs.type = codec::UnixfsType::kDirectory;
  node.data = codec::EncodeUnixfs(fs);
  Bytes enc = codec::EncodeDagPb(node);
  // boxo switches to a HAMT when the estimate is strictly greater than the threshold (the
  // comparison was >= before boxo#1088; IPIP-499 fixes it as >).
  const uint64_t estimate =
      profile_.hamt_estimate == HamtEstimate::kLinksBytes ? links_bytes : enc.size();
  if (estimate > profile_.hamt_threshold) {
    return Unsupported("directory with " + std::to_string(entries_.size()) +
                       " entries has a size estimate of " + std::to_string(estimate) + " bytes > " +
                       std::to_string(profile_.hamt_threshold) +
                       ": Kubo would store it as a HAMT shard, which ipfly does not produce");
  }
  mf::Cid cid = IPFLY_TRY(StoreBlock(mf::kCodecDagPb, profile_.cid_version, enc, sink));
  return ImportedNode{std::move(cid), tsize + enc.size(), 0};
}

// --- Trees --------------------------------------------------------------------------------------

namespace {

struct TreeWalker {
  const ImportProfile& profile;
  BlockSink* sink;
  const TreeCallback& callback;
  // Directories in completion order (post-order, children sorted): reported after all files.
  std::vector<std::pair<std::string, ImportedNode>> dirs;

  Status Report(const std::string& rel, const ImportedNode& n) {
    return callback ? callback(rel, n) : OkStatus();
  }

  Result<ImportedNode> Visit(const std::string& fs_path, const std::string& rel,
                             const struct stat& st, size_t depth) {
    if (depth > kMaxTreeDepth) return Unsupported(fs_path + ": directory tree too deep");
    if (S_ISREG(st.st_mode)) {
      ImportedNode n = IPFLY_TRY(ImportFile(fs_path, profile, sink));
      IPFLY_RETURN_IF_ERROR(Report(rel, n));
      return n;
    }
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size > 0 ? st.st_size : 256), '\0');
      for (;;) {
        ssize_t len = ::readlink(fs_path.c_str(), target.data(), target.size());
        if (len < 0) return ErrnoError("readlink " + fs_path, errno);
        if (static_cast<size_t>(len) < target.size()) {
          target.resize(static_cast<size_t>(len));
          break;
        }
        target.resize(target.size() * 2);  // the link grew or st_size was 0 (procfs-like)
      }
      ImportedNode n = IPFLY_TRY(MakeSymlink(target, profile, sink));
      IPFLY_RETURN_IF_ERROR(Report(rel, n));
      return n;
    }
    if (!S_ISDIR(st.st_mode)) {
      return Unsupported(fs_path + ": unsupported file type (not a file, directory or symlink)");
    }
    std::vector<std::string> names;
    {
      DirHandle d(::opendir(fs_path.c_str()));
      if (!d.get()) return ErrnoError("opendir " + fs_path, errno);
      for (;;) {
        errno = 0;
        struct dirent* e = ::readdir(d.get());
        if (!e) {
          if (errno != 0) return ErrnoError("readdir " + fs_path, errno);
          break;
        }
        std::string_view nm(e->d_name);
        if (nm == "." || nm == "..") continue;
        names.emplace_back(nm);
      }
    }
    // Kubo's CLI walks entries in bytewise name order; std::string compares bytewise.
    std::sort(names.begin(), names.end());
    DirectoryBuilder dir(profile);
    for (const std::string& name : names) {
      const std::string child_path = fs_path + "/" + name;
      struct stat cst;
      if (::lstat(child_path.c_str(), &cst) != 0) return ErrnoError("lstat " + child_path, errno);
      ImportedNode child = IPFLY_TRY(Visit(child_path, rel + "/" + name, cst, depth + 1));
      IPFLY_RETURN_IF_ERROR(dir.Add(name, child));
    }
    auto n = dir.Finish(sink);
    if (!n.ok()) return std::move(n).error().With(fs_path);
    dirs.emplace_back(rel, *n);
    return std::move(n).value();
  }
};

std::string BaseName(const std::string& path) {
  size_t end = path.size();
  while (end > 1 && path[end - 1] == '/') --end;
  const size_t slash = path.rfind('/', end - 1);
  if (slash == std::string::npos) return path.substr(0, end);
  if (slash + 1 == end) return path.substr(slash, 1);  // "/"
  return path.substr(slash + 1, end - slash - 1);
}

}  // namespace

Result<ImportedNode> ImportTree(const std::string& path, const ImportProfile& profile,
                                BlockSink* sink, const TreeCallback& callback) {
  IPFLY_RETURN_IF_ERROR(profile.Validate());
  if (path.empty()) return InvalidArgument("ImportTree: empty path");
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return ErrnoError("lstat " + path, errno);
  TreeWalker w{profile, sink, callback, {}};
  ImportedNode root = IPFLY_TRY(w.Visit(path, BaseName(path), st, 0));
  for (const auto& [rel, node] : w.dirs) IPFLY_RETURN_IF_ERROR(w.Report(rel, node));
  return root;
}

}  // namespace ipfly::unixfs
