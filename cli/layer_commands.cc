#include "cli/layer_commands.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <atomic>
#include <ctime>
#include <thread>

#include "core/base/digest.h"
#include "core/base/sha256.h"
#include "core/unixfs/importer.h"
#include "fusefs/fuse_fs.h"
#include "fusefs/layer_tree.h"
#include "layer/layer_index.h"
#include "layer/layer_reader.h"

namespace ipfly::cli {
namespace {

// Streams a blob (local file or CID) through `feed`; returns the blob's CID. A local file is
// also imported into the embedded store with the default profile.
Result<Cid> StreamBlob(Env& env, const std::string& blob,
                       const std::function<Status(ByteView)>& feed) {
  std::error_code ec;
  if (fs::is_regular_file(blob, ec)) {
    auto* store = IPFLY_TRY(env.store());
    auto profile = IPFLY_TRY(unixfs::ImportProfile::ByName(env.config().profile));
    unixfs::FileImporter imp(profile, store);
    int fd = ::open(blob.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open " + blob, errno);
    Progress progress("index", static_cast<uint64_t>(fs::file_size(blob, ec)));
    Bytes buf(1 << 20);
    Status st;
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        st = ErrnoError("read " + blob, errno);
        break;
      }
      if (n == 0) break;
      ByteView chunk(buf.data(), static_cast<size_t>(n));
      progress.Add(chunk.size());
      st = imp.Write(chunk);
      if (st.ok()) st = feed(chunk);
      if (!st.ok()) break;
    }
    ::close(fd);
    IPFLY_RETURN_IF_ERROR(st);
    auto node = IPFLY_TRY(imp.Finish());
    return node.cid;
  }
  auto cid = Cid::Parse(blob);
  if (!cid.ok()) {
    return InvalidArgument("'" + blob + "' is neither a file nor a CID (" + cid.error().message() +
                           ")");
  }
  auto* reader = IPFLY_TRY(env.reader());
  Progress progress("index", 0);
  IPFLY_RETURN_IF_ERROR(reader->Stream(
      *cid, 0, UINT64_MAX,
      [&](ByteView chunk) {
        progress.Add(chunk.size());
        return feed(chunk);
      },
      env.deadline()));
  return *cid;
}

}  // namespace

Result<std::shared_ptr<const layer::LayerIndex>> LoadIndex(Env& env, const Cid& index_cid) {
  auto* reader = IPFLY_TRY(env.reader());
  Bytes data;
  IPFLY_RETURN_IF_ERROR(reader->Stream(
      index_cid, 0, UINT64_MAX,
      [&](ByteView chunk) -> Status {
        if (data.size() + chunk.size() > (256u << 20)) return TooLarge("layer index over 256 MiB");
        data.insert(data.end(), chunk.begin(), chunk.end());
        return OkStatus();
      },
      env.deadline()));
  auto idx = layer::LayerIndex::Decode(data);
  if (!idx.ok()) return std::move(idx).error().With("index " + index_cid.ToString());
  return std::make_shared<const layer::LayerIndex>(std::move(*idx));
}

// Builds the index of `blob` and stores it; returns (index, index CID).
Result<std::pair<std::shared_ptr<const layer::LayerIndex>, Cid>> BuildAndStoreIndex(
    Env& env, const std::string& blob, uint64_t span) {
  layer::BuildOptions bo;
  bo.span = span;
  layer::LayerIndexBuilder builder(bo);
  Cid blob_cid = IPFLY_TRY(StreamBlob(env, blob, [&](ByteView c) { return builder.Feed(c); }));
  auto idx = builder.Finish();
  if (!idx.ok()) return std::move(idx).error().With("layer " + blob);
  idx->blob_cid = blob_cid;
  Bytes encoded = idx->Encode();
  auto* store = IPFLY_TRY(env.store());
  auto profile = IPFLY_TRY(unixfs::ImportProfile::ByName("kubo-v1"));
  auto node = IPFLY_TRY(unixfs::ImportBytes(encoded, profile, store));
  std::fprintf(stderr,
               "layer    %s\nblob     %s (%llu bytes, %s%s)\ncontent  %zu entries, %llu bytes "
               "uncompressed, %zu access points\nindex    %s (%zu bytes, %.2f%% of uncompressed)\n",
               idx->layer_digest->ToString().c_str(), blob_cid.ToString().c_str(),
               static_cast<unsigned long long>(idx->compressed_size),
               std::string(layer::CompressionName(idx->compression)).c_str(),
               idx->seekable ? "" : ", NOT seekable: will be fetched whole", idx->entries.size(),
               static_cast<unsigned long long>(idx->uncompressed_size), idx->points.size(),
               node.cid.ToString().c_str(), encoded.size(),
               idx->uncompressed_size ? 100.0 * encoded.size() / idx->uncompressed_size : 0.0);
  return std::make_pair(std::make_shared<const layer::LayerIndex>(std::move(*idx)), node.cid);
}

