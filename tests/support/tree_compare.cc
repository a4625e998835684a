#include "tests/support/tree_compare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>

#include "core/base/sha256.h"

namespace ipfly::testing {
namespace {

namespace fs = std::filesystem;

std::string FileHash(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open failed: " + std::to_string(errno) + ">";
  Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      ::close(fd);
      return "<read failed: errno " + std::to_string(errno) + ">";
    }
    if (n == 0) break;
    h.Update(ByteView(buf.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  auto d = h.Final();
  return HexEncode(ByteView(d.data(), d.size()));
}

std::map<std::string, std::string> Xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  char names[65536];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
  for (ssize_t i = 0; i < n;) {
    std::string name(names + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (!name.starts_with("user.") && !name.starts_with("trusted.overlay.")) continue;
    char val[65536];
    ssize_t v = ::lgetxattr(path.c_str(), name.c_str(), val, sizeof val);
    out[name] = v >= 0 ? std::string(val, static_cast<size_t>(v)) : "<error>";
  }
  return out;
}

struct Info {
  struct stat st;
  std::string link;
};

std::map<std::string, Info> Walk(const std::string& root) {
  std::map<std::string, Info> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    Info i{};
    std::string p = it->path().string();
    ::lstat(p.c_str(), &i.st);
    if (S_ISLNK(i.st.st_mode)) {
      char buf[8192];
      ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
      i.link.assign(buf, n > 0 ? static_cast<size_t>(n) : 0);
    }
    out[p.substr(root.size())] = i;
  }
  return out;
}

}  // namespace

std::vector<std::string> CompareTrees(const std::string& expected, const std::string& actual,
                                      const CompareOptions& o) {
  std::vector<std::string> diffs;
  auto add = [&](std::string d) {
    if (diffs.size() < o.max_differences) diffs.push_back(std::move(d));
  };
  auto a = Walk(expected), b = Walk(actual);
  std::map<ino_t, std::string> ino_a;
  std::map<ino_t, std::string> ino_b;
  for (const auto& [path, ia] : a) {
    auto it = b.find(path);
    if (it == b.end()) {
      add("missing: " + path);
      continue;
    }
    const auto& sa = ia.st;
    const auto& sb = it->second.st;
    if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
      add("type differs: " + path);
      continue;
    }
    if ((sa.st_mode & 07777) != (sb.st_mode & 07777)) add("mode differs: " + path);
    if (sa.st_uid != sb.st_uid || sa.st_gid != sb.st_gid) add("owner differs: " + path);
    bool dir = S_ISDIR(sa.st_mode);
    if (o.compare_mtime && !S_ISLNK(sa.st_mode) && (!dir || o.compare_dir_mtime) &&
        (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec || sa.st_mtim.tv_nsec != sb.st_mtim.tv_nsec)) {
      add("mtime differs: " + path + " " + std::to_string(sa.st_mtim.tv_sec) + "." +
          std::to_string(sa.st_mtim.tv_nsec) + " vs " + std::to_string(sb.st_mtim.tv_sec) + "." +
          std::to_string(sb.st_mtim.tv_nsec));
    }
    if (S_ISREG(sa.st_mode)) {
      if (sa.st_size != sb.st_size)
        add("size differs: " + path);
      else if (FileHash(expected + path) != FileHash(actual + path))
        add("content differs: " + path);
      if (sa.st_nlink != sb.st_nlink) add("nlink differs: " + path);
      // Hard links: the first name seen for an inode must map to the same inode on both sides.
      auto [pa, fresh_a] = ino_a.emplace(sa.st_ino, path);
      auto [pb, fresh_b] = ino_b.emplace(sb.st_ino, path);
      if (pa->second != pb->second) add("hard-link structure differs: " + path);
    }
    if (S_ISLNK(sa.st_mode) && ia.link != it->second.link) add("symlink target differs: " + path);
    if ((S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) && sa.st_rdev != sb.st_rdev) {
      add("device numbers differ: " + path);
    }
    if (o.compare_xattrs && !S_ISLNK(sa.st_mode) &&
        Xattrs(expected + path) != Xattrs(actual + path)) {
      add("xattrs differ: " + path);
    }
  }
  for (const auto& [path, ib] : b) {
    if (!a.count(path)) add("unexpected: " + path);
  }
  return diffs;
}

void ConvertWhiteouts(const std::string& root) {
  std::vector<fs::path> found;
  for (auto& e : fs::recursive_directory_iterator(root)) {
    if (e.path().filename().string().starts_with(".wh.")) found.push_back(e.path());
  }
  for (const auto& p : found) {
    std::string name = p.filename().string();
    struct stat st {};
    ::lstat(p.c_str(), &st);
    if (name == ".wh..wh..opq") {
      fs::remove(p);
      ::lsetxattr(p.parent_path().c_str(), "trusted.overlay.opaque", "y", 1, 0);
      continue;
    }
    fs::path target = p.parent_path() / name.substr(4);
    fs::remove(p);
    ::mknod(target.c_str(), S_IFCHR | 0, makedev(0, 0));
    ::lchown(target.c_str(), st.st_uid, st.st_gid);
    struct timespec ts[2] = {st.st_mtim, st.st_mtim};
    ::utimensat(AT_FDCWD, target.c_str(), ts, AT_SYMLINK_NOFOLLOW);
  }
}

}  // namespace ipfly::testing
