#include "ipfs_fetch/unixfs_reader.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/block.h"
#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/fs_block_store.h"
#include "tests/support/fake_block_source.h"

namespace ipfly::fetch {
namespace {

using namespace std::chrono_literals;
using ipfly::testing::FakeBlockSource;
using ipfly::testing::Fault;

// Adds imported blocks to a fake source.
class SourceSink : public BlockSink {
 public:
  explicit SourceSink(FakeBlockSource* src) : src_(src) {}
  Status Put(const Block& b) override {
    src_->Add(b);
    ++count;
    return OkStatus();
  }
  size_t count = 0;

 private:
  FakeBlockSource* src_;
};

Bytes RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

unixfs::ImportProfile SmallProfile(bool raw_leaves, int cid_version, size_t chunk, size_t links) {
  unixfs::ImportProfile p;
  p.name = "test";
  p.raw_leaves = raw_leaves;
  p.cid_version = cid_version;
  p.chunk_size = chunk;
  p.max_links = links;
  return p;
}

mf::Cid Import(FakeBlockSource* src, const Bytes& data, const unixfs::ImportProfile& p) {
  SourceSink sink(src);
  auto r = unixfs::ImportBytes(data, p, &sink);
  EXPECT_TRUE(r.ok()) << r.error().ToString();
  return r->cid;
}

// A dag-pb UnixFS File node with optional inline data and children (cid, blocksize).
Block FileNode(const Bytes& inline_data, const std::vector<std::pair<mf::Cid, uint64_t>>& kids,
               std::optional<uint64_t> filesize_override = std::nullopt,
               std::vector<uint64_t> blocksizes_override = {}, std::string link_name = "",
               codec::UnixfsType type = codec::UnixfsType::kFile) {
  codec::UnixfsData d;
  d.type = type;
  if (!inline_data.empty()) d.data = inline_data;
  uint64_t total = inline_data.size();
  for (auto& [c, bs] : kids) {
    d.blocksizes.push_back(bs);
    total += bs;
  }
  if (!blocksizes_override.empty()) d.blocksizes = blocksizes_override;
  d.filesize = filesize_override.value_or(total);
  codec::PbNode n;
  for (auto& [c, bs] : kids) n.links.push_back({c, link_name, bs});
  n.data = codec::EncodeUnixfs(d);
  return Block::Make(mf::kCodecDagPb, codec::EncodeDagPb(n)).value();
}

Bytes Slice(const Bytes& b, uint64_t off, uint64_t len) {
  if (off >= b.size()) return {};
  len = std::min<uint64_t>(len, b.size() - off);
  return Bytes(b.begin() + off, b.begin() + off + len);
}

Bytes ReadRange(UnixfsReader& r, const mf::Cid& root, uint64_t off, size_t len) {
  Bytes out(len);
  auto n = r.ReadAt(root, off, out, DeadlineIn(10s));
  EXPECT_TRUE(n.ok()) << n.error().ToString();
  if (!n.ok()) return {};
  out.resize(*n);
  return out;
}

Result<Bytes> StreamRange(UnixfsReader& r, const mf::Cid& root, uint64_t off, uint64_t len) {
  Bytes out;
  Status st = r.Stream(
      root, off, len,
      [&](ByteView b) {
        out.insert(out.end(), b.begin(), b.end());
        return OkStatus();
      },
      DeadlineIn(10s));
  if (!st.ok()) return std::move(st).error();
  return out;
}

struct DagCase {
  const char* name;
  bool raw_leaves;
  int cid_version;
  size_t chunk;
  size_t links;
  size_t size;
};

class ImportedDagTest : public ::testing::TestWithParam<DagCase> {};

TEST_P(ImportedDagTest, RandomReadsMatchSourceBytes) {
  const DagCase& c = GetParam();
  FakeBlockSource src;
  Bytes data = RandomBytes(c.size, c.size * 7 + c.chunk);
  mf::Cid root = Import(&src, data, SmallProfile(c.raw_leaves, c.cid_version, c.chunk, c.links));
  UnixfsReaderOptions opt;
  opt.max_inflight = 4;
  opt.readahead_blocks = 5;
  UnixfsReader reader(&src, opt);

  ASSERT_EQ(reader.Size(root, DeadlineIn(5s)).value(), data.size());
  EXPECT_EQ(ReadRange(reader, root, 0, data.size() + 10), data);  // whole file, short at EOF
  std::mt19937_64 rng(42);
  for (int i = 0; i < 150; ++i) {
    uint64_t off = rng() % (data.size() + 20);
    size_t len = rng() % (3 * c.chunk + 50) + (i % 10 == 0 ? c.chunk * 20 : 0);
    ASSERT_EQ(ReadRange(reader, root, off, len), Slice(data, off, len))
        << "off=" << off << " len=" << len;
  }
  for (int i = 0; i < 30; ++i) {
    uint64_t off = rng() % (data.size() + 5);
    uint64_t len = rng() % (data.size() + 1);
    auto got = StreamRange(reader, root, off, len);
    ASSERT_TRUE(got.ok()) << got.error().ToString();
    ASSERT_EQ(*got, Slice(data, off, len)) << "off=" << off << " len=" << len;
  }
  auto all = StreamRange(reader, root, 0, UINT64_MAX);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, data);
}

INSTANTIATE_TEST_SUITE_P(
    Profiles, ImportedDagTest,
    ::testing::Values(DagCase{"raw_v1_depth4", true, 1, 64, 3, 5000},
                      DagCase{"dagpb_leaves_v0_depth3", false, 0, 100, 4, 4000},
                      DagCase{"dagpb_leaves_v1", false, 1, 37, 5, 3333},
                      DagCase{"single_chunk_raw_root", true, 1, 1024, 174, 700},
                      DagCase{"single_chunk_dagpb_root", false, 0, 1024, 174, 700},
                      DagCase{"exact_multiple", true, 1, 128, 4, 128 * 16},
                      DagCase{"kubo_like", true, 1, 4096, 174, 3 << 20}),
    [](const ::testing::TestParamInfo<DagCase>& i) { return std::string(i.param.name); });

TEST(UnixfsReader, LeavesFetchedInParallelWithinLimit) {
  FakeBlockSource src;
  Bytes data = RandomBytes(32 * 1000, 11);
  mf::Cid root = Import(&src, data, SmallProfile(true, 1, 1000, 174));  // root + 32 leaves
  src.SetDefaultFault(Fault::Delay(20ms));
  UnixfsReaderOptions opt;
  opt.max_inflight = 4;
  UnixfsReader reader(&src, opt);
  auto start = Clock::now();
  EXPECT_EQ(ReadRange(reader, root, 0, data.size()), data);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  EXPECT_EQ(src.max_concurrent_gets(), 4);
  EXPECT_LT(ms, 33 * 20 / 2);  // sequential would take 33 × 20 ms
}

TEST(UnixfsReader, EmptyFile) {
  FakeBlockSource src;
  mf::Cid root = Import(&src, {}, SmallProfile(true, 1, 256, 174));
  UnixfsReader reader(&src);
  EXPECT_EQ(reader.Size(root, DeadlineIn(1s)).value(), 0u);
  EXPECT_TRUE(ReadRange(reader, root, 0, 100).empty());
  auto s = StreamRange(reader, root, 0, UINT64_MAX);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->empty());
}