std::optional<CliError> CmdIndex(const GlobalOptions& g, const IndexOptions& o) {
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto span = ParseByteSize(o.span);
  if (!span.ok() || *span < 65536) return CliError{kExitUsage, "--span must be a size >= 64KiB"};
  auto r = BuildAndStoreIndex(**env_r, o.blob, *span);
  if (!r.ok()) return FromError(r.error());
  std::printf("%s\n", r->second.ToString().c_str());
  return std::nullopt;
}

namespace {

std::string ModeString(const layer::IndexEntry& e) {
  char s[11] = "----------";
  switch (e.type) {
    case layer::EntryType::kDirectory:
      s[0] = 'd';
      break;
    case layer::EntryType::kSymlink:
      s[0] = 'l';
      break;
    case layer::EntryType::kHardlink:
      s[0] = 'h';
      break;
    case layer::EntryType::kCharDevice:
      s[0] = 'c';
      break;
    case layer::EntryType::kBlockDevice:
      s[0] = 'b';
      break;
    case layer::EntryType::kFifo:
      s[0] = 'p';
      break;
    default:
      break;
  }
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if (e.mode & (0400 >> i)) s[1 + i] = rwx[i];
  }
  if (e.mode & 04000) s[3] = (e.mode & 0100) ? 's' : 'S';
  if (e.mode & 02000) s[6] = (e.mode & 0010) ? 's' : 'S';
  if (e.mode & 01000) s[9] = (e.mode & 0001) ? 't' : 'T';
  return s;
}

}  // namespace

std::optional<CliError> CmdLs(const GlobalOptions& g, const LsOptions& o) {
  auto cid = ParseCidArg(o.index_cid);
  if (!cid.ok()) return FromError(cid.error());
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  auto idx = LoadIndex(**env_r, *cid);
  if (!idx.ok()) return FromError(idx.error());
  std::string prefix = o.path;
  while (prefix.starts_with("/") || prefix.starts_with("./"))
    prefix.erase(0, prefix[0] == '/' ? 1 : 2);
  while (prefix.ends_with("/")) prefix.pop_back();
  bool found = prefix.empty();
  for (const auto& e : (*idx)->entries) {
    if (e.path.empty()) continue;
    if (!prefix.empty() && e.path != prefix && !e.path.starts_with(prefix + "/")) continue;
    found = true;
    char when[32];
    time_t t = static_cast<time_t>(e.mtime_sec);
    struct tm tmv {};
    gmtime_r(&t, &tmv);
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tmv);
    std::string size =
        (e.type == layer::EntryType::kCharDevice || e.type == layer::EntryType::kBlockDevice)
            ? std::to_string(e.dev_major) + "," + std::to_string(e.dev_minor)
            : std::to_string(e.size);
    std::string suffix;
    if (e.type == layer::EntryType::kSymlink) suffix = " -> " + e.link_target;
    if (e.type == layer::EntryType::kHardlink) suffix = " link to " + e.link_target;
    std::printf("%s %u/%u %10s %s %s%s%s\n", ModeString(e).c_str(), e.uid, e.gid, size.c_str(),
                when, e.path.c_str(), e.type == layer::EntryType::kDirectory ? "/" : "",
                suffix.c_str());
  }
  if (!found) return CliError{kExitFailure, "'" + o.path + "' is not in the layer"};
  return std::nullopt;
}

namespace {

// Removes private mount directories of ipfly processes that are gone (after a crash), cleaning
// the stale FUSE mounts they may hold.
void CleanStalePrivateMounts(const std::string& base) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(base, ec)) {
    std::string name = e.path().filename().string();
    pid_t pid = static_cast<pid_t>(std::atoll(name.c_str()));
    if (pid <= 0 || (::kill(pid, 0) == 0 || errno == EPERM)) continue;
    for (auto& l : fs::directory_iterator(e.path(), ec)) {
      (void)fusefs::FuseFs::CleanStaleMount(l.path().string());
    }
    (void)fusefs::FuseFs::CleanStaleMount(e.path().string());
    fs::remove_all(e.path(), ec);
  }
}

