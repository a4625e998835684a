#include "fusefs/tests/mem_tree.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace ipfly::fusefs::testing {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

}  // namespace

MemTree::MemTree(std::string name) : name_(std::move(name)) {
  nodes_.resize(1);  // inode 0 is invalid
  NewNode("", S_IFDIR | 0755);
}

uint8_t MemTree::GeneratedByte(uint64_t seed, uint64_t off) {
  return static_cast<uint8_t>(SplitMix64(seed ^ (off / 8)) >> ((off % 8) * 8));
}

void MemTree::FillGenerated(uint64_t seed, uint64_t off, uint8_t* out, size_t n) {
  size_t i = 0;
  while (i < n && (off + i) % 8 != 0) {
    out[i] = GeneratedByte(seed, off + i);
    ++i;
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t w = SplitMix64(seed ^ ((off + i) / 8));
    std::memcpy(out + i, &w, 8);  // little-endian: byte k is bits 8k..8k+7, as GeneratedByte
  }
  for (; i < n; ++i) out[i] = GeneratedByte(seed, off + i);
}

uint64_t MemTree::NewNode(const std::string& path, uint32_t mode) {
  Node n;
  n.attr.ino = nodes_.size();
  n.attr.mode = mode;
  n.attr.nlink = S_ISDIR(mode) ? 2 : 1;
  n.attr.size = S_ISDIR(mode) ? 4096 : 0;
  n.attr.mtime_sec = 1700000000;
  n.attr.mtime_nsec = 123456789;
  n.path = path;
  nodes_.push_back(std::move(n));
  return nodes_.size() - 1;
}

MemTree::Node* MemTree::Get(uint64_t ino) {
  if (ino == 0 || ino >= nodes_.size()) return nullptr;
  return &nodes_[ino];
}

std::pair<uint64_t, std::string> MemTree::Parent(const std::string& path) {
  auto parts = SplitPath(path);
  if (parts.empty()) throw std::invalid_argument("empty path");
  uint64_t dir = kRootIno;
  std::string prefix;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix += (prefix.empty() ? "" : "/") + parts[i];
    auto it = nodes_[dir].children.find(parts[i]);
    if (it == nodes_[dir].children.end()) {
      uint64_t child = NewNode(prefix, S_IFDIR | 0755);
      nodes_[dir].children.emplace(parts[i], child);
      nodes_[dir].attr.nlink++;
      dir = child;
    } else {
      dir = it->second;
    }
  }
  return {dir, parts.back()};
}

uint64_t MemTree::Link(const std::string& path, uint64_t ino) {
  auto [dir, name] = Parent(path);
  if (!nodes_[dir].children.emplace(name, ino).second) {
    throw std::invalid_argument("exists: " + path);
  }
  if (S_ISDIR(nodes_[ino].attr.mode)) nodes_[dir].attr.nlink++;
  return ino;
}

uint64_t MemTree::AddDir(const std::string& path, uint32_t perm) {
  return Link(path, NewNode(path, S_IFDIR | perm));
}

uint64_t MemTree::AddFile(const std::string& path, std::string content, uint32_t perm) {
  uint64_t ino = NewNode(path, S_IFREG | perm);
  nodes_[ino].attr.size = content.size();
  nodes_[ino].attr.blocks = (content.size() + 511) / 512;
  nodes_[ino].content = std::move(content);
  return Link(path, ino);
}

uint64_t MemTree::AddGeneratedFile(const std::string& path, uint64_t size, uint64_t seed,
                                   uint32_t perm) {
  uint64_t ino = NewNode(path, S_IFREG | perm);
  nodes_[ino].attr.size = size;
  nodes_[ino].attr.blocks = (size + 511) / 512;
  nodes_[ino].generated = true;
  nodes_[ino].seed = seed;
  return Link(path, ino);
}

uint64_t MemTree::AddSymlink(const std::string& path, const std::string& target) {
  uint64_t ino = NewNode(path, S_IFLNK | 0777);
  nodes_[ino].attr.size = target.size();
  nodes_[ino].content = target;
  return Link(path, ino);
}

uint64_t MemTree::AddHardLink(const std::string& path, const std::string& existing) {
  uint64_t ino = InoOf(existing);
  if (ino == 0) throw std::invalid_argument("no such file: " + existing);
  Link(path, ino);
  nodes_[ino].attr.nlink++;
  return ino;
}

