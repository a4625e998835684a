#include "cli/cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/image_commands.h"
#include "cli/layer_commands.h"
#include "cli/powergate_commands.h"
#include "cli/status_command.h"
#include "core/base/config.h"
#include "core/base/log.h"
#include "core/base/result.h"
#include "core/block.h"
#include "core/codec/car.h"
#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"
#include "core/multiformats/cid.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/fs_block_store.h"
#include "ipfs_fetch/kubo_rpc.h"
#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/unixfs_reader.h"

namespace ipfly::cli {
namespace {

// A sink that forwards blocks to several sinks (store, CAR file).
class TeeSink : public BlockSink {
 public:
  void Add(BlockSink* s) { sinks_.push_back(s); }
  bool empty() const { return sinks_.empty(); }
  Status Put(const Block& b) override {
    for (auto* s : sinks_) IPFLY_RETURN_IF_ERROR(s->Put(b));
    return OkStatus();
  }

 private:
  std::vector<BlockSink*> sinks_;
};

// Writes CAR sections to a temporary file; Finish() writes the final CAR (header with the roots
// known only at the end, then the sections) to `out`. Memory stays constant.
class CarSpool : public BlockSink {
 public:
  static Result<std::unique_ptr<CarSpool>> Create(const std::string& dir) {
    auto s = std::unique_ptr<CarSpool>(new CarSpool);
    std::string tmpl = dir + "/ipfly-car-XXXXXX";
    s->fd_ = mkstemp(tmpl.data());
    if (s->fd_ < 0) return ErrnoError("create temporary CAR in " + dir, errno);
    unlink(tmpl.c_str());
    return s;
  }
  ~CarSpool() override {
    if (fd_ >= 0) close(fd_);
  }
  Status Put(const Block& b) override {
    std::lock_guard lk(mu_);
    if (!seen_.insert(b.cid().multihash().bytes()).second) return OkStatus();  // dups=n
    return WriteAll(fd_, codec::EncodeCarSection(b.cid(), b.data()));
  }
  // Writes header(roots) + sections to `out_path` (tmp + rename).
  Status Finish(const std::vector<Cid>& roots, const std::string& out_path) {
    struct stat out_st {};
    if (::stat(out_path.c_str(), &out_st) == 0 && !S_ISREG(out_st.st_mode)) {
      // A device or FIFO (e.g. /dev/stdout): write in place, never rename over it.
      int out = ::open(out_path.c_str(), O_WRONLY | O_CLOEXEC);
      if (out < 0) return ErrnoError("open " + out_path, errno);
      auto s = CopyTo(out, roots);
      ::close(out);
      return s;
    }
    std::string tmp = out_path + ".ipfly-tmp";
    int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) return ErrnoError("create " + tmp, errno);
    auto st = CopyTo(out, roots);
    if (::close(out) != 0 && st.ok()) st = ErrnoError("close " + tmp, errno);
    if (st.ok() && ::rename(tmp.c_str(), out_path.c_str()) != 0) {
      st = ErrnoError("rename " + tmp, errno);
    }
    if (!st.ok()) ::unlink(tmp.c_str());
    return st;
  }