// Background fetch of a whole layer: every block of the blob into the cache, the blob's sha256
// checked against the layer digest, then every span decompressed into the span cache.
void Prefetch(Env& env, const Cid& blob, const layer::LayerIndex& idx, layer::LayerReader* reader,
              const std::atomic<bool>& stop) {
  auto r = env.reader();
  if (!r.ok()) return;
  Sha256 h;
  auto st = (*r)->Stream(
      blob, 0, UINT64_MAX,
      [&](ByteView c) -> Status {
        if (stop) return Error(Errc::kCancelled, "stopping");
        h.Update(c);
        return OkStatus();
      },
      Deadline::max());
  if (!st.ok()) {
    if (!stop) IPFLY_LOG_ERROR("prefetch of {} failed: {}", blob.ToString(), st.error().ToString());
    return;
  }
  auto got = Digest::FromSha256(h.Final());
  if (idx.layer_digest && !(got == *idx.layer_digest)) {
    IPFLY_LOG_ERROR("LAYER DIGEST MISMATCH for {}: index says {}, blob hashes to {}",
                    blob.ToString(), idx.layer_digest->ToString(), got.ToString());
    std::fprintf(stderr, "prefetch: LAYER DIGEST MISMATCH for %s\n", blob.ToString().c_str());
    return;
  }
  std::fprintf(stderr, "prefetch: blob %s complete, digest %s verified\n", blob.ToString().c_str(),
               got.ToString().c_str());
  Bytes buf(1 << 20);
  for (uint64_t off = 0; off < idx.uncompressed_size && !stop; off += buf.size()) {
    auto n = reader->Read(off, buf, fetch::Clock::now() + std::chrono::minutes(5));
    if (!n.ok()) {
      IPFLY_LOG_ERROR("prefetch: {}", n.error().ToString());
      return;
    }
  }
}

}  // namespace

