// FuseLazyLayers against real parts: layer blobs made by GNU tar + gzip/zstd, imported into a
// real embedded block store, a real FUSE mount, a real HTTP resolver (cpp-httplib). Needs root
// (FUSE allow_other), as the snapshotter does.
#include "snapshotter/fuse_lazy_layers.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/unixfs/importer.h"
#include "ipfs_fetch/fs_block_store.h"
#include "layer/layer_index.h"
#include "tests/support/process.h"

namespace ipfly::snapshotter {
namespace {

namespace fs = std::filesystem;
using testing::RunCmd;
using testing::Sh;
using testing::TempDir;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Span cache data files of the layer with OCI digest `digest` ("<hex>-<layout>-<cid tag>.data").
std::vector<std::string> SpanDataFiles(const std::string& dir, const std::string& digest) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(digest.substr(7) + "-", 0) == 0 && e.path().extension() == ".data") {
      out.push_back(e.path().string());
    }
  }
  return out;
}
// The one data file of that layer ("" if there is none or more than one).
std::string SpanDataFile(const std::string& dir, const std::string& digest) {
  auto files = SpanDataFiles(dir, digest);
  return files.size() == 1 ? files[0] : std::string();
}

struct StoredLayer {
  std::string blob_cid, index_cid, digest;
  uint64_t size = 0;
};

// Packs `tree` with `compress` ("gzip -n" or "zstd -q --single-thread"), imports blob and
// index into the block store at `store_dir`.
StoredLayer MakeLayer(const std::string& work, const std::string& tree, const std::string& compress,
                      const std::string& store_dir) {
  std::string blob = work + "/layer.blob";
  auto r = Sh("tar --sort=name --owner=0 --group=0 --numeric-owner -C " + tree + " -cf - . | " +
              compress + " > " + blob);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string bytes = Slurp(blob);
  ByteView view(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  auto store = fetch::FsBlockStore::Open(store_dir);
  EXPECT_TRUE(store.ok());
  auto profile = unixfs::ImportProfile::ByName("kubo-v1");
  auto blob_node = unixfs::ImportBytes(view, *profile, store->get());
  EXPECT_TRUE(blob_node.ok());
  layer::BuildOptions bo;
  bo.span = 64 << 10;
  layer::LayerIndexBuilder builder(bo);
  EXPECT_TRUE(builder.Feed(view).ok());
  auto idx = builder.Finish();
  EXPECT_TRUE(idx.ok()) << idx.error().ToString();
  idx->blob_cid = blob_node->cid;
  Bytes enc = idx->Encode();
  auto idx_node = unixfs::ImportBytes(enc, *profile, store->get());
  EXPECT_TRUE(idx_node.ok());
  return {blob_node->cid.ToString(), idx_node->cid.ToString(), idx->layer_digest->ToString(),
          bytes.size()};
}

class FuseLazyLayersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "these tests need root (FUSE allow_other), like the snapshotter";
    tree_ = tmp_ / "tree";
    fs::create_directories(tree_ + "/etc");
    fs::create_directories(tree_ + "/data");
    std::ofstream(tree_ + "/etc/hello.txt") << "hello lazy world\n";
    testing::WriteRandomFile(tree_ + "/data/big.bin", 3 << 20, 42);
    fs::create_symlink("hello.txt", tree_ + "/etc/link");
    config_ = Config::Defaults();
    config_.store_dir = tmp_ / "store";
    config_.cache_dir = tmp_ / "store/cache";
    config_.fetch.timeout_ms = 5000;
    config_.fetch.block_timeout_ms = 2000;
    config_.fetch.retries = 0;
    gz_ = MakeLayer(tmp_.path(), tree_, "gzip -n", config_.store_dir);
  }

  std::unique_ptr<LazyLayers> Make(const Config& c) {
    auto l = MakeFuseLazyLayers(c, tmp_ / "root");
    EXPECT_TRUE(l.ok()) << l.error().ToString();
    return l.ok() ? std::move(*l) : nullptr;
  }

  TempDir tmp_;
  std::string tree_;
  Config config_;
  StoredLayer gz_;
};