uint64_t MemTree::AddDevice(const std::string& path, uint32_t type, uint32_t major, uint32_t minor,
                            uint32_t perm) {
  uint64_t ino = NewNode(path, type | perm);
  nodes_[ino].attr.rdev_major = major;
  nodes_[ino].attr.rdev_minor = minor;
  return Link(path, ino);
}

uint64_t MemTree::AddFifo(const std::string& path, uint32_t perm) {
  return Link(path, NewNode(path, S_IFIFO | perm));
}

uint64_t MemTree::InoOf(const std::string& path) const {
  uint64_t ino = kRootIno;
  for (const auto& part : SplitPath(path)) {
    auto it = nodes_[ino].children.find(part);
    if (it == nodes_[ino].children.end()) return 0;
    ino = it->second;
  }
  return ino;
}

void MemTree::SetXattr(const std::string& path, const std::string& name, const std::string& value) {
  nodes_.at(InoOf(path)).xattrs[name] = value;
}

void MemTree::SetMtime(const std::string& path, int64_t sec, uint32_t nsec) {
  auto& a = nodes_.at(InoOf(path)).attr;
  a.mtime_sec = sec;
  a.mtime_nsec = nsec;
}

void MemTree::SetOwner(const std::string& path, uint32_t uid, uint32_t gid) {
  auto& a = nodes_.at(InoOf(path)).attr;
  a.uid = uid;
  a.gid = gid;
}

void MemTree::SetReadHook(ReadHook hook) {
  std::lock_guard lock(hook_mu_);
  hook_ = hook ? std::make_shared<ReadHook>(std::move(hook)) : nullptr;
}

Result<Attr> MemTree::GetAttr(uint64_t ino) {
  Node* n = Get(ino);
  if (!n) return NotFound("inode " + std::to_string(ino));
  return n->attr;
}

Result<uint64_t> MemTree::Lookup(uint64_t parent, std::string_view name) {
  Node* n = Get(parent);
  if (!n || !S_ISDIR(n->attr.mode)) return NotFound("parent " + std::to_string(parent));
  auto it = n->children.find(name);
  if (it == n->children.end()) return NotFound(std::string(name));
  return it->second;
}

Result<std::vector<DirEntry>> MemTree::ReadDir(uint64_t ino) {
  Node* n = Get(ino);
  if (!n || !S_ISDIR(n->attr.mode)) return NotFound("dir " + std::to_string(ino));
  std::vector<DirEntry> out;
  out.reserve(n->children.size());
  for (const auto& [name, child] : n->children) {
    out.push_back(DirEntry{name, child, nodes_[child].attr.mode});
  }
  return out;
}

Result<std::string> MemTree::ReadLink(uint64_t ino) {
  Node* n = Get(ino);
  if (!n) return NotFound("inode " + std::to_string(ino));
  if (!S_ISLNK(n->attr.mode)) return InvalidArgument("not a symlink");
  return n->content;
}

Result<std::vector<std::string>> MemTree::ListXattr(uint64_t ino) {
  Node* n = Get(ino);
  if (!n) return NotFound("inode " + std::to_string(ino));
  std::vector<std::string> names;
  for (const auto& [k, v] : n->xattrs) names.push_back(k);
  return names;
}

Result<std::string> MemTree::GetXattr(uint64_t ino, std::string_view name) {
  Node* n = Get(ino);
  if (!n) return NotFound("inode " + std::to_string(ino));
  auto it = n->xattrs.find(name);
  if (it == n->xattrs.end()) return NotFound(std::string(name));
  return it->second;
}

Result<size_t> MemTree::Read(uint64_t ino, uint64_t off, MutableByteView out) {
  read_calls_++;
  std::shared_ptr<ReadHook> hook;
  {
    std::lock_guard lock(hook_mu_);
    hook = hook_;
  }
  if (hook) IPFLY_RETURN_IF_ERROR((*hook)(ino, off));
  Node* n = Get(ino);
  if (!n || !S_ISREG(n->attr.mode)) return NotFound("file " + std::to_string(ino));
  if (off >= n->attr.size) return size_t{0};
  size_t len = static_cast<size_t>(std::min<uint64_t>(out.size(), n->attr.size - off));
  if (n->generated) {
    FillGenerated(n->seed, off, out.data(), len);
  } else {
    std::memcpy(out.data(), n->content.data() + off, len);
  }
  return len;
}

std::string MemTree::Describe(uint64_t ino) {
  Node* n = Get(ino);
  return name_ + " /" + (n ? n->path : "<inode " + std::to_string(ino) + ">");
}

}  // namespace ipfly::fusefs::testing
