// UnixFS importer: turns bytes, files and directory trees into the exact DAGs (and CIDs) that
// Kubo's `ipfs add` produces for the same parameters. See ../shared/notes/ipfs.md A2/A3.
//
// Files use Kubo/boxo's "balanced" layout with a fixed-size chunker:
//   * an empty file is one empty leaf; a single-chunk file's root is that leaf;
//   * otherwise leaves are packed max_links per level-1 node, level-1 nodes max_links per level-2
//     node, and so on, with every leaf at the same depth (a level-k node holding one child is
//     kept, never collapsed) — byte for byte what boxo's balanced builder emits;
//   * raw leaves are raw (0x55) blocks, always CIDv1; dag-pb leaves are UnixFS File nodes
//     `0a L 08 02 12 n <data> 18 n`; internal nodes are dag-pb Links (Hash, Name "", Tsize)
//     then Data {Type=File, filesize, blocksizes}.
// Directories are UnixFS basic directories (Data `08 01`, links sorted bytewise by name, Tsize =
// child's cumulative size). HAMT sharding is not implemented: a directory that Kubo would shard
// gives kUnsupported. Symlinks are stored as UnixFS Symlink nodes (never followed), as Kubo does.
//
// Threading: FileImporter and DirectoryBuilder are single-threaded objects. The BlockSink (if
// any) is called from the calling thread, in creation order (children before parents).
// Memory: a file import holds one chunk buffer plus at most max_links pending links per tree
// level, independent of the file size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/block.h"
#include "core/multiformats/cid.h"

namespace ipfly::unixfs {

// Largest chunk Kubo's size-N chunker accepts (2 MiB - 256), so a dag-pb leaf fits a 2 MiB block.
inline constexpr size_t kMaxChunkSize = 2 * 1024 * 1024 - 256;
// Kubo's default HAMT sharding threshold (Import.UnixFSHAMTDirectorySizeThreshold).
inline constexpr size_t kDefaultHamtThreshold = 256 * 1024;

// How a directory's size is estimated against the HAMT threshold (IPIP-499).
enum class HamtEstimate {
  kLinksBytes,  // sum of len(Name) + len(binary CID) over the links (Kubo default, unixfs-v0-2015)
  kBlockBytes,  // serialized dag-pb size of the directory node (unixfs-v1-2025)
};

struct ImportProfile {
  std::string name = "kubo-v1";
  int cid_version = 1;  // of dag-pb nodes (raw leaves are always CIDv1)
  bool raw_leaves = true;
  size_t chunk_size = 262144;
  size_t max_links = 174;
  HamtEstimate hamt_estimate = HamtEstimate::kLinksBytes;
  size_t hamt_threshold = kDefaultHamtThreshold;  // a directory above this would be a HAMT

  // "kubo-v1" (default: `ipfs add --cid-version=1`: CIDv1, raw leaves, 256 KiB, 174 links),
  // "kubo-v0" (Kubo's plain default; alias "unixfs-v0-2015": CIDv0, dag-pb leaves, 256 KiB, 174),
  // "unixfs-v1-2025" (IPIP-499: CIDv1, raw leaves, 1 MiB, 1024 links, block-bytes HAMT estimate).
  // kInvalidArgument for other names.
  static Result<ImportProfile> ByName(std::string_view name);
  // kInvalidArgument unless cid_version is 0 or 1, 1 <= chunk_size <= kMaxChunkSize and
  // max_links >= 2.
  Status Validate() const;
};

struct ImportedNode {
  mf::Cid cid;
  uint64_t tsize = 0;     // cumulative serialized size of the DAG (Kubo's add "Size")
  uint64_t filesize = 0;  // file content bytes; 0 for directories and symlinks
};

// Streaming file importer.
//   FileImporter imp(profile, sink);
//   while (...) RETURN_IF_ERROR(imp.Write(data));
//   ImportedNode root = TRY(imp.Finish());
// Each chunk is hashed exactly once; with sink == nullptr nothing is copied or allocated per chunk
// (hash-only mode, like `ipfs add --only-hash`). Errors: an invalid profile (kInvalidArgument,
// reported by the first call), sink errors (returned as is). After an error or Finish() the object
// only returns errors.
class FileImporter {
 public:
  FileImporter(const ImportProfile& profile, BlockSink* sink);
  FileImporter(const FileImporter&) = delete;
  FileImporter& operator=(const FileImporter&) = delete;

