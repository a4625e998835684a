// Test helpers: run a command and capture its output; start and stop background daemons by PID;
// temporary directories; deterministic pseudo-random files.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ipfly::testing {

struct CommandResult {
  int exit_code = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

// Runs argv[0] (PATH lookup) with the given arguments, stdin from /dev/null, and waits for it
// (killing it with SIGKILL after `timeout`). Never throws.
CommandResult RunCmd(const std::vector<std::string>& argv,
                     std::chrono::seconds timeout = std::chrono::seconds(300));
// Runs `bash -c script`.
CommandResult Sh(const std::string& script,
                 std::chrono::seconds timeout = std::chrono::seconds(300));

// Starts argv in the background with stdout+stderr appended to `log_path`; returns its PID
// (-1 on failure). Stop it with StopPid.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log_path);
// Polls `pred` every 50 ms until it is true or `timeout` passes; returns the last value.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// A temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `size` deterministic pseudo-random bytes (xorshift seeded by `seed`) to `path`.
void WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed);
std::string ReadFile(const std::string& path);
// A free TCP port on 127.0.0.1 (bind to port 0, read it back, close).
int FreePort();
// SIGTERM, wait up to 5 s, then SIGKILL; reaps if it is our child.
void StopPid(pid_t pid);

}  // namespace ipfly::testing