// Root: inline "HEAD-" then [mid1, leaf3]; mid1: inline "mid-" then [leaf1, leaf2].
struct HandDag {
  FakeBlockSource src;
  Bytes expected;
  mf::Cid root = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Sha256Of({}));
  mf::Cid leaf1 = root;
};

void BuildHandDag(HandDag* d) {
  Block leaf1 = Block::Make(mf::kCodecRaw, ToBytes("aaaaaaaaaa")).value();
  Block leaf2 = FileNode(ToBytes("bbbbbbb"), {});  // dag-pb File leaf
  Block leaf3 = FileNode(ToBytes("cc"), {}, std::nullopt, {}, "", codec::UnixfsType::kRaw);
  Block mid = FileNode(ToBytes("mid-"), {{leaf1.cid(), 10}, {leaf2.cid(), 7}});
  Block root = FileNode(ToBytes("HEAD-"), {{mid.cid(), 21}, {leaf3.cid(), 2}});
  for (const Block& b : {leaf1, leaf2, leaf3, mid, root}) d->src.Add(b);
  d->expected = ToBytes("HEAD-mid-aaaaaaaaaabbbbbbbcc");
  d->root = root.cid();
  d->leaf1 = leaf1.cid();
}

TEST(UnixfsReader, InlineDataOnInternalNodesEveryRange) {
  HandDag d;
  BuildHandDag(&d);
  UnixfsReaderOptions opt;
  opt.max_inflight = 3;
  opt.readahead_blocks = 2;
  UnixfsReader reader(&d.src, opt);
  ASSERT_EQ(reader.Size(d.root, DeadlineIn(1s)).value(), d.expected.size());
  for (uint64_t off = 0; off <= d.expected.size() + 1; ++off) {
    for (uint64_t len = 0; len <= d.expected.size() + 1 - off; ++len) {
      ASSERT_EQ(ReadRange(reader, d.root, off, len), Slice(d.expected, off, len))
          << off << "+" << len;
      auto s = StreamRange(reader, d.root, off, len);
      ASSERT_TRUE(s.ok()) << s.error().ToString();
      ASSERT_EQ(*s, Slice(d.expected, off, len)) << off << "+" << len;
    }
  }
}

