#include "fusefs/layer_tree.h"

#include <sys/stat.h>

#include <algorithm>
#include <unordered_map>

#include "core/base/log.h"

namespace ipfly::fusefs {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr std::string_view kOpaqueXattr = "trusted.overlay.opaque";

uint32_t TypeBits(layer::EntryType t) {
  switch (t) {
    case layer::EntryType::kFile:
    case layer::EntryType::kHardlink:
      return S_IFREG;
    case layer::EntryType::kDirectory:
      return S_IFDIR;
    case layer::EntryType::kSymlink:
      return S_IFLNK;
    case layer::EntryType::kCharDevice:
      return S_IFCHR;
    case layer::EntryType::kBlockDevice:
      return S_IFBLK;
    case layer::EntryType::kFifo:
      return S_IFIFO;
  }
  return S_IFREG;
}

std::string_view BaseName(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string_view DirName(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

}  // namespace

Result<std::shared_ptr<LayerTree>> LayerTree::Make(std::string name,
                                                   std::shared_ptr<const layer::LayerIndex> index,
                                                   std::shared_ptr<layer::LayerReader> reader,
                                                   std::chrono::milliseconds read_timeout) {
  auto t = std::shared_ptr<LayerTree>(new LayerTree);
  t->name_ = std::move(name);
  t->index_ = std::move(index);
  t->reader_ = std::move(reader);
  t->timeout_ = read_timeout;
  const auto& entries = t->index_->entries;
  if (entries.empty() || !entries[0].path.empty() ||
      entries[0].type != layer::EntryType::kDirectory) {
    return Corrupt("layer index of " + t->name_ + " has no root directory");
  }
  if (entries.size() >= kMaxTreeIno) return TooLarge("layer has too many entries");
  std::unordered_map<std::string_view, uint64_t> ino_by_path;
  ino_by_path.reserve(entries.size());
  t->nodes_.resize(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    Node& n = t->nodes_[i];
    n.entry = i;
    n.display_path = e.path;
    n.mode = TypeBits(e.type) | (e.mode & 07777);
    ino_by_path[e.path] = i + 1;
  }
  for (size_t i = 1; i < entries.size(); ++i) {
    const auto& e = entries[i];
    auto parent_it = ino_by_path.find(DirName(e.path));
    if (parent_it == ino_by_path.end()) {
      return Corrupt("layer " + t->name_ + ": '" + e.path + "' has no parent directory");
    }
    Node& parent = t->nodes_[parent_it->second - 1];
    std::string_view base = BaseName(e.path);
    if (base == kOpaqueMarker) {
      parent.opaque = true;
      continue;
    }
    uint64_t ino = i + 1;
    std::string shown(base);
    if (base.starts_with(kWhiteoutPrefix)) {
      shown = std::string(base.substr(kWhiteoutPrefix.size()));
      if (shown.empty() || shown == "." || shown == "..") continue;
      Node& w = t->nodes_[i];
      w.whiteout = true;
      w.mode = S_IFCHR;  // 0/0 character device, mode 0: what overlayfs expects
      w.display_path =
          std::string(DirName(e.path)).append(DirName(e.path).empty() ? "" : "/") + shown;
    } else if (e.type == layer::EntryType::kHardlink) {
      auto target = ino_by_path.find(e.link_target);
      if (target == ino_by_path.end()) {
        return Corrupt("layer " + t->name_ + ": hard link '" + e.path + "' has no target");
      }
      ino = target->second;
    }
    parent.children.emplace_back(std::move(shown), ino);
  }
  // Link counts: names per inode for non-directories, 2 + subdirectories for directories.
  for (auto& n : t->nodes_) n.nlink = S_ISDIR(n.mode) ? 2 : 0;
  for (auto& n : t->nodes_) {
    if (!S_ISDIR(n.mode)) continue;
    for (auto& [cname, cino] : n.children) {
      Node& c = t->nodes_[cino - 1];
      if (S_ISDIR(c.mode))
        ++n.nlink;
      else
        ++c.nlink;
    }
  }
  for (auto& n : t->nodes_) {
    if (n.nlink == 0) n.nlink = 1;
    // A whiteout can shadow a real entry of the same name in this very layer (both members
    // present); overlay extraction keeps the later one, and so does the sorted unique list.
    std::stable_sort(n.children.begin(), n.children.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    auto last = std::unique(n.children.begin(), n.children.end(),
                            [](const auto& a, const auto& b) { return a.first == b.first; });
    n.children.erase(last, n.children.end());
  }
  return t;
}

Result<const LayerTree::Node*> LayerTree::NodeOf(uint64_t ino) const {
  if (ino == 0 || ino > nodes_.size()) return NotFound("no inode " + std::to_string(ino));
  return &nodes_[ino - 1];
}

Result<Attr> LayerTree::GetAttr(uint64_t ino) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  const auto& e = index_->entries[n->entry];
  Attr a;
  a.ino = ino;
  a.mode = n->mode;
  a.nlink = n->nlink;
  a.uid = e.uid;
  a.gid = e.gid;
  a.mtime_sec = e.mtime_sec;
  a.mtime_nsec = e.mtime_nsec;
  if (n->whiteout) return a;
  switch (e.type) {
    case layer::EntryType::kFile:
    case layer::EntryType::kHardlink:
      a.size = e.size;
      break;
    case layer::EntryType::kSymlink:
      a.size = e.link_target.size();
      break;
    case layer::EntryType::kDirectory:
      a.size = 4096;
      break;
    case layer::EntryType::kCharDevice:
    case layer::EntryType::kBlockDevice:
      a.rdev_major = e.dev_major;
      a.rdev_minor = e.dev_minor;
      break;
    default:
      break;
  }
  a.blocks = (a.size + 511) / 512;
  return a;
}

Result<uint64_t> LayerTree::Lookup(uint64_t parent, std::string_view name) {
  const Node* n = IPFLY_TRY(NodeOf(parent));
  if (!S_ISDIR(n->mode)) return InvalidArgument("not a directory");
  auto it = std::lower_bound(n->children.begin(), n->children.end(), name,
                             [](const auto& c, std::string_view v) { return c.first < v; });
  if (it == n->children.end() || it->first != name) return NotFound(std::string(name));
  return it->second;
}

Result<std::vector<DirEntry>> LayerTree::ReadDir(uint64_t ino) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  if (!S_ISDIR(n->mode)) return InvalidArgument("not a directory");
  std::vector<DirEntry> out;
  out.reserve(n->children.size());
  for (const auto& [cname, cino] : n->children) {
    out.push_back({cname, cino, nodes_[cino - 1].mode});
  }
  return out;
}

Result<std::string> LayerTree::ReadLink(uint64_t ino) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  if (!S_ISLNK(n->mode)) return InvalidArgument("not a symlink");
  return index_->entries[n->entry].link_target;
}