 private:
  CarSpool() = default;
  Status CopyTo(int out, const std::vector<Cid>& roots) {
    IPFLY_RETURN_IF_ERROR(WriteAll(out, codec::EncodeCarV1Header(roots)));
    off_t off = 0;
    struct stat st {};
    if (fstat(fd_, &st) != 0) return ErrnoError("stat temporary CAR", errno);
    while (off < st.st_size) {
      ssize_t n =
          copy_file_range(fd_, &off, out, nullptr, static_cast<size_t>(st.st_size - off), 0);
      if (n < 0 && (errno == EINVAL || errno == EXDEV || errno == EBADF || errno == ENOSYS)) {
        break;  // not a file-to-file copy (pipe, tty): copy by hand below
      }
      if (n < 0) return ErrnoError("copy CAR sections", errno);
      if (n == 0) break;
    }
    Bytes buf(1 << 20);
    while (off < st.st_size) {
      ssize_t n = ::pread(fd_, buf.data(), buf.size(), off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return ErrnoError("read temporary CAR", n < 0 ? errno : EIO);
      IPFLY_RETURN_IF_ERROR(WriteAll(out, ByteView(buf.data(), static_cast<size_t>(n))));
      off += n;
    }
    return OkStatus();
  }
  int fd_ = -1;
  std::mutex mu_;
  std::set<Bytes> seen_;
};

// ---- add -------------------------------------------------------------------------------------

struct AddOptions {
  std::vector<std::string> paths;
  std::string profile;
  bool only_hash = false;
  bool quiet = false;
  bool quieter = false;
  bool recursive = false;
  std::string car_out;
  std::string to;
};

std::optional<CliError> CmdAdd(const GlobalOptions& g, const AddOptions& o) {
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto& env = **env_r;
  auto profile =
      unixfs::ImportProfile::ByName(o.profile.empty() ? env.config().profile : o.profile);
  if (!profile.ok()) return CliError{kExitUsage, profile.error().message()};

  std::optional<SourceSpec> to;
  if (!o.to.empty()) {
    auto s = SourceSpec::Parse(o.to);
    if (!s.ok()) return CliError{kExitUsage, "--to: " + s.error().message()};
    if (s->kind != SourceSpec::Kind::kKubo) {
      return CliError{kExitUsage, "--to: only kubo=URL can receive blocks"};
    }
    to = *s;
  }
  for (const auto& p : o.paths) {
    std::error_code ec;
    auto st = fs::symlink_status(p, ec);
    if (ec) return CliError{kExitFailure, p + ": " + ec.message()};
    if (fs::is_directory(st) && !o.recursive) {
      return CliError{kExitUsage, p + " is a directory, use -r to add directories"};
    }
  }

  TeeSink sink;
  if (!o.only_hash) {
    auto store = env.store();
    if (!store.ok()) return FromError(store.error());
    sink.Add(*store);
  }
  std::unique_ptr<CarSpool> spool;
  if (!o.car_out.empty() || to) {
    std::string dir = o.car_out.empty() ? fs::temp_directory_path().string()
                                        : fs::absolute(o.car_out).parent_path().string();
    auto s = CarSpool::Create(dir);
    if (!s.ok()) return FromError(s.error());
    spool = std::move(*s);
    sink.Add(spool.get());
  }

  std::vector<Cid> roots;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t total_bytes = 0;
  for (const auto& p : o.paths) {
    auto r =
        unixfs::ImportTree(p, *profile, sink.empty() ? nullptr : &sink,
                           [&](const std::string& rel, const unixfs::ImportedNode& n) -> Status {
                             total_bytes += n.filesize;
                             if (o.quieter) return OkStatus();
                             if (o.quiet)
                               std::printf("%s\n", n.cid.ToString().c_str());
                             else
                               std::printf("added %s %s\n", n.cid.ToString().c_str(), rel.c_str());
                             return OkStatus();
                           });
    if (!r.ok()) return FromError(r.error().With(p));
    if (o.quieter) std::printf("%s\n", r->cid.ToString().c_str());
    roots.push_back(r->cid);
  }
  std::fflush(stdout);
  if (spool) {
    std::string car_path = o.car_out;
    std::string tmp_car;
    if (car_path.empty()) {
      tmp_car = (fs::temp_directory_path() / ("ipfly-upload-" + std::to_string(getpid()) + ".car"))
                    .string();
      car_path = tmp_car;
    }
    auto st = spool->Finish(roots, car_path);
    if (!st.ok()) return FromError(st.error());
    if (to) {
      fetch::KuboRpcClient kubo(to->url, nullptr);
      auto imp = kubo.DagImport(car_path, env.deadline());
      if (!tmp_car.empty()) ::unlink(tmp_car.c_str());
      if (!imp.ok()) return FromError(imp.error().With("--to " + to->url));
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  IPFLY_LOG_INFO("added {} bytes in {:.3f} s ({:.1f} MB/s)", total_bytes, secs,
                 secs > 0 ? total_bytes / secs / 1e6 : 0.0);
  return std::nullopt;
}

// ---- cat / get -------------------------------------------------------------------------------

struct CatOptions {
  std::string cid;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
  std::string output;
};

std::optional<CliError> CmdCat(const GlobalOptions& g, const CatOptions& o) {
  auto cid = ParseCidArg(o.cid);
  if (!cid.ok()) return FromError(cid.error());
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto& env = **env_r;
  auto reader = env.reader();
  if (!reader.ok()) return FromError(reader.error());
  Deadline dl = env.deadline();
  auto size = (*reader)->Size(*cid, dl);
  if (!size.ok()) return FromError(size.error());
  uint64_t len = o.length.value_or(UINT64_MAX);
  if (o.offset >= *size) len = 0;
  len = std::min<uint64_t>(len, *size - std::min(o.offset, *size));
  Progress progress("cat", len);
  auto st = (*reader)->Stream(
      *cid, o.offset, len,
      [&](ByteView chunk) -> Status {
        progress.Add(chunk.size());
        return WriteAll(STDOUT_FILENO, chunk);
      },
      dl);
  if (!st.ok()) return FromError(st.error());
  return std::nullopt;
}

// Writes the UnixFS object at `cid` to `path`: a file, a directory tree or a symlink.
Status GetTo(Env& env, const Cid& cid, const std::string& path, Deadline dl, Progress& progress,
             int depth = 0) {
  if (depth > 64) return Corrupt("directory tree deeper than 64 levels at " + path);
  auto* fetcher = IPFLY_TRY(env.fetcher());
  auto* reader = IPFLY_TRY(env.reader());
  if (cid.codec() == mf::kCodecDagPb) {
    auto block = IPFLY_TRY(fetcher->Get(cid, dl));
    auto node = IPFLY_TRY(codec::DecodeDagPb(block.data()));
    if (!node.data) return Corrupt(cid.ToString() + ": dag-pb node without UnixFS data");
    auto ufs = IPFLY_TRY(codec::DecodeUnixfs(*node.data));
    if (ufs.type == codec::UnixfsType::kDirectory) {
      if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
        return ErrnoError("mkdir " + path, errno);
      std::set<std::string> names;
      for (const auto& l : node.links) {
        std::string n = l.name.value_or("");
        if (n.empty() || n == "." || n == ".." || n.find('/') != std::string::npos) {
          return Corrupt(cid.ToString() + ": unsafe directory entry name '" + n + "'");
        }
        if (!names.insert(n).second) continue;  // duplicates: the first one wins (spec)
        IPFLY_RETURN_IF_ERROR(GetTo(env, l.hash, path + "/" + n, dl, progress, depth + 1));
      }
      return OkStatus();
    }
    if (ufs.type == codec::UnixfsType::kSymlink) {
      std::string target(ufs.data ? AsString(*ufs.data) : "");
      if (::symlink(target.c_str(), path.c_str()) != 0) return ErrnoError("symlink " + path, errno);
      return OkStatus();
    }
    if (ufs.type == codec::UnixfsType::kHamtShard) {
      return Unsupported(cid.ToString() + ": HAMT-sharded directories are not supported yet");
    }
  }
  // A file: stream into path.tmp, rename when complete (never a partial file under the name).
  // Outputs that exist and are not regular files (/dev/null, a FIFO, a terminal) and "-"
  // (stdout) are written in place: renaming over them would replace the device.
  struct stat path_st {};
  if (path == "-" || (::stat(path.c_str(), &path_st) == 0 && !S_ISREG(path_st.st_mode))) {
    int out = path == "-" ? STDOUT_FILENO : ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (out < 0) return ErrnoError("open " + path, errno);
    auto s = reader->Stream(
        cid, 0, UINT64_MAX,
        [&](ByteView chunk) -> Status {
          progress.Add(chunk.size());
          return WriteAll(out, chunk);
        },
        dl);
    if (out != STDOUT_FILENO) ::close(out);
    return s;
  }
  std::string tmp = path + ".ipfly-tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create " + tmp, errno);
  auto st = reader->Stream(
      cid, 0, UINT64_MAX,
      [&](ByteView chunk) -> Status {
        progress.Add(chunk.size());
        return WriteAll(fd, chunk);
      },
      dl);
  if (::close(fd) != 0 && st.ok()) st = ErrnoError("close " + tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("rename " + tmp, errno);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

std::optional<CliError> CmdGet(const GlobalOptions& g, const CatOptions& o) {
  auto cid = ParseCidArg(o.cid);
  if (!cid.ok()) return FromError(cid.error());
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  std::string out = o.output.empty() ? o.cid : o.output;
  Progress progress("get", 0);
  auto st = GetTo(**env_r, *cid, out, (*env_r)->deadline(), progress);
  if (!st.ok()) return FromError(st.error());
  return std::nullopt;
}

// ---- block -----------------------------------------------------------------------------------

std::optional<CliError> CmdBlock(const GlobalOptions& g, const std::string& cid_s, bool stat) {
  auto cid = ParseCidArg(cid_s);
  if (!cid.ok()) return FromError(cid.error());
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto f = (*env_r)->fetcher();
  if (!f.ok()) return FromError(f.error());
  auto b = (*f)->Get(*cid, (*env_r)->deadline());
  if (!b.ok()) return FromError(b.error());
  if (stat) {
    std::printf("Key: %s\nSize: %zu\nCodec: %s\n", cid->ToString().c_str(), b->size(),
                mf::CodecName(cid->codec()).c_str());
    return std::nullopt;
  }
  auto st = WriteAll(STDOUT_FILENO, b->data());
  if (!st.ok()) return FromError(st.error());
  return std::nullopt;
}

// ---- car -------------------------------------------------------------------------------------

// Writes the whole DAG under `root` (DFS, each block once) as a CARv1.
std::optional<CliError> CmdCarExport(const GlobalOptions& g, const std::string& cid_s,
                                     const std::string& out) {
  auto cid = ParseCidArg(cid_s);
  if (!cid.ok()) return FromError(cid.error());
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto& env = **env_r;
  auto f = env.fetcher();
  if (!f.ok()) return FromError(f.error());
  int fd = STDOUT_FILENO;
  std::string tmp;
  struct stat out_st {};
  bool special =
      !out.empty() && out != "-" && ::stat(out.c_str(), &out_st) == 0 && !S_ISREG(out_st.st_mode);
  if (special) {
    fd = ::open(out.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return FromError(ErrnoError("open " + out, errno));
  } else if (!out.empty() && out != "-") {
    tmp = out + ".ipfly-tmp";
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return FromError(ErrnoError("create " + tmp, errno));
  }
  Deadline dl = env.deadline();
  Progress progress("export", 0);
  std::set<Bytes> seen;
  std::function<Status(const Cid&, int)> walk = [&](const Cid& c, int depth) -> Status {
    if (depth > 64) return Corrupt("DAG deeper than 64 levels");
    if (c.is_identity()) return OkStatus();  // never stored in CARs
    if (!seen.insert(c.multihash().bytes()).second) return OkStatus();
    auto b = IPFLY_TRY((*f)->Get(c, dl));
    IPFLY_RETURN_IF_ERROR(WriteAll(fd, codec::EncodeCarSection(c, b.data())));
    progress.Add(b.size());
    if (c.codec() == mf::kCodecDagPb) {
      auto node = IPFLY_TRY(codec::DecodeDagPb(b.data()));
      for (const auto& l : node.links) IPFLY_RETURN_IF_ERROR(walk(l.hash, depth + 1));
    } else if (c.codec() != mf::kCodecRaw) {
      return Unsupported("car export: cannot walk links of codec " + mf::CodecName(c.codec()));
    }
    return OkStatus();
  };
  auto st = WriteAll(fd, codec::EncodeCarV1Header({*cid}));
  if (st.ok()) st = walk(*cid, 0);
  if (special) {
    ::close(fd);
  } else if (fd != STDOUT_FILENO) {
    if (::close(fd) != 0 && st.ok()) st = ErrnoError("close " + tmp, errno);
    if (st.ok() && ::rename(tmp.c_str(), out.c_str()) != 0) st = ErrnoError("rename " + tmp, errno);
    if (!st.ok()) ::unlink(tmp.c_str());
  }
  if (!st.ok()) return FromError(st.error());
  return std::nullopt;
}

std::optional<CliError> CmdCarImport(const GlobalOptions& g,
                                     const std::vector<std::string>& files) {
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto store = (*env_r)->store();
  if (!store.ok()) return FromError(store.error());
  for (const auto& path : files) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FromError(ErrnoError("open " + path, errno));
    std::vector<Cid> roots;
    uint64_t blocks = 0, bytes = 0;
    codec::CarParser parser(
        [&](const codec::CarHeader& h) -> Status {
          roots = h.roots;
          return OkStatus();
        },
        [&](Cid c, Bytes data) -> Status {
          auto b = Block::Verify(c, std::move(data));
          if (!b.ok()) return b.error();
          ++blocks;
          bytes += b->size();
          return (*store)->Put(*b);
        });
    std::vector<uint8_t> buf(1 << 20);
    Status st;
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        st = ErrnoError("read " + path, errno);
        break;
      }
      if (n == 0) {
        st = parser.Finish();
        break;
      }
      st = parser.Feed(ByteView(buf.data(), static_cast<size_t>(n)));
      if (!st.ok()) break;
    }
    ::close(fd);
    if (!st.ok()) return FromError(st.error().With(path));
    for (const auto& r : roots) std::printf("root %s\n", r.ToString().c_str());
    std::fprintf(stderr, "imported %llu blocks (%llu bytes) from %s\n",
                 static_cast<unsigned long long>(blocks), static_cast<unsigned long long>(bytes),
                 path.c_str());
  }
  return std::nullopt;
}

// ---- cid -------------------------------------------------------------------------------------

std::optional<CliError> CmdCidInspect(const std::string& s) {
  auto cid = ParseCidArg(s);
  if (!cid.ok()) return FromError(cid.error());
  const auto& mh = cid->multihash();
  std::printf("CID:       %s\n", cid->ToString().c_str());
  std::printf("Version:   %d\n", cid->version());
  std::printf("Codec:     %s (0x%llx)\n", mf::CodecName(cid->codec()).c_str(),
              static_cast<unsigned long long>(cid->codec()));
  std::printf("Multihash: %s (0x%llx), %zu-byte digest\n",
              mh.is_identity() ? "identity" : "sha2-256",
              static_cast<unsigned long long>(mh.code()), mh.digest().size());
  std::printf("Digest:    %s\n", HexEncode(mh.digest()).c_str());
  if (auto v0 = cid->ToV0(); v0.ok()) std::printf("CIDv0:     %s\n", v0->ToString().c_str());
  std::printf("CIDv1:     %s\n", cid->ToV1().ToString().c_str());
  return std::nullopt;
}

std::optional<CliError> CmdCidConvert(const std::string& s, const std::string& to,
                                      const std::string& base) {
  auto cid = ParseCidArg(s);
  if (!cid.ok()) return FromError(cid.error());
  if (to == "v0") {
    auto v0 = cid->ToV0();
    if (!v0.ok()) return CliError{kExitUsage, v0.error().message()};
    std::printf("%s\n", v0->ToString().c_str());
    return std::nullopt;
  }
  if (to != "v1") return CliError{kExitUsage, "--to must be v0 or v1"};
  auto b = mf::MultibaseFromName(base);
  if (!b.ok()) return CliError{kExitUsage, b.error().message()};
  std::printf("%s\n", cid->ToV1().ToString(*b).c_str());
  return std::nullopt;
}

void AddGlobalOptions(CLI::App* app, GlobalOptions* g) {
  app->add_option("--config", g->config_path,
                  "TOML config file (default /etc/ipfly/config.toml for root)");
  app->add_option("--store", g->store_dir, "Embedded block store directory");
  app->add_option("--source", g->sources,
                  "Block source KIND=URL, KIND gateway or kubo; repeatable, tried in order");
  app->add_option("--timeout", g->timeout, "Deadline for the whole command, e.g. 30s, 500ms");
  app->add_option("--log-level", g->log_level, "trace, debug, info, warn, error, off");
}

}  // namespace

int RunCli(int argc, char** argv) {
  CLI::App app{"ipfly: run container images from IPFS — content tools"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ipfly 0.1.0");
  GlobalOptions g;
  std::optional<CliError> err;

  auto* add =
      app.add_subcommand("add", "Import files into the embedded store (Kubo-compatible CIDs)");
  AddOptions ao;
  add->add_option("paths", ao.paths, "Files or directories (with -r)")->required();
  add->add_option("--profile", ao.profile, "kubo-v1 (default) | kubo-v0 | unixfs-v1-2025");
  add->add_flag("-n,--only-hash", ao.only_hash, "Only compute CIDs, store nothing");
  add->add_flag("-q,--quiet", ao.quiet, "Print only CIDs, one per line");
  add->add_flag("-Q,--quieter", ao.quieter, "Print only the root CIDs");
  add->add_flag("-r,--recursive", ao.recursive, "Add directories recursively");
  add->add_option("--car", ao.car_out, "Also write the DAG(s) as a CARv1 file");
  add->add_option("--to", ao.to, "Also import into a Kubo node: kubo=URL");
  AddGlobalOptions(add, &g);
  add->callback([&] { err = CmdAdd(g, ao); });

  CatOptions co;
  auto* cat = app.add_subcommand("cat", "Write a UnixFS file (or a byte range of it) to stdout");
  cat->add_option("cid", co.cid, "CID of the file")->required();
  cat->add_option("--offset", co.offset, "First byte");
  cat->add_option("--length", co.length, "Number of bytes (default: to the end)");
  AddGlobalOptions(cat, &g);
  cat->callback([&] { err = CmdCat(g, co); });

  auto* get = app.add_subcommand("get", "Write a UnixFS file or directory tree to disk");
  get->add_option("cid", co.cid, "CID of the file or directory")->required();
  get->add_option("-o,--output", co.output, "Output path (default: the CID)");
  AddGlobalOptions(get, &g);
  get->callback([&] { err = CmdGet(g, co); });

  std::string block_cid;
  auto* block = app.add_subcommand("block", "Raw blocks");
  block->require_subcommand(1);
  auto* bget = block->add_subcommand("get", "Write one verified block to stdout");
  bget->add_option("cid", block_cid)->required();
  AddGlobalOptions(bget, &g);
  bget->callback([&] { err = CmdBlock(g, block_cid, false); });
  auto* bstat = block->add_subcommand("stat", "Print a block's CID and size");
  bstat->add_option("cid", block_cid)->required();
  AddGlobalOptions(bstat, &g);
  bstat->callback([&] { err = CmdBlock(g, block_cid, true); });

  auto* car = app.add_subcommand("car", "CAR archives");
  car->require_subcommand(1);
  std::string car_cid, car_out;
  std::vector<std::string> car_files;
  auto* cexp = car->add_subcommand("export", "Write the DAG under a CID as a CARv1");
  cexp->add_option("cid", car_cid)->required();
  cexp->add_option("-o,--output", car_out, "Output file (default stdout)");
  AddGlobalOptions(cexp, &g);
  cexp->callback([&] { err = CmdCarExport(g, car_cid, car_out); });
  auto* cimp = car->add_subcommand("import", "Verify and store every block of CARv1/v2 files");
  cimp->add_option("files", car_files)->required();
  AddGlobalOptions(cimp, &g);
  cimp->callback([&] { err = CmdCarImport(g, car_files); });

  auto* cidc = app.add_subcommand("cid", "Inspect and convert CIDs");
  cidc->require_subcommand(1);
  std::string cid_arg, cid_to = "v1", cid_base = "base32";
  auto* insp = cidc->add_subcommand("inspect", "Show a CID's parts");
  insp->add_option("cid", cid_arg)->required();
  insp->callback([&] { err = CmdCidInspect(cid_arg); });
  auto* conv = cidc->add_subcommand("convert", "Convert between CIDv0/v1 and multibases");
  conv->add_option("cid", cid_arg)->required();
  conv->add_option("--to", cid_to, "v0 or v1 (default v1)");
  conv->add_option("--base", cid_base, "base32 (default), base58btc, base16, base36");
  conv->callback([&] { err = CmdCidConvert(cid_arg, cid_to, cid_base); });

  IndexOptions io;
  auto* index = app.add_subcommand("index", "Build and store the layer index of a layer blob");
  index->add_option("blob", io.blob, "Layer blob file (tar, tar.gz, tar.zst) or its CID")
      ->required();
  index->add_option("--span", io.span, "Uncompressed distance between gzip checkpoints (512KiB)");
  AddGlobalOptions(index, &g);
  index->callback([&] { err = CmdIndex(g, io); });

  LsOptions lo;
  auto* ls = app.add_subcommand("ls", "List a layer like tar -tv, from its index");
  ls->add_option("index", lo.index_cid, "Index CID")->required();
  ls->add_option("path", lo.path, "Only this path (and what is under it)");
  AddGlobalOptions(ls, &g);
  ls->callback([&] { err = CmdLs(g, lo); });

  MountOptions mo;
  auto* mount = app.add_subcommand("mount", "Mount layers lazily through FUSE (foreground)");
  mount->add_option("args", mo.layers, "LAYER_CID... DIR")->required()->expected(2, -1);
  mount->add_option("--index", mo.indexes, "Index CID of each layer (else built now)");
  mount->add_flag("--overlay", mo.overlay, "Stack several layers as a read-only overlay");
  mount->add_flag("--prefetch", mo.prefetch, "Fetch whole layers in the background");
  AddGlobalOptions(mount, &g);
  mount->callback([&] { err = CmdMount(g, mo); });

  StatusOptions so;
  auto* status = app.add_subcommand("status", "Lazy layers of ipfly-snapshotter and fallbacks");
  status->add_option("--snapshotter", so.snapshotter,
                     "Metrics address of ipfly-snapshotter (default snapshotter.metrics_listen)");
  status->add_flag("--json", so.json, "Print the raw status document");
  status->add_flag("--all", so.all, "Also list ordinary snapshots");
  AddGlobalOptions(status, &g);
  status->callback([&] { err = CmdStatus(g, so); });

  SearchOptions sro;
  auto* search = app.add_subcommand("search", "Search an ipfly-registry (like docker search)");
  search->add_option("term", sro.term, "Substring of repository names")->required();
  search->add_option("--registry", sro.registry,
                     "Registry URL or HOST:PORT (default [registry] listen)");
  search->add_option("--limit", sro.limit, "Maximum number of results (1-100, default 25)");
  search->add_flag("--no-trunc", sro.no_trunc, "Do not truncate descriptions");
  AddGlobalOptions(search, &g);
  search->callback([&] { err = CmdSearch(g, sro); });

  PushOptions po;
  auto* push = app.add_subcommand("push", "Push an OCI image layout (dir or tar) to a registry");
  push->add_option("layout", po.layout, "OCI image layout directory or tar archive")->required();
  push->add_option("ref", po.ref, "REPO:TAG")->required();
  push->add_option("--registry", po.registry,
                   "Registry URL or HOST:PORT (default [registry] listen)");
  AddGlobalOptions(push, &g);
  push->callback([&] { err = CmdPush(g, po); });

  ImageExportOptions ieo;
  ImageImportOptions iio;
  auto* image = app.add_subcommand("image", "Images stored in IPFS (nerdctl / stargz format)");
  image->require_subcommand(1);
  auto* iexport = image->add_subcommand(
      "export", "Store a registry image in IPFS; prints the CID of its root descriptor");
  iexport->add_option("ref", ieo.ref, "REPO:TAG or REPO@DIGEST")->required();
  iexport->add_option("--registry", ieo.registry,
                      "ipfly-registry URL or HOST:PORT (default [registry] listen)");
  iexport->add_option("--to", ieo.to, "Also import the descriptor and manifests: kubo=URL");
  AddGlobalOptions(iexport, &g);
  iexport->callback([&] { err = CmdImageExport(g, ieo); });
  auto* iimport = image->add_subcommand(
      "import", "Push an image stored in IPFS (descriptor CID) to a registry");
  iimport->add_option("cid", iio.cid, "CID of the root descriptor")->required();
  iimport->add_option("--registry", iio.registry,
                      "Registry URL or HOST:PORT (default [registry] listen)");
  iimport->add_option("--tag", iio.tag, "REPO:TAG to push to")->required();
  AddGlobalOptions(iimport, &g);
  iimport->callback([&] { err = CmdImageImport(g, iio); });

  ArchiveOptions aro;
  ArchiveStatusOptions aso;
  auto* archive = app.add_subcommand(
      "archive", "Archive CIDs or an image's layers to Filecoin through Powergate");
  archive->add_option("targets", aro.targets, "CIDs, or REPO:TAG of an ipfly-registry image");
  archive->add_option("--registry", aro.registry,
                      "Registry URL or HOST:PORT for images (default [registry] listen)");
  archive->add_flag("--hot", aro.hot, "Keep the data in Powergate's hot storage as well");
  archive->add_flag("--wait", aro.wait, "Watch the jobs until they end");
  AddGlobalOptions(archive, &g);
  auto* astatus =
      archive->add_subcommand("status", "Hot/cold state, deals and jobs of archived CIDs");
  astatus->add_option("cids", aso.cids, "CIDs (default: all archived or thawed from here)");
  AddGlobalOptions(astatus, &g);
  astatus->callback([&] { err = CmdArchiveStatus(g, aso); });
  archive->callback([&] {
    if (archive->got_subcommand(astatus)) return;
    if (aro.targets.empty()) {
      err = CliError{kExitUsage, "archive: give CIDs or an image (or `archive status`)"};
      return;
    }
    err = CmdArchive(g, aro);
  });
  ThawOptions tho;
  auto* thaw = app.add_subcommand("thaw", "Retrieve cold (Filecoin-only) CIDs into hot storage");
  thaw->add_option("cids", tho.cids, "CIDs")->required();
  thaw->add_flag("--wait", tho.wait, "Watch the jobs until they end");
  AddGlobalOptions(thaw, &g);
  thaw->callback([&] { err = CmdThaw(g, tho); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (err) {
    std::fflush(stdout);
    std::fprintf(stderr, "ipfly: %s\n", err->message.c_str());
    return err->code;
  }
  return 0;
}

}  // namespace ipfly::cli
