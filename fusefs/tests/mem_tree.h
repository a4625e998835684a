// An in-memory FileTree for fusefs tests: built with paths, with generated (pseudo-random,
// never stored) big files and fault injection on reads.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fusefs/file_tree.h"

namespace ipfly::fusefs::testing {

class MemTree : public FileTree {
 public:
  // Called at the start of every Read with the tree-local inode and offset; a non-OK result fails
  // the read with that error. May block (tests use it to hold a read in flight).
  using ReadHook = std::function<Status(uint64_t ino, uint64_t off)>;

  explicit MemTree(std::string name = "mem");

  // Builders: not thread-safe, call before the tree is attached. `path` is relative to the tree
  // root ("a/b/c"); missing parent directories are created (0755). Each returns the new inode.
  uint64_t AddDir(const std::string& path, uint32_t perm = 0755);
  uint64_t AddFile(const std::string& path, std::string content, uint32_t perm = 0644);
  // A file of `size` bytes whose content is GeneratedByte(seed, offset).
  uint64_t AddGeneratedFile(const std::string& path, uint64_t size, uint64_t seed,
                            uint32_t perm = 0644);
  uint64_t AddSymlink(const std::string& path, const std::string& target);
  // Another name for the inode at `existing` (nlink is incremented).
  uint64_t AddHardLink(const std::string& path, const std::string& existing);
  // type: S_IFCHR or S_IFBLK.
  uint64_t AddDevice(const std::string& path, uint32_t type, uint32_t major, uint32_t minor,
                     uint32_t perm = 0600);
  uint64_t AddFifo(const std::string& path, uint32_t perm = 0644);
  // An overlayfs whiteout: a character device 0/0.
  uint64_t AddWhiteout(const std::string& path) { return AddDevice(path, S_IFCHR, 0, 0, 0); }
  void SetXattr(const std::string& path, const std::string& name, const std::string& value);
  void SetMtime(const std::string& path, int64_t sec, uint32_t nsec);
  void SetOwner(const std::string& path, uint32_t uid, uint32_t gid);
  uint64_t InoOf(const std::string& path) const;  // 0 if absent

  // Thread-safe; may be changed while mounted.
  void SetReadHook(ReadHook hook);
  uint64_t read_calls() const { return read_calls_.load(); }

  static uint8_t GeneratedByte(uint64_t seed, uint64_t off);
  static void FillGenerated(uint64_t seed, uint64_t off, uint8_t* out, size_t n);

  // FileTree
  Result<Attr> GetAttr(uint64_t ino) override;
  Result<uint64_t> Lookup(uint64_t parent, std::string_view name) override;
  Result<std::vector<DirEntry>> ReadDir(uint64_t ino) override;
  Result<std::string> ReadLink(uint64_t ino) override;
  Result<std::vector<std::string>> ListXattr(uint64_t ino) override;
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override;
  Result<size_t> Read(uint64_t ino, uint64_t off, MutableByteView out) override;
  std::string Describe(uint64_t ino) override;

 private:
  struct Node {
    Attr attr;
    std::string path;
    std::map<std::string, uint64_t, std::less<>> children;
    std::string content;  // regular files (unless generated) and symlink targets
    bool generated = false;
    uint64_t seed = 0;
    std::map<std::string, std::string, std::less<>> xattrs;
  };

  Node* Get(uint64_t ino);
  uint64_t NewNode(const std::string& path, uint32_t mode);
  // Creates the parent directories of `path`, returns (parent inode, last component).
  std::pair<uint64_t, std::string> Parent(const std::string& path);
  uint64_t Link(const std::string& path, uint64_t ino);

  std::string name_;
  std::vector<Node> nodes_;  // index = inode; 0 unused
  mutable std::mutex hook_mu_;
  std::shared_ptr<ReadHook> hook_;
  std::atomic<uint64_t> read_calls_{0};
};

}  // namespace ipfly::fusefs::testing