std::optional<CliError> CmdMount(const GlobalOptions& g, const MountOptions& o) {
  std::vector<std::string> layers(o.layers.begin(), o.layers.end() - 1);
  std::string dir = o.layers.back();
  if (layers.size() > 1 && !o.overlay) {
    return CliError{kExitUsage, "several layers need --overlay"};
  }
  if (!o.indexes.empty() && o.indexes.size() != layers.size()) {
    return CliError{kExitUsage, "give one --index per layer, in the same order"};
  }
  if (geteuid() != 0)
    return CliError{kExitFailure, "ipfly mount needs root (FUSE allow_other, bind/overlay mounts)"};
  auto env_r = Env::Make(g);
  if (!env_r.ok()) return FromError(env_r.error());
  Env& env = **env_r;
  auto reader = env.reader();
  if (!reader.ok()) return FromError(reader.error());

  struct Mounted {
    Cid cid;
    std::shared_ptr<const layer::LayerIndex> index;
    std::shared_ptr<layer::LayerReader> reader;
    std::shared_ptr<fusefs::LayerTree> tree;
  };
  std::vector<Mounted> mounted;
  std::string store_dir = env.config().store_dir;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto cid = ParseCidArg(layers[i]);
    if (!cid.ok()) return FromError(cid.error());
    std::shared_ptr<const layer::LayerIndex> idx;
    if (!o.indexes.empty()) {
      auto icid = ParseCidArg(o.indexes[i]);
      if (!icid.ok()) return FromError(icid.error());
      auto l = LoadIndex(env, *icid);
      if (!l.ok()) return FromError(l.error());
      idx = *l;
    } else {
      auto b = BuildAndStoreIndex(env, layers[i], layer::BuildOptions{}.span);
      if (!b.ok()) return FromError(b.error());
      idx = b->first;
    }
    if (idx->blob_cid && !(*idx->blob_cid == *cid) &&
        !(idx->blob_cid->multihash() == cid->multihash())) {
      return CliError{kExitUsage, "index was built for blob " + idx->blob_cid->ToString() +
                                      ", not " + cid->ToString()};
    }
    layer::LayerReaderOptions ro;
    ro.cache_dir = store_dir + "/spans";
    auto lr =
        layer::LayerReader::Open(idx, std::make_unique<layer::UnixfsBlobSource>(*reader, *cid), ro);
    if (!lr.ok()) return FromError(lr.error());
    std::shared_ptr<layer::LayerReader> shared_reader(std::move(*lr));
    auto tree = fusefs::LayerTree::Make(cid->ToString(), idx, shared_reader,
                                        std::chrono::milliseconds(env.config().fetch.timeout_ms));
    if (!tree.ok()) return FromError(tree.error());
    mounted.push_back({*cid, idx, shared_reader, *tree});
  }

  // Signals are handled by sigwait below; block them before any thread starts so that the
  // FUSE worker threads inherit the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::error_code ec;
  fs::create_directories(dir, ec);
  (void)fusefs::FuseFs::CleanStaleMount(dir);
  std::string base = store_dir + "/mnt";
  fs::create_directories(base, ec);
  CleanStalePrivateMounts(base);
  std::string priv = base + "/" + std::to_string(getpid());
  fusefs::FuseOptions fo;
  fo.mountpoint = priv;
  fo.zero_message_open = true;  // trees stay attached until exit
  auto fuse = fusefs::FuseFs::Mount(fo);
  if (!fuse.ok()) return FromError(fuse.error());
  std::vector<std::string> lowers;
  for (size_t i = 0; i < mounted.size(); ++i) {
    std::string name = "l" + std::to_string(i);
    auto st = (*fuse)->Attach(name, mounted[i].tree);
    if (!st.ok()) return FromError(st.error());
    lowers.insert(lowers.begin(), priv + "/" + name);  // overlay: leftmost is the top layer
  }
  int rc;
  if (o.overlay && lowers.size() >= 2) {
    std::string opts = "lowerdir=";
    for (size_t i = 0; i < lowers.size(); ++i) opts += (i ? ":" : "") + lowers[i];
    rc = ::mount("overlay", dir.c_str(), "overlay", MS_RDONLY, opts.c_str());
  } else {
    rc = ::mount(lowers[0].c_str(), dir.c_str(), nullptr, MS_BIND, nullptr);
    if (rc == 0)
      rc = ::mount(nullptr, dir.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr);
  }
  if (rc != 0) {
    int err = errno;
    (*fuse)->Unmount();
    fs::remove(priv, ec);
    return FromError(ErrnoError("mount " + dir, err));
  }
  for (const auto& m : mounted) {
    std::fprintf(stderr, "mounted %s (%s, %zu entries) at %s\n", m.cid.ToString().c_str(),
                 std::string(layer::CompressionName(m.index->compression)).c_str(),
                 m.index->entries.size(), dir.c_str());
  }

  std::atomic<bool> stop{false};
  std::vector<std::thread> prefetchers;
  if (o.prefetch) {
    for (auto& m : mounted) {
      prefetchers.emplace_back(
          [&env, &m, &stop] { Prefetch(env, m.cid, *m.index, m.reader.get(), stop); });
    }
  }
  // An external unmount of the FUSE filesystem also ends the wait.
  std::thread watcher([&] {
    (*fuse)->Wait();
    if (!stop) ::kill(getpid(), SIGTERM);
  });
  int sig = 0;
  sigwait(&sigs, &sig);
  stop = true;
  if (::umount2(dir.c_str(), 0) != 0) ::umount2(dir.c_str(), MNT_DETACH);
  (*fuse)->Unmount();
  watcher.join();
  for (auto& t : prefetchers) t.join();
  fs::remove(priv, ec);
  if (auto f = env.fetcher(); f.ok()) {
    auto fst = (*f)->stats();
    uint64_t net = fst.fetched_bytes;
    for (const auto& src : fst.sources) net += src.stream_bytes;
    std::fprintf(stderr, "network: %llu bytes in %llu blocks fetched from sources\n",
                 static_cast<unsigned long long>(net),
                 static_cast<unsigned long long>(fst.fetched));
  }
  for (const auto& m : mounted) {
    auto s = m.reader->stats();
    std::fprintf(stderr,
                 "%s: %llu compressed bytes read of %llu (spans touched: %llu compressed bytes); "
                 "%llu/%llu spans cached\n",
                 m.cid.ToString().c_str(), static_cast<unsigned long long>(s.compressed_bytes_read),
                 static_cast<unsigned long long>(m.index->compressed_size),
                 static_cast<unsigned long long>(s.span_compressed_bytes),
                 static_cast<unsigned long long>(s.spans_cached),
                 static_cast<unsigned long long>(s.spans_total));
  }
  return std::nullopt;
}

}  // namespace ipfly::cli
