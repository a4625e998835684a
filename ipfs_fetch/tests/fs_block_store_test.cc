#include "ipfs_fetch/fs_block_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/block.h"
#include "core/multiformats/cid.h"
#include "tests/support/process.h"

namespace ipfly::fetch {
namespace {

namespace fs = std::filesystem;
using ipfly::testing::TempDir;

Block MakeBlock(const std::string& s, uint64_t codec = mf::kCodecRaw) {
  return Block::Make(codec, ToBytes(s)).value();
}

Block MakeSized(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  return Block::Make(mf::kCodecRaw, std::move(b)).value();
}

const Deadline kNoDeadline = Deadline::max();

size_t CountFiles(const std::string& dir) {
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

// Sets a file's mtime to `secs_ago` seconds in the past.
void Age(const std::string& path, int secs_ago) {
  struct timespec ts[2];
  clock_gettime(CLOCK_REALTIME, &ts[0]);
  ts[0].tv_sec -= secs_ago;
  ts[1] = ts[0];
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), ts, 0), 0);
}

TEST(FsBlockStore, PutGetHasAndLayout) {
  TempDir tmp;
  auto store = FsBlockStore::Open(tmp / "s").value();
  Block b = MakeBlock("hello blocks");
  ASSERT_TRUE(store->Put(b).ok());
  EXPECT_TRUE(store->Has(b.cid()).value());
  auto got = store->Get(b.cid(), kNoDeadline);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(got->cid(), b.cid());
  EXPECT_EQ(AsString(got->data()), "hello blocks");

  // <dir>/blocks/<shard>/<base32 multihash>, shard = the two chars before the last.
  std::string name = mf::Base32LowerEncode(b.cid().multihash().bytes());
  std::string path = tmp / "s/blocks/" + name.substr(name.size() - 3, 2) + "/" + name;
  EXPECT_EQ(store->BlockPath(b.cid().multihash()), path);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(tmp / "s/tmp"));

  auto st = store->stats();
  EXPECT_EQ(st.blocks, 1u);
  EXPECT_EQ(st.bytes, b.size());
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.puts, 1u);
}

TEST(FsBlockStore, MissingIsNotFound) {
  TempDir tmp;
  auto store = FsBlockStore::Open(tmp.path()).value();
  Block b = MakeBlock("absent");
  auto got = store->Get(b.cid(), kNoDeadline);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kNotFound);
  EXPECT_FALSE(store->Has(b.cid()).value());
  EXPECT_EQ(store->stats().misses, 1u);
}

TEST(FsBlockStore, KeyedByMultihashAcrossCidVersionsAndCodecs) {
  TempDir tmp;
  auto store = FsBlockStore::Open(tmp.path()).value();
  Block v0 = Block::Make(mf::kCodecDagPb, Bytes{0x0a, 0x02, 0x08, 0x01}, 0).value();
  ASSERT_EQ(v0.cid().version(), 0);
  ASSERT_TRUE(store->Put(v0).ok());
  // Same bytes as CIDv1 dag-pb and as raw: one file, Get returns the requested CID.
  mf::Cid v1 = v0.cid().ToV1();
  mf::Cid raw = mf::Cid::V1(mf::kCodecRaw, v0.cid().multihash());
  for (const mf::Cid& c : {v1, raw}) {
    auto got = store->Get(c, kNoDeadline);
    ASSERT_TRUE(got.ok()) << got.error().ToString();
    EXPECT_EQ(got->cid(), c);
  }
  ASSERT_TRUE(store->Put(Block::Verify(v1, Bytes{0x0a, 0x02, 0x08, 0x01}).value()).ok());
  EXPECT_EQ(store->stats().blocks, 1u);
  EXPECT_EQ(CountFiles(tmp / "blocks"), 1u);
}

TEST(FsBlockStore, IdentityCidsNeedNoStorage) {
  TempDir tmp;
  auto store = FsBlockStore::Open(tmp.path()).value();
  mf::Cid id = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Identity(AsBytes("inline")).value());
  auto got = store->Get(id, kNoDeadline);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(AsString(got->data()), "inline");
  ASSERT_TRUE(store->Put(*got).ok());
  EXPECT_EQ(CountFiles(tmp / "blocks"), 0u);
}