TEST(UnixfsReader, InternalNodesAreCachedLeavesFetched) {
  HandDag d;
  BuildHandDag(&d);
  UnixfsReader reader(&d.src);
  ASSERT_EQ(ReadRange(reader, d.root, 9, 3), ToBytes("aaa"));
  uint64_t after_first = d.src.gets();
  EXPECT_EQ(after_first, 3u);  // root, mid, leaf1
  ASSERT_EQ(ReadRange(reader, d.root, 12, 3), ToBytes("aaa"));
  EXPECT_EQ(d.src.gets(), after_first + 1);  // only the leaf again
  EXPECT_GE(reader.stats().node_cache_hits, 2u);
}

TEST(UnixfsReader, NotAFile) {
  FakeBlockSource src;
  codec::UnixfsData dir;
  dir.type = codec::UnixfsType::kDirectory;
  codec::PbNode n;
  n.data = codec::EncodeUnixfs(dir);
  Block dirb = Block::Make(mf::kCodecDagPb, codec::EncodeDagPb(n)).value();
  src.Add(dirb);
  codec::UnixfsData link;
  link.type = codec::UnixfsType::kSymlink;
  link.data = ToBytes("/etc/passwd");
  codec::PbNode ln;
  ln.data = codec::EncodeUnixfs(link);
  Block linkb = Block::Make(mf::kCodecDagPb, codec::EncodeDagPb(ln)).value();
  src.Add(linkb);
  UnixfsReader reader(&src);
  for (const Block& b : {dirb, linkb}) {
    auto s = reader.Size(b.cid(), DeadlineIn(1s));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), Errc::kInvalidArgument);
    EXPECT_NE(s.error().message().find("not a file"), std::string::npos);
    Bytes out(10);
    EXPECT_EQ(reader.ReadAt(b.cid(), 0, out, DeadlineIn(1s)).error().code(),
              Errc::kInvalidArgument);
  }
  // A directory deeper in a file DAG is corruption, not a user error.
  Block bad2 = FileNode({}, {{dirb.cid(), 5}});
  src.Add(bad2);
  Bytes out(5);
  auto r = reader.ReadAt(bad2.cid(), 0, out, DeadlineIn(1s));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kCorrupt);
}