  Status Write(ByteView data);

  // Zero-copy input: WritableSpace() returns the free part of the internal chunk buffer (never
  // empty while the importer is usable); fill a prefix of it and call Commit(n) with the number of
  // bytes written. Write() is a memcpy into this space plus Commit().
  MutableByteView WritableSpace();
  Status Commit(size_t n);

  Result<ImportedNode> Finish();

  uint64_t bytes_written() const { return total_; }

 private:
  struct Link {
    mf::Cid cid;
    uint64_t tsize;
    uint64_t filesize;
  };
  Status EmitLeaf();
  Status AddLink(size_t level, Link link);
  Result<Link> BuildNode(const std::vector<Link>& links);
  Result<mf::Cid> Store(uint64_t codec, int version, ByteView bytes);

  ImportProfile profile_;
  BlockSink* sink_;
  Status status_;
  bool finished_ = false;
  // [headroom for the dag-pb leaf prefix][chunk_size bytes of data][room for the leaf trailer]
  Bytes buf_;
  size_t fill_ = 0;
  uint64_t total_ = 0;
  uint64_t leaves_ = 0;
  std::vector<std::vector<Link>>
      levels_;  // levels_[k]: pending children of the open level-(k+1) node
};

// Imports whole bytes (convenience for tests and small blobs).
Result<ImportedNode> ImportBytes(ByteView data, const ImportProfile& profile, BlockSink* sink);

// Imports one file with large sequential reads straight into the chunk buffer
// (posix_fadvise SEQUENTIAL). Errors from open/read as ErrnoError maps them (kNotFound for a
// missing file, kIo otherwise), kInvalidArgument for a directory.
Result<ImportedNode> ImportFile(const std::string& path, const ImportProfile& profile,
                                BlockSink* sink);

// A UnixFS Symlink node: dag-pb Data {Type=Symlink, Data=target}, CID version per profile.
Result<ImportedNode> MakeSymlink(std::string_view target, const ImportProfile& profile,
                                 BlockSink* sink);

// Builds one basic UnixFS directory from named children.
class DirectoryBuilder {
 public:
  explicit DirectoryBuilder(const ImportProfile& profile) : profile_(profile) {}
  // kInvalidArgument for an empty name, a name containing '/', "." or "..", or a duplicate.
  Status Add(std::string name, const ImportedNode& child);
  // Encodes the directory (links sorted bytewise by name). kUnsupported if its size estimate
  // (per profile.hamt_estimate) exceeds profile.hamt_threshold: Kubo would emit a HAMT shard.
  Result<ImportedNode> Finish(BlockSink* sink);
  size_t size() const { return entries_.size(); }

 private:
  ImportProfile profile_;
  std::map<std::string, ImportedNode> entries_;  // std::string orders bytewise, like Go
};

// Called for every imported entry with its path relative to the parent of the root (the root's
// own name first, like `ipfs add -r` prints: "dir", "dir/a.txt", ...). An error aborts the import.
using TreeCallback = std::function<Status(const std::string& rel_path, const ImportedNode& node)>;

// Imports `path` like `ipfs add -r --hidden`: regular files, directories (recursively) and
// symlinks (as Symlink nodes, not followed — also when `path` itself is one). Callback order
// matches Kubo's output: every file and symlink as it is added (depth-first, names in bytewise
// order), then every directory after all files, children before parents, the root last.
// Hidden (dot) files ARE included — Kubo skips them unless --hidden; we include them because a
// container layer or blob tree must round-trip exactly, so CIDs match `ipfs add -r --hidden`.
// Other file types (sockets, FIFOs, devices) give kUnsupported, as Kubo refuses them.
Result<ImportedNode> ImportTree(const std::string& path, const ImportProfile& profile,
                                BlockSink* sink, const TreeCallback& callback = {});

}  // namespace ipfly::unixfs