TEST_F(FuseLazyLayersTest, LabelsAttachReadDetach) {
  auto lazy = Make(config_);
  ASSERT_TRUE(lazy);
  Labels labels = {{"containerd.io/snapshot.ref", "sha256:chain"},
                   {"containerd.io/snapshot/ipfly.cid", gz_.blob_cid},
                   {"containerd.io/snapshot/ipfly.index", gz_.index_cid}};
  auto rl = lazy->Resolve(labels);
  ASSERT_TRUE(rl.ok()) << rl.error().ToString();
  EXPECT_EQ(rl->resolved_by, "ipfly-labels");
  EXPECT_EQ(rl->digest, gz_.digest);
  EXPECT_EQ(rl->size, gz_.size);
  auto dir = lazy->Attach("7", *rl);
  ASSERT_TRUE(dir.ok()) << dir.error().ToString();
  EXPECT_EQ(*dir, tmp_ / "root/lazy/7");
  EXPECT_EQ(Slurp(*dir + "/etc/hello.txt"), "hello lazy world\n");
  EXPECT_EQ(fs::read_symlink(*dir + "/etc/link"), "hello.txt");
  EXPECT_EQ(Slurp(*dir + "/data/big.bin"), Slurp(tree_ + "/data/big.bin"));
  // Idempotent; the same layer under a second id shares one reader.
  EXPECT_EQ(*lazy->Attach("7", *rl), *dir);
  ASSERT_TRUE(lazy->Attach("8", *rl).ok());
  EXPECT_EQ(Slurp(tmp_ / "root/lazy/8/etc/hello.txt"), "hello lazy world\n");
  auto st = lazy->Layers();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_GT(st[0].bytes_fetched, 0u);
  EXPECT_EQ(st[0].blob_size, gz_.size);
  EXPECT_NE(lazy->MetricsText().find("ipfly_lazy_fetch_latency_seconds_count"), std::string::npos);
  // Works as an overlay lowerdir, as the snapshotter uses it.
  std::string upper = tmp_ / "upper", work = tmp_ / "work", merged = tmp_ / "merged";
  for (auto& d : {upper, work, merged}) fs::create_directories(d);
  auto m = RunCmd({"mount", "-t", "overlay", "overlay", "-o",
                   "lowerdir=" + *dir + ",upperdir=" + upper + ",workdir=" + work, merged});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_EQ(Slurp(merged + "/etc/hello.txt"), "hello lazy world\n");
  std::ofstream(merged + "/etc/new.txt") << "written";
  EXPECT_TRUE(fs::exists(upper + "/etc/new.txt"));
  RunCmd({"umount", merged});
  // Detach: the directory disappears; the span cache goes with the last user.
  ASSERT_TRUE(lazy->Detach("7").ok());
  EXPECT_FALSE(fs::exists(*dir));
  EXPECT_EQ(lazy->Detach("7").error().code(), Errc::kNotFound);
  std::string spans = tmp_ / "root/layers/spans";
  auto span_files_of_layer = [&] { return SpanDataFiles(spans, gz_.digest).size(); };
  EXPECT_EQ(span_files_of_layer(), 1u);
  std::ofstream(spans + "/" + std::string(64, 'c') + ".data") << "left by a removed snapshot";
  ASSERT_TRUE(lazy->Detach("8").ok());
  EXPECT_EQ(span_files_of_layer(), 0u);
  EXPECT_FALSE(fs::exists(spans + "/" + std::string(64, 'c') + ".data"));
  EXPECT_TRUE(lazy->Layers().empty());
}

TEST_F(FuseLazyLayersTest, BackgroundFetchCompletesAndFillsSpanCache) {
  Config c = config_;
  c.snapshotter.background_fetch = true;
  auto lazy = Make(c);
  ASSERT_TRUE(lazy);
  auto rl = lazy->Resolve({{"containerd.io/snapshot/ipfly.cid", gz_.blob_cid},
                           {"containerd.io/snapshot/ipfly.index", gz_.index_cid}});
  ASSERT_TRUE(rl.ok()) << rl.error().ToString();
  auto dir = lazy->Attach("5", *rl);
  ASSERT_TRUE(dir.ok());
  bool done = testing::WaitFor(
      [&] {
        auto l = lazy->Layers();
        return l.size() == 1 && l[0].background_complete;
      },
      std::chrono::seconds(30));
  ASSERT_TRUE(done) << "background fetch did not complete";
  EXPECT_GE(lazy->Layers()[0].bytes_fetched, gz_.size);
  // Every span is now in the span cache: the data file holds the whole uncompressed stream.
  struct stat st {};
  std::string data = SpanDataFile(tmp_ / "root/layers/spans", gz_.digest);
  ASSERT_EQ(::stat(data.c_str(), &st), 0);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 3u << 20);
  EXPECT_EQ(Slurp(*dir + "/data/big.bin"), Slurp(tree_ + "/data/big.bin"));
  ASSERT_TRUE(lazy->Detach("5").ok());
}