void ExpectCorrupt(FakeBlockSource* src, const mf::Cid& root, const std::string& needle) {
  UnixfsReader reader(src);
  Bytes out(64);
  auto r = reader.ReadAt(root, 0, out, DeadlineIn(2s));
  ASSERT_FALSE(r.ok()) << needle;
  EXPECT_EQ(r.error().code(), Errc::kCorrupt) << r.error().ToString();
  EXPECT_NE(r.error().message().find("corrupt DAG"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
  auto s = StreamRange(reader, root, 0, UINT64_MAX);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kCorrupt);
}

TEST(UnixfsReader, CorruptDags) {
  FakeBlockSource src;
  Block leaf = Block::Make(mf::kCodecRaw, ToBytes("0123456789")).value();
  src.Add(leaf);

  // len(Links) != len(blocksizes)
  Block b1 = FileNode({}, {{leaf.cid(), 10}}, 20, {10, 10});
  // filesize != Σ blocksizes
  Block b2 = FileNode({}, {{leaf.cid(), 10}}, 11);
  // leaf length != parent's blocksize (parent claims 12 bytes)
  Block b3 = FileNode({}, {{leaf.cid(), 12}});
  // non-empty Name on a chunk link
  Block b4 = FileNode({}, {{leaf.cid(), 10}}, std::nullopt, {}, "evil");
  // internal node whose filesize disagrees with its parent's blocksize
  Block mid = FileNode({}, {{leaf.cid(), 10}});
  Block b5 = FileNode({}, {{mid.cid(), 9}});
  for (const Block& b : {b1, b2, b3, b4, mid, b5}) src.Add(b);
  ExpectCorrupt(&src, b1.cid(), "blocksizes");
  ExpectCorrupt(&src, b2.cid(), "filesize");
  ExpectCorrupt(&src, b3.cid(), leaf.cid().ToString());
  ExpectCorrupt(&src, b4.cid(), "name");
  ExpectCorrupt(&src, b5.cid(), mid.cid().ToString());

  // Undecodable dag-pb.
  Block junk = Block::Make(mf::kCodecDagPb, Bytes{0xff, 0xff, 0xff}).value();
  src.Add(junk);
  ExpectCorrupt(&src, junk.cid(), junk.cid().ToString());
}

TEST(UnixfsReader, DepthLimit) {
  FakeBlockSource src;
  Block cur = Block::Make(mf::kCodecRaw, ToBytes("x")).value();
  src.Add(cur);
  for (int i = 0; i < 40; ++i) {
    cur = FileNode({}, {{cur.cid(), 1}});
    src.Add(cur);
  }
  ExpectCorrupt(&src, cur.cid(), "deeper than 32");
}

TEST(UnixfsReader, SourceErrorsPropagateWithContext) {
  HandDag d;
  BuildHandDag(&d);
  d.src.SetFault(d.leaf1, Fault::NotFound());
  UnixfsReader reader(&d.src);
  Bytes out(30);
  auto r = reader.ReadAt(d.root, 0, out, DeadlineIn(1s));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  EXPECT_NE(r.error().message().find(d.root.ToString()), std::string::npos);
  // Reads that do not touch the missing leaf still work.
  EXPECT_EQ(ReadRange(reader, d.root, 0, 9), ToBytes("HEAD-mid-"));
}

TEST(UnixfsReader, DeadlineIsRespected) {
  HandDag d;
  BuildHandDag(&d);
  d.src.SetFault(d.leaf1, Fault::Delay(5s));
  UnixfsReader reader(&d.src);
  Bytes out(30);
  auto start = Clock::now();
  auto r = reader.ReadAt(d.root, 0, out, DeadlineIn(200ms));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kTimeout);
  EXPECT_LT(ms, 1000);
}

TEST(UnixfsReader, SinkErrorStopsStream) {
  HandDag d;
  BuildHandDag(&d);
  UnixfsReader reader(&d.src);
  int calls = 0;
  Status st = reader.Stream(
      d.root, 0, UINT64_MAX,
      [&](ByteView) {
        ++calls;
        return Error(Errc::kIo, "stdout closed");
      },
      DeadlineIn(1s));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kIo);
  EXPECT_EQ(calls, 1);
}

// ----- Stream with StreamDag -----

struct StreamCase {
  FakeBlockSource src;
  Bytes data;
  mf::Cid root = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Sha256Of({}));
  explicit StreamCase(size_t size = 20000) {
    data = RandomBytes(size, 9);
    root = Import(&src, data, SmallProfile(true, 1, 100, 6));
    src.EnableStreaming();
  }
};

