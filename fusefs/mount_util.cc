#include "fusefs/mount_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace ipfly::fusefs {
namespace {

constexpr char kFuseCtlDir[] = "/sys/fs/fuse/connections";

// mountinfo escapes space, tab, newline and backslash as \ooo (octal).
std::string UnescapeMountField(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Runs argv (PATH lookup) with stdin/stdout on /dev/null and returns its exit status (-1 if it
// could not be started or did not exit normally).
int RunQuiet(const std::vector<std::string>& argv) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::optional<MountEntry> FindMount(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::optional<MountEntry> found;
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    std::istringstream fields(line);
    std::string id, parent, devs, root, mount_point;
    if (!(fields >> id >> parent >> devs >> root >> mount_point)) continue;
    if (UnescapeMountField(mount_point) != path) continue;
    std::string field;
    while (fields >> field && field != "-") {
    }
    std::string fstype;
    fields >> fstype;
    unsigned major = 0, minor = 0;
    if (std::sscanf(devs.c_str(), "%u:%u", &major, &minor) != 2) continue;
    // Later lines are mounted later; the last match is the one on top.
    found = MountEntry{UnescapeMountField(mount_point), fstype, major, minor};
  }
  return found;
}

Status LazyUnmount(const std::string& path) {
  if (geteuid() == 0) {
    if (umount2(path.c_str(), MNT_DETACH) != 0) return ErrnoError("umount2 " + path, errno);
    return OkStatus();
  }
  int rc = RunQuiet({"fusermount3", "-u", "-z", "--", path});
  if (rc != 0) {
    return IoError("fusermount3 -u -z " + path + " failed (exit " + std::to_string(rc) + ")");
  }
  return OkStatus();
}

Status AbortFuseConnection(unsigned dev_major, unsigned dev_minor) {
  // fusectl names a connection by the kernel's internal dev_t: MKDEV(major, minor) with a 20-bit
  // minor (fs/fuse/control.c prints fc->dev with %u).
  const uint64_t kernel_dev = (uint64_t{dev_major} << 20) | dev_minor;
  const std::string dir = std::string(kFuseCtlDir) + "/" + std::to_string(kernel_dev);
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 && geteuid() == 0) {
    // fusectl is usually mounted by systemd at boot; minimal systems and VMs may lack it.
    if (mount("fusectl", kFuseCtlDir, "fusectl", 0, nullptr) != 0 && errno != EBUSY) {
      return ErrnoError("mount fusectl at " + std::string(kFuseCtlDir), errno);
    }
  }
  const std::string abort_path = dir + "/abort";
  int fd = open(abort_path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open " + abort_path, errno);
  ssize_t n = write(fd, "1", 1);
  int err = errno;
  close(fd);
  if (n != 1) return ErrnoError("write " + abort_path, err);
  return OkStatus();
}

bool IsStaleMount(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0) return false;
  return errno == ENOTCONN || errno == ECONNABORTED;
}

}  // namespace ipfly::fusefs