TEST_F(FuseLazyLayersTest, RemoteUrlsWithoutIndexBuildsIt) {
  auto lazy = Make(config_);
  ASSERT_TRUE(lazy);
  Labels labels = {
      {"containerd.io/snapshot/remote/urls", "https://example.invalid/x,ipfs://" + gz_.blob_cid},
      {"containerd.io/snapshot/remote/stargz.digest", gz_.digest}};
  auto rl = lazy->Resolve(labels);
  ASSERT_TRUE(rl.ok()) << rl.error().ToString();
  EXPECT_EQ(rl->resolved_by, "remote-urls");
  EXPECT_TRUE(fs::exists(tmp_ / ("root/layers/indexes/" + gz_.blob_cid + ".ix")));
  auto dir = lazy->Attach("1", *rl);
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(Slurp(*dir + "/etc/hello.txt"), "hello lazy world\n");
  // A digest label that disagrees with the blob is refused, never served.
  Labels wrong = labels;
  wrong["containerd.io/snapshot/remote/stargz.digest"] = "sha256:" + std::string(64, 'a');
  auto bad = lazy->Resolve(wrong);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kCorrupt) << bad.error().ToString();
}

TEST_F(FuseLazyLayersTest, ResolverByDigest) {
  httplib::Server srv;
  std::atomic<int> hits{0};
  srv.Get(R"(/ipfly/v1/layers/(.+))", [&](const httplib::Request& req, httplib::Response& res) {
    hits++;
    if (req.matches[1] == gz_.digest) {
      res.set_content("{\"cid\":\"" + gz_.blob_cid + "\",\"index_cid\":\"" + gz_.index_cid +
                          "\",\"size\":" + std::to_string(gz_.size) +
                          ",\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\"}",
                      "application/json");
    } else if (req.matches[1] == "sha256:" + std::string(64, 'e')) {
      res.status = 200;
      res.set_content("{not json", "application/json");
    } else {
      res.status = 404;
      res.set_content("{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}", "application/json");
    }
  });
  srv.set_keep_alive_timeout(0);  // let stop() return at once despite pooled connections
  int port = srv.bind_to_any_port("127.0.0.1");
  std::thread t([&] { srv.listen_after_bind(); });
  Config c = config_;
  c.snapshotter.resolver = "http://127.0.0.1:" + std::to_string(port) + "/";
  auto lazy = Make(c);
  ASSERT_TRUE(lazy);
  auto rl = lazy->Resolve({{"containerd.io/snapshot/cri.layer-digest", gz_.digest}});
  ASSERT_TRUE(rl.ok()) << rl.error().ToString();
  EXPECT_EQ(rl->resolved_by, "resolver");
  EXPECT_EQ(rl->blob_cid, gz_.blob_cid);
  EXPECT_EQ(rl->index_cid, gz_.index_cid);
  auto unknown = lazy->Resolve(
      {{"containerd.io/snapshot/cri.layer-digest", "sha256:" + std::string(64, 'b')}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), Errc::kNotFound);
  auto garbage = lazy->Resolve(
      {{"containerd.io/snapshot/cri.layer-digest", "sha256:" + std::string(64, 'e')}});
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code(), Errc::kCorrupt);
  EXPECT_FALSE(lazy->Resolve({{"containerd.io/snapshot/cri.layer-digest", "md5:zz"}}).ok());
  EXPECT_GE(hits.load(), 3);
  srv.stop();
  t.join();
  // Resolver down: a clear error (the service falls back).
  auto down = lazy->Resolve({{"containerd.io/snapshot/cri.layer-digest", gz_.digest}});
  EXPECT_FALSE(down.ok());
}