Result<std::vector<std::string>> LayerTree::ListXattr(uint64_t ino) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  std::vector<std::string> out;
  if (n->whiteout) return out;
  for (const auto& [k, v] : index_->entries[n->entry].xattrs) out.push_back(k);
  if (n->opaque && !index_->entries[n->entry].xattrs.count(std::string(kOpaqueXattr))) {
    out.emplace_back(kOpaqueXattr);
  }
  return out;
}

Result<std::string> LayerTree::GetXattr(uint64_t ino, std::string_view name) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  if (n->opaque && name == kOpaqueXattr) return std::string("y");
  if (n->whiteout) return NotFound(std::string(name));
  const auto& x = index_->entries[n->entry].xattrs;
  auto it = x.find(std::string(name));
  if (it == x.end()) return NotFound(std::string(name));
  return it->second;
}

Result<size_t> LayerTree::Read(uint64_t ino, uint64_t off, MutableByteView out) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  if (!S_ISREG(n->mode) || n->whiteout) return InvalidArgument("not a regular file");
  const auto& e = index_->entries[n->entry];
  if (off >= e.size || out.empty()) return size_t{0};
  size_t len = static_cast<size_t>(std::min<uint64_t>(out.size(), e.size - off));
  auto deadline = fetch::Clock::now() + timeout_;
  size_t done = 0;
  while (done < len) {
    auto r = reader_->Read(e.data_offset + off + done, out.subspan(done, len - done), deadline);
    if (!r.ok()) return std::move(r).error();
    if (*r == 0) return Corrupt("layer stream ended inside '" + e.path + "'");
    done += *r;
  }
  return len;
}

Status LayerTree::ReadLocal(uint64_t ino, uint64_t off, size_t len, const SendLocal& send) {
  const Node* n = IPFLY_TRY(NodeOf(ino));
  if (!S_ISREG(n->mode) || n->whiteout) return InvalidArgument("not a regular file");
  const auto& e = index_->entries[n->entry];
  if (off >= e.size) return NotFound("at or past the end of the file");
  const size_t count = static_cast<size_t>(std::min<uint64_t>(len, e.size - off));
  if (count == 0) return NotFound("empty range");
  return reader_->WithCachedRange(e.data_offset + off, count,
                                  [&](int fd, uint64_t fd_off) { return send(fd, fd_off, count); });
}

std::string LayerTree::Describe(uint64_t ino) {
  auto n = NodeOf(ino);
  return name_ + " /" + (n.ok() ? (*n)->display_path : "<inode " + std::to_string(ino) + ">");
}

}  // namespace ipfly::fusefs