TEST(UnixfsReaderStream, UsesStreamDagAndNoPerBlockGets) {
  StreamCase c;
  UnixfsReader reader(&c.src);
  auto got = StreamRange(reader, c.root, 0, UINT64_MAX);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, c.data);
  EXPECT_EQ(c.src.streams(), 1u);
  EXPECT_EQ(c.src.gets(), 0u);
  EXPECT_GT(reader.stats().blocks_streamed, 200u);

  // A middle range: the stream carries only the needed blocks.
  c.src.ResetCounters();
  got = StreamRange(reader, c.root, 7777, 3000);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, Slice(c.data, 7777, 3000));
  EXPECT_EQ(c.src.gets(), 0u);
}

TEST(UnixfsReaderStream, TruncatedStreamFallsBackToGet) {
  StreamCase c;
  c.src.TruncateStreamsAfter(50);
  UnixfsReader reader(&c.src);
  auto got = StreamRange(reader, c.root, 0, UINT64_MAX);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, c.data);
  EXPECT_EQ(c.src.streamed_blocks(), 50u);
  EXPECT_GT(c.src.gets(), 100u);
  EXPECT_EQ(reader.stats().stream_fallbacks, 1u);
  // Every block came exactly once, from the stream or from Get, except the root (cached).
  EXPECT_EQ(reader.stats().blocks_streamed + reader.stats().blocks_fetched, c.src.block_count());
}

TEST(UnixfsReaderStream, StreamOfWrongBlocksIsAbandoned) {
  StreamCase c(60000);
  c.src.StreamWholeDag();  // ignores the range: sends everything from the start
  UnixfsReaderOptions opt;
  opt.stream_staging_bytes = 4096;  // a few blocks
  UnixfsReader reader(&c.src, opt);
  auto got = StreamRange(reader, c.root, 50000, 5000);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, Slice(c.data, 50000, 5000));
  EXPECT_LT(c.src.streamed_blocks(), 100u);  // stopped early, not the whole DAG
}

TEST(UnixfsReaderStream, DuplicateBlocksSentOnceStillComplete) {
  // A file of identical chunks: the stream sends the leaf once (dups=n).
  FakeBlockSource src;
  Bytes data(100 * 50, 'z');
  mf::Cid root = Import(&src, data, SmallProfile(true, 1, 100, 8));
  src.EnableStreaming();
  UnixfsReader reader(&src);
  auto got = StreamRange(reader, root, 0, UINT64_MAX);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
}

TEST(UnixfsReaderStream, WithoutStreamSupport) {
  StreamCase c;
  c.src.EnableStreaming(false);
  UnixfsReader reader(&c.src);
  auto got = StreamRange(reader, c.root, 123, 4567);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, Slice(c.data, 123, 4567));
  EXPECT_EQ(c.src.streams(), 0u);
  EXPECT_EQ(reader.stats().blocks_streamed, 0u);
}

TEST(UnixfsReaderStream, StreamFailingAtOnceFallsBack) {
  StreamCase c;
  c.src.TruncateStreamsAfter(1);  // the root only, then the connection drops
  UnixfsReader reader(&c.src);
  auto got = StreamRange(reader, c.root, 0, UINT64_MAX);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, c.data);
}

TEST(UnixfsReaderStream, StalledStreamFallsBackWithoutWaitingForIt) {
  StreamCase c;
  auto gate = std::make_shared<ipfly::testing::Gate>();
  c.src.SetStreamGate(gate);
  UnixfsReaderOptions opt;
  opt.stream_block_timeout_ms = 100;
  auto start = Clock::now();
  {
    UnixfsReader reader(&c.src, opt);
    Bytes out;
    Status st = reader.Stream(
        c.root, 0, UINT64_MAX,
        [&](ByteView b) {
          out.insert(out.end(), b.begin(), b.end());
          return OkStatus();
        },
        DeadlineIn(30s));
    ASSERT_TRUE(st.ok()) << st.error().ToString();
    EXPECT_EQ(out, c.data);
    // Returned long before the stalled stream's deadline.
    EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(),
              5000);
    EXPECT_EQ(reader.stats().stream_fallbacks, 1u);
    EXPECT_EQ(reader.stats().blocks_streamed, 0u);
    gate->Open();  // the stalled stream now ends; the reader joins it on destruction
  }
}