TEST(FsBlockStore, SurvivesReopen) {
  TempDir tmp;
  std::vector<Block> blocks;
  for (int i = 0; i < 20; ++i) blocks.push_back(MakeBlock("block " + std::to_string(i)));
  {
    auto store = FsBlockStore::Open(tmp.path()).value();
    for (auto& b : blocks) ASSERT_TRUE(store->Put(b).ok());
  }
  auto store = FsBlockStore::Open(tmp.path()).value();
  auto st = store->stats();
  EXPECT_EQ(st.blocks, 20u);
  uint64_t bytes = 0;
  for (auto& b : blocks) {
    bytes += b.size();
    auto got = store->Get(b.cid(), kNoDeadline);
    ASSERT_TRUE(got.ok()) << got.error().ToString();
    EXPECT_TRUE(
        std::equal(got->data().begin(), got->data().end(), b.data().begin(), b.data().end()));
  }
  EXPECT_EQ(st.bytes, bytes);
}

TEST(FsBlockStore, OpenRemovesStaleTmpFiles) {
  TempDir tmp;
  { auto store = FsBlockStore::Open(tmp.path()).value(); }
  // A leftover of a dead process (pid far above pid_max), junk, and one of a live process that
  // is fresh (kept: it may be writing right now) — our parent is alive and is not us.
  std::string dead = tmp / "tmp/999999999.1.tmp";
  std::string junk = tmp / "tmp/garbage";
  std::string live = tmp / ("tmp/" + std::to_string(getppid()) + ".7.tmp");
  std::string live_old = tmp / ("tmp/" + std::to_string(getppid()) + ".8.tmp");
  for (auto& p : {dead, junk, live, live_old}) std::ofstream(p) << "partial";
  Age(live_old, 2 * 24 * 3600);
  auto store = FsBlockStore::Open(tmp.path()).value();
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_FALSE(fs::exists(junk));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_FALSE(fs::exists(live_old));
  EXPECT_EQ(store->stats().blocks, 0u);  // tmp files are never blocks
}

TEST(FsBlockStore, CorruptFileOnDiskIsDetectedAndRemoved) {
  TempDir tmp;
  auto store = FsBlockStore::Open(tmp.path()).value();
  Block b = MakeBlock("precious bytes");
  ASSERT_TRUE(store->Put(b).ok());
  std::string path = store->BlockPath(b.cid().multihash());
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('X');
  }
  auto got = store->Get(b.cid(), kNoDeadline);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kCorrupt);
  EXPECT_NE(got.error().message().find(b.cid().ToString()), std::string::npos);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(store->Has(b.cid()).value());
  EXPECT_EQ(store->stats().corrupt, 1u);
  EXPECT_EQ(store->stats().blocks, 0u);
  // Refetched and stored again: fine.
  ASSERT_TRUE(store->Put(b).ok());
  EXPECT_TRUE(store->Get(b.cid(), kNoDeadline).ok());
}

TEST(FsBlockStore, TruncatedFileIsCorrupt) {
  TempDir tmp;
  auto store = FsBlockStore::Open(tmp.path()).value();
  Block b = MakeSized(4096, 1);
  ASSERT_TRUE(store->Put(b).ok());
  std::string path = store->BlockPath(b.cid().multihash());
  ASSERT_EQ(truncate(path.c_str(), 100), 0);  // a torn write after power loss
  EXPECT_EQ(store->Get(b.cid(), kNoDeadline).error().code(), Errc::kCorrupt);
  EXPECT_FALSE(fs::exists(path));
}

TEST(FsBlockStore, LruEvictionUnderCap) {
  TempDir tmp;
  FsBlockStoreOptions opt;
  opt.max_bytes = 10 * 1000;
  auto store = FsBlockStore::Open(tmp.path(), opt).value();
  std::vector<Block> blocks;
  for (int i = 0; i < 10; ++i) blocks.push_back(MakeSized(1000, static_cast<uint8_t>(i)));
  for (auto& b : blocks) ASSERT_TRUE(store->Put(b).ok());
  EXPECT_EQ(store->stats().evictions, 0u);
  // Touch block 0 so that block 1 is now the least recently used.
  ASSERT_TRUE(store->Get(blocks[0].cid(), kNoDeadline).ok());
  Block extra = MakeSized(1500, 99);
  ASSERT_TRUE(store->Put(extra).ok());
  auto st = store->stats();
  EXPECT_LE(st.bytes, opt.max_bytes);
  EXPECT_EQ(st.evictions, 2u);  // 1500 bytes over: blocks 1 and 2 go
  EXPECT_TRUE(store->Has(blocks[0].cid()).value());
  EXPECT_FALSE(fs::exists(store->BlockPath(blocks[1].cid().multihash())));
  EXPECT_FALSE(fs::exists(store->BlockPath(blocks[2].cid().multihash())));
  EXPECT_EQ(store->Get(blocks[1].cid(), kNoDeadline).error().code(), Errc::kNotFound);
  EXPECT_TRUE(store->Get(blocks[3].cid(), kNoDeadline).ok());
  EXPECT_TRUE(store->Get(extra.cid(), kNoDeadline).ok());
}

