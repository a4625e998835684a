// Shared pieces of the ipfly CLI commands: global options, the environment (config, store,
// fetcher, reader), error reporting, progress output.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/log.h"
#include "core/base/result.h"
#include "core/multiformats/cid.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/unixfs_reader.h"

namespace ipfly::cli {

namespace fs = std::filesystem;
using fetch::Deadline;
using mf::Cid;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Options every subcommand accepts.
struct GlobalOptions {
  std::string config_path;
  std::string store_dir;
  std::vector<std::string> sources;
  std::string timeout;  // "30s", "500ms", "2m"; empty = none for streaming commands
  std::string log_level;
};

// A failure to report: message + exit code.
struct CliError {
  int code;
  std::string message;
};

inline CliError FromError(const Error& e) {
  int code = (e.code() == Errc::kInvalidArgument) ? kExitUsage : kExitFailure;
  return {code, e.message()};
}

inline Result<std::chrono::milliseconds> ParseDuration(std::string_view s) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
    v = v * 10 + (s[i++] - '0');
  std::string_view unit = s.substr(i);
  if (i == 0) return InvalidArgument("duration '" + std::string(s) + "' is not a number");
  if (unit == "ms") return std::chrono::milliseconds(v);
  if (unit == "s" || unit.empty()) return std::chrono::milliseconds(v * 1000);
  if (unit == "m") return std::chrono::milliseconds(v * 60'000);
  if (unit == "h") return std::chrono::milliseconds(v * 3'600'000);
  return InvalidArgument("duration '" + std::string(s) + "': unit must be ms, s, m or h");
}

// Everything a command needs: the resolved config, the embedded store and the fetcher chain.
class Env {
 public:
  static Result<std::unique_ptr<Env>> Make(const GlobalOptions& g) {
    auto env = std::unique_ptr<Env>(new Env);
    Config cfg = Config::Defaults();
    std::string path = g.config_path;
    if (path.empty() && fs::exists("/etc/ipfly/config.toml") && geteuid() == 0) {
      path = "/etc/ipfly/config.toml";
    }
    if (!path.empty()) cfg = IPFLY_TRY(Config::Load(path));
    if (!g.store_dir.empty()) {
      cfg.store_dir = g.store_dir;
      if (g.config_path.empty()) cfg.cache_dir.clear();
    }
    if (cfg.cache_dir.empty()) cfg.cache_dir = cfg.store_dir + "/cache";
    if (!g.sources.empty()) {
      cfg.sources.clear();
      for (const auto& s : g.sources) cfg.sources.push_back(IPFLY_TRY(SourceSpec::Parse(s)));
    }
    if (!g.log_level.empty()) cfg.log_level = g.log_level;
    InitLogging(cfg.log_level);
    if (!g.timeout.empty()) {
      auto d = IPFLY_TRY(ParseDuration(g.timeout));
      env->timeout_ = d;
      cfg.fetch.timeout_ms = static_cast<uint32_t>(d.count());
      cfg.fetch.block_timeout_ms =
          std::min<uint32_t>(cfg.fetch.block_timeout_ms, static_cast<uint32_t>(d.count()));
    }
    env->config_ = cfg;
    return env;
  }

  const Config& config() const { return config_; }

  // The whole read chain: embedded store → cache → sources. Opened on first use.
  Result<fetch::Fetcher*> fetcher() {
    if (!fetcher_) fetcher_ = IPFLY_TRY(fetch::MakeFetcher(config_));
    return fetcher_.get();
  }
  Result<fetch::BlockStore*> store() {
    auto* f = IPFLY_TRY(fetcher());
    return f->store();
  }
  Result<fetch::UnixfsReader*> reader() {
    if (!reader_) {
      auto* f = IPFLY_TRY(fetcher());
      reader_ = std::make_unique<fetch::UnixfsReader>(
          f, fetch::UnixfsReaderOptions::FromConfig(config_.fetch));
    }
    return reader_.get();
  }

  // The deadline for a whole command: --timeout if given, otherwise none (each block fetch is
  // still bounded by fetch.block_timeout_ms and the retry budget).
  Deadline deadline() const {
    if (timeout_) return fetch::Clock::now() + *timeout_;
    return Deadline::max();
  }

 private:
  Env() = default;
  Config config_;
  std::optional<std::chrono::milliseconds> timeout_;
  std::unique_ptr<fetch::Fetcher> fetcher_;
  std::unique_ptr<fetch::UnixfsReader> reader_;
};

// Progress on stderr, only when stderr is a terminal; redrawn at most 5 times a second.
class Progress {
 public:
  Progress(std::string what, uint64_t total) : what_(std::move(what)), total_(total) {
    enabled_ = isatty(STDERR_FILENO);
    start_ = std::chrono::steady_clock::now();
  }
  ~Progress() {
    if (enabled_ && drawn_) std::fprintf(stderr, "\r\033[K");
  }
  void Add(uint64_t n) {
    done_ += n;
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    drawn_ = true;
    double secs = std::chrono::duration<double>(now - start_).count();
    double mbps = secs > 0 ? done_ / secs / 1e6 : 0;
    if (total_) {
      std::fprintf(stderr, "\r\033[K%s %.1f / %.1f MB (%.0f%%) %.1f MB/s", what_.c_str(),
                   done_ / 1e6, total_ / 1e6, 100.0 * done_ / total_, mbps);
    } else {
      std::fprintf(stderr, "\r\033[K%s %.1f MB %.1f MB/s", what_.c_str(), done_ / 1e6, mbps);
    }
  }

 private:
  std::string what_;
  uint64_t total_;
  uint64_t done_ = 0;
  bool enabled_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

inline Status WriteAll(int fd, ByteView data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", errno);
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return OkStatus();
}

inline Result<Cid> ParseCidArg(const std::string& s) {
  auto c = Cid::Parse(s);
  if (!c.ok()) return InvalidArgument(c.error().message());
  return c;
}

}  // namespace ipfly::cli