TEST(UnixfsReaderStream, ThroughFetcherFillsCache) {
  StreamCase c;
  MemoryBlockStore cache("cache");
  FetcherOptions o;
  o.cache = &cache;
  o.sources = {&c.src};
  Fetcher fetcher(std::move(o));
  UnixfsReader reader(&fetcher);
  auto got = StreamRange(reader, c.root, 0, UINT64_MAX);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, c.data);
  fetcher.FlushCache();  // cache writes are asynchronous
  EXPECT_EQ(cache.stats().blocks, c.src.block_count());
  // Second time: root is local, so the fetcher declines to stream and the cache serves it.
  c.src.ResetCounters();
  got = StreamRange(reader, c.root, 0, UINT64_MAX);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, c.data);
  EXPECT_EQ(c.src.gets() + c.src.streams(), 0u);
}

TEST(UnixfsReader, ConcurrentReadersShareOneReader) {
  FakeBlockSource src;
  Bytes data = RandomBytes(50000, 3);
  mf::Cid root = Import(&src, data, SmallProfile(true, 1, 256, 8));
  UnixfsReaderOptions opt;
  opt.max_inflight = 4;
  UnixfsReader reader(&src, opt);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 50; ++i) {
        uint64_t off = rng() % data.size();
        size_t len = rng() % 3000;
        Bytes out(len);
        auto n = reader.ReadAt(root, off, out, DeadlineIn(10s));
        if (!n.ok()) {
          ++bad;
          continue;
        }
        out.resize(*n);
        if (out != Slice(data, off, len)) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// ----- Memory bound of a 1 GiB stream -----

// Serves a synthetic 1 GiB file without holding it: every leaf is the same 1 MiB raw block (the
// reader does not know that; each Get hands out a fresh copy), under a two-level tree.
TEST(UnixfsReaderStream, OneGiBStreamStaysWellBelow64MiB) {
  constexpr size_t kLeaf = 1 << 20;
  constexpr size_t kFanout = 32;  // 32 × 32 × 1 MiB = 1 GiB
  FakeBlockSource src;
  Bytes leaf_bytes = RandomBytes(kLeaf, 5);
  Block leaf = Block::Make(mf::kCodecRaw, leaf_bytes).value();
  src.Add(leaf);
  std::vector<std::pair<mf::Cid, uint64_t>> leaves(kFanout, {leaf.cid(), kLeaf});
  Block mid = FileNode({}, leaves);
  src.Add(mid);
  std::vector<std::pair<mf::Cid, uint64_t>> mids(kFanout, {mid.cid(), kFanout * kLeaf});
  Block root = FileNode({}, mids);
  src.Add(root);
  const uint64_t total = uint64_t{kFanout} * kFanout * kLeaf;

  UnixfsReaderOptions opt;
  opt.max_inflight = 8;
  opt.readahead_blocks = 16;
  UnixfsReader reader(&src, opt);
  ASSERT_EQ(reader.Size(root.cid(), DeadlineIn(5s)).value(), total);

  auto heap = [] {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
  };
  const size_t base = heap();
  size_t peak = 0;
  uint64_t seen = 0;
  bool content_ok = true;
  Status st = reader.Stream(
      root.cid(), 0, UINT64_MAX,
      [&](ByteView b) {
        peak = std::max(peak, heap());
        // Spot-check content: the byte at file offset `seen` is leaf_bytes[seen % kLeaf].
        if (b.front() != leaf_bytes[seen % kLeaf]) content_ok = false;
        seen += b.size();
        return OkStatus();
      },
      DeadlineIn(120s));
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(seen, total);
  EXPECT_TRUE(content_ok);
  const size_t growth = peak > base ? peak - base : 0;
  std::printf("1 GiB stream: peak heap growth %.1f MiB\n", growth / 1048576.0);
  EXPECT_LT(growth, size_t{40} << 20);
}

}  // namespace
}  // namespace ipfly::fetch