TEST(FsBlockStore, LruOrderSurvivesRestartAndCapAppliesAtOpen) {
  TempDir tmp;
  std::vector<Block> blocks;
  for (int i = 0; i < 6; ++i) blocks.push_back(MakeSized(1000, static_cast<uint8_t>(i)));
  {
    auto store = FsBlockStore::Open(tmp.path()).value();
    for (auto& b : blocks) ASSERT_TRUE(store->Put(b).ok());
  }
  // Block i was used (6 - i) hours ago, except block 0, used most recently.
  for (int i = 0; i < 6; ++i) {
    std::string p = tmp / "blocks";
    std::string name = mf::Base32LowerEncode(blocks[i].cid().multihash().bytes());
    Age(p + "/" + name.substr(name.size() - 3, 2) + "/" + name, i == 0 ? 1 : (6 - i) * 3600);
  }
  FsBlockStoreOptions opt;
  opt.max_bytes = 3000;
  auto store = FsBlockStore::Open(tmp.path(), opt).value();
  EXPECT_EQ(store->stats().blocks, 3u);
  EXPECT_EQ(store->stats().evictions, 3u);
  EXPECT_TRUE(store->Has(blocks[0].cid()).value());
  EXPECT_TRUE(store->Has(blocks[4].cid()).value());
  EXPECT_TRUE(store->Has(blocks[5].cid()).value());
  EXPECT_FALSE(store->Has(blocks[1].cid()).value());
  EXPECT_FALSE(store->Has(blocks[2].cid()).value());
  EXPECT_FALSE(store->Has(blocks[3].cid()).value());
}

TEST(FsBlockStore, ConcurrentPutGet) {
  TempDir tmp;
  FsBlockStoreOptions opt;
  opt.max_bytes = 64 * 1024;
  auto store = FsBlockStore::Open(tmp.path(), opt).value();
  std::vector<Block> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(MakeSized(2000, static_cast<uint8_t>(i)));
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = t; i < blocks.size(); i += 2) {
          if (!store->Put(blocks[i]).ok()) ++bad;
          auto g = store->Get(blocks[(i * 7) % blocks.size()].cid(), kNoDeadline);
          // Misses are fine (evicted or not yet written); corruption or I/O errors are not.
          if (!g.ok() && g.error().code() != Errc::kNotFound) ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_LE(store->stats().bytes, opt.max_bytes);
  EXPECT_TRUE(fs::is_empty(tmp / "tmp"));
  // The index matches the directory.
  EXPECT_EQ(CountFiles(tmp / "blocks"), store->stats().blocks);
}

TEST(FsBlockStore, TwoInstancesShareADirectory) {
  TempDir tmp;
  auto daemon = FsBlockStore::Open(tmp.path()).value();
  auto cli = FsBlockStore::Open(tmp.path()).value();
  Block b = MakeBlock("added by the CLI");
  ASSERT_TRUE(cli->Put(b).ok());
  EXPECT_TRUE(daemon->Has(b.cid()).value());
  EXPECT_TRUE(daemon->Get(b.cid(), kNoDeadline).ok());
  EXPECT_EQ(daemon->stats().blocks, 1u);
  ASSERT_TRUE(cli->Delete(b.cid().multihash()).ok());
  EXPECT_EQ(daemon->Get(b.cid(), kNoDeadline).error().code(), Errc::kNotFound);
  EXPECT_EQ(daemon->stats().blocks, 0u);
}

TEST(FsBlockStore, FsyncOption) {
  TempDir tmp;
  FsBlockStoreOptions opt;
  opt.fsync = true;
  auto store = FsBlockStore::Open(tmp / "a/b/c", opt).value();  // nested dirs are created
  Block b = MakeBlock("durable");
  ASSERT_TRUE(store->Put(b).ok());
  EXPECT_TRUE(store->Get(b.cid(), kNoDeadline).ok());
}

TEST(MemoryBlockStore, Basics) {
  MemoryBlockStore store;
  Block b = Block::Make(mf::kCodecDagPb, Bytes{0x0a, 0x00}, 0).value();
  EXPECT_EQ(store.Get(b.cid(), kNoDeadline).error().code(), Errc::kNotFound);
  ASSERT_TRUE(store.Put(b).ok());
  ASSERT_TRUE(store.Put(b).ok());
  EXPECT_EQ(store.stats().blocks, 1u);
  EXPECT_TRUE(store.Has(b.cid().ToV1()).value());
  auto got = store.Get(b.cid().ToV1(), kNoDeadline);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->cid(), b.cid().ToV1());
  ASSERT_TRUE(store.Delete(b.cid().multihash()).ok());
  EXPECT_FALSE(store.Has(b.cid()).value());
}

}  // namespace
}  // namespace ipfly::fetch