TEST_F(FuseLazyLayersTest, FallbackReasons) {
  auto lazy = Make(config_);
  ASSERT_TRUE(lazy);
  auto none = lazy->Resolve({{"containerd.io/snapshot.ref", "x"}});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), Errc::kNotFound);
  auto bad = lazy->Resolve({{"containerd.io/snapshot/ipfly.cid", "not-a-cid"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  // Single-frame zstd has no access points: not lazy.
  auto zst = MakeLayer(tmp_.path(), tree_, "zstd -q --single-thread -c", config_.store_dir);
  auto ns = lazy->Resolve({{"containerd.io/snapshot/ipfly.cid", zst.blob_cid},
                           {"containerd.io/snapshot/ipfly.index", zst.index_cid}});
  ASSERT_FALSE(ns.ok());
  EXPECT_EQ(ns.error().code(), Errc::kFailedPrecondition);
  EXPECT_NE(ns.error().message().find("not seekable"), std::string::npos);
  // Below min_lazy_size.
  lazy.reset();
  Config c = config_;
  c.snapshotter.min_lazy_size = gz_.size + 1;
  lazy = Make(c);
  auto small = lazy->Resolve({{"containerd.io/snapshot/ipfly.cid", gz_.blob_cid},
                              {"containerd.io/snapshot/ipfly.index", gz_.index_cid}});
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.error().code(), Errc::kFailedPrecondition);
  EXPECT_NE(small.error().message().find("too small"), std::string::npos);
}

TEST_F(FuseLazyLayersTest, RestartNeedsNoNetworkAndRemountHeals) {
  RemoteLayer rl;
  {
    auto lazy = Make(config_);
    ASSERT_TRUE(lazy);
    auto r = lazy->Resolve({{"containerd.io/snapshot/ipfly.cid", gz_.blob_cid},
                            {"containerd.io/snapshot/ipfly.index", gz_.index_cid}});
    ASSERT_TRUE(r.ok());
    rl = *r;
    ASSERT_TRUE(lazy->Attach("3", rl).ok());
    EXPECT_EQ(Slurp(tmp_ / "root/lazy/3/etc/hello.txt"), "hello lazy world\n");
  }
  // The restart must use the local index copy: the index CID given now names the blob, which
  // would not decode as an index if it were fetched.
  Config offline = config_;
  offline.sources.clear();
  auto lazy = Make(offline);
  ASSERT_TRUE(lazy);
  RemoteLayer other = rl;
  other.index_cid = gz_.blob_cid;
  auto dir = lazy->EnsureAttached("3", other);
  ASSERT_TRUE(dir.ok()) << dir.error().ToString();
  EXPECT_EQ(Slurp(*dir + "/etc/hello.txt"), "hello lazy world\n");
  // Someone unmounts the FUSE filesystem under us: EnsureAttached remounts and re-attaches.
  auto u = RunCmd({"umount", "-l", tmp_ / "root/lazy"});
  ASSERT_EQ(u.exit_code, 0) << u.err;
  bool healed = testing::WaitFor(
      [&] {
        auto d = lazy->EnsureAttached("3", rl);
        return d.ok() && Slurp(*d + "/etc/hello.txt") == "hello lazy world\n";
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(healed);
}

// The global span cache cap: span caches of layers no active snapshot uses are dropped least
// recently read first until the total is under the cap; layers in use are kept (and an over-cap
// state with only layers in use is counted); reads after an eviction fetch again, correctly.
TEST_F(FuseLazyLayersTest, SpanCacheCapEvictsLeastRecentlyUsedLayersNotInUse) {
  // Three layers of ~420 KB decompressed each (64 KiB spans); the cap holds two of them.
  std::vector<StoredLayer> stored;
  std::vector<std::string> files;
  for (int i = 0; i < 3; ++i) {
    std::string t = tmp_ / ("cap" + std::to_string(i));
    fs::create_directories(t);
    files.push_back(t + "/f.bin");
    testing::WriteRandomFile(files.back(), 400 << 10, 1000 + i);
    std::string w = tmp_ / ("capwork" + std::to_string(i));
    fs::create_directories(w);
    stored.push_back(MakeLayer(w, t, "gzip -n", config_.store_dir));
  }
  Config c = config_;
  c.snapshotter.span_cache_max_bytes = 1 << 20;
  auto lazy = Make(c);
  ASSERT_TRUE(lazy);
  std::vector<RemoteLayer> rls;
  for (int i = 0; i < 3; ++i) {
    auto rl = lazy->Resolve({{"containerd.io/snapshot/ipfly.cid", stored[i].blob_cid},
                             {"containerd.io/snapshot/ipfly.index", stored[i].index_cid}});
    ASSERT_TRUE(rl.ok()) << rl.error().ToString();
    rls.push_back(*rl);
  }
  // Reads through a fresh id each time: a new inode, so the kernel's page cache cannot answer.
  int next_id = 10;
  std::map<int, std::string> id_of;  // layer -> last id attached
  auto read_layer = [&](int i) {
    std::string id = std::to_string(next_id++);
    auto dir = lazy->Attach(id, rls[i]);
    ASSERT_TRUE(dir.ok()) << dir.error().ToString();
    id_of[i] = id;
    ASSERT_EQ(Slurp(*dir + "/f.bin"), Slurp(files[i])) << "layer " << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // distinct access times
  };
  auto cached = [&](int i) {
    uint64_t b = 0;
    for (const auto& l : lazy->Layers()) {
      if (l.layer.blob_cid == rls[i].blob_cid) b = l.span_cache_bytes;
    }
    return b;
  };
  auto settle = [&](uint64_t evictions) {
    return testing::WaitFor(
        [&] {
          auto sc = lazy->SpanCache();
          return sc.evicted_layers >= evictions && sc.bytes <= sc.max_bytes;
        },
        std::chrono::seconds(10));
  };

  read_layer(0);
  read_layer(1);
  EXPECT_GT(cached(0), 300u << 10);
  EXPECT_GT(cached(1), 300u << 10);
  EXPECT_EQ(lazy->SpanCache().evicted_layers, 0u);
  read_layer(2);  // over the cap: layer 0, the least recently read, goes
  ASSERT_TRUE(settle(1)) << lazy->SpanCache().bytes;
  EXPECT_EQ(cached(0), 0u);
  EXPECT_GT(cached(1), 0u);
  EXPECT_GT(cached(2), 0u);
  // Its span cache file is punched out, not just forgotten.
  struct stat st {};
  std::string data0 = SpanDataFile(tmp_ / "root/layers/spans", stored[0].digest);
  ASSERT_EQ(::stat(data0.c_str(), &st), 0);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 64u << 10);

  // Layer 1 is now under an active snapshot: layer 2 goes instead, although it was read later.
  lazy->SetInUse({id_of[1]});
  read_layer(0);  // fetched again after its eviction: right bytes (checked in read_layer)
  ASSERT_TRUE(settle(2));
  EXPECT_GT(cached(1), 0u);
  EXPECT_EQ(cached(2), 0u);
  EXPECT_GT(cached(0), 0u);
  for (const auto& l : lazy->Layers()) EXPECT_EQ(l.in_use, l.layer.blob_cid == rls[1].blob_cid);

  // Everything in use and over the cap: nothing is evicted, the episode is counted once.
  lazy->SetInUse({id_of[0], id_of[1], id_of[2]});
  read_layer(2);
  ASSERT_TRUE(testing::WaitFor([&] { return lazy->SpanCache().over_cap_in_use == 1; },
                               std::chrono::seconds(10)));
  auto sc = lazy->SpanCache();
  EXPECT_GT(sc.bytes, sc.max_bytes);
  EXPECT_EQ(sc.evicted_layers, 2u);
  // Released from use: back under the cap, the least recently read (layer 1) goes first.
  lazy->SetInUse({});
  ASSERT_TRUE(settle(3));
  EXPECT_EQ(cached(1), 0u);
  EXPECT_GT(cached(0), 0u);
  EXPECT_GT(cached(2), 0u);
  sc = lazy->SpanCache();
  EXPECT_EQ(sc.over_cap_in_use, 1u);
  EXPECT_GT(sc.evicted_bytes, 3 * (300u << 10));
  std::string m = lazy->MetricsText();
  EXPECT_NE(m.find("ipfly_snapshotter_span_cache_evictions_total 3\n"), std::string::npos) << m;
  EXPECT_NE(m.find("ipfly_snapshotter_span_cache_max_bytes 1048576\n"), std::string::npos);
  EXPECT_NE(m.find("ipfly_snapshotter_span_cache_over_cap_in_use_total 1\n"), std::string::npos);
  // Evicted layers stay attached and readable.
  EXPECT_EQ(Slurp(tmp_ / ("root/lazy/" + id_of[1] + "/f.bin")), Slurp(files[1]));
}

}  // namespace
}  // namespace ipfly::snapshotter
