// LayerTree: the FileTree of one OCI image layer, from its layer index, with file content read
// lazily through a LayerReader (only the spans a read touches are fetched and decompressed).
//
// The tree is what the layer would look like extracted for overlayfs, the way containerd's
// overlay applier converts OCI whiteouts:
//   ".wh.<name>"        → <name> as a character device 0/0 (an overlay whiteout);
//   ".wh..wh..opq" in D → D carries the xattr trusted.overlay.opaque = "y" (entry itself hidden).
// Inode numbers are entry positions in the index (root = 1); hard links share their target's
// inode; st_nlink counts names (files) or 2 + subdirectories (directories).
//
// Thread-safe (immutable after construction; reads go to the thread-safe LayerReader).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "fusefs/file_tree.h"
#include "layer/layer_index.h"
#include "layer/layer_reader.h"

namespace ipfly::fusefs {

class LayerTree : public FileTree {
 public:
  // `name` is used in log lines (the layer digest or CID). `read_timeout` bounds every Read.
  static Result<std::shared_ptr<LayerTree>> Make(std::string name,
                                                 std::shared_ptr<const layer::LayerIndex> index,
                                                 std::shared_ptr<layer::LayerReader> reader,
                                                 std::chrono::milliseconds read_timeout);

  Result<Attr> GetAttr(uint64_t ino) override;
  Result<uint64_t> Lookup(uint64_t parent, std::string_view name) override;
  Result<std::vector<DirEntry>> ReadDir(uint64_t ino) override;
  Result<std::string> ReadLink(uint64_t ino) override;
  Result<std::vector<std::string>> ListXattr(uint64_t ino) override;
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override;
  Result<size_t> Read(uint64_t ino, uint64_t off, MutableByteView out) override;
  // From the layer's span cache file when every span of the range is cached.
  Status ReadLocal(uint64_t ino, uint64_t off, size_t len, const SendLocal& send) override;
  std::string Describe(uint64_t ino) override;

  layer::LayerReader* reader() const { return reader_.get(); }

 private:
  struct Node {
    size_t entry = 0;          // index into index_->entries (the inode's own entry)
    std::string display_path;  // path as shown (whiteouts renamed)
    uint32_t mode = 0;         // full st_mode
    uint32_t nlink = 1;
    bool whiteout = false;
    bool opaque = false;
    std::vector<std::pair<std::string, uint64_t>> children;  // sorted by name: (name, ino)
  };
  LayerTree() = default;
  Result<const Node*> NodeOf(uint64_t ino) const;

  std::string name_;
  std::shared_ptr<const layer::LayerIndex> index_;
  std::shared_ptr<layer::LayerReader> reader_;
  std::chrono::milliseconds timeout_{60'000};
  std::vector<Node> nodes_;  // nodes_[ino - 1]; hard-link entries have no node of their own
};

}  // namespace ipfly::fusefs
