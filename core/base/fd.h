// UniqueFd: sole owner of a POSIX file descriptor, closed on destruction.
#pragma once

#include <unistd.h>

#include <utility>

namespace ipfly {

// Owns one file descriptor (or none: -1) and closes it when destroyed or reset. Move-only; a
// moved-from UniqueFd holds -1. Not thread-safe: one owner at a time, like the fd itself.
//
//   UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
//   if (!fd.valid()) return ErrnoError("open " + path, errno);
//
// Constructing from a failed open() (-1) keeps errno untouched, so callers can still report it.
class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (a negative value means "no fd").
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  // The fd, still owned by this object; -1 if none.
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing: the caller now owns the returned fd (-1 if none).
  [[nodiscard]] int Release() { return std::exchange(fd_, -1); }

  // Closes the current fd (if any, ignoring close errors) and takes ownership of `fd`.
  void Reset(int fd = -1) {
    int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

  // Closes now and returns close()'s result (0, or -1 with errno set; 0 if there was no fd).
  // Writers must check it: close can report delayed write errors on some file systems.
  int Close() {
    int old = std::exchange(fd_, -1);
    return old >= 0 ? ::close(old) : 0;
  }

 private:
  int fd_ = -1;
};

}  // namespace ipfly
