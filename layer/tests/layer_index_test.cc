// Layer index: tar semantics (later wins, implied parents, hard links), the encoded format
// (round trip, corruption), and LayerReader random access with span verification.
#include "layer/layer_index.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "layer/layer_reader.h"
#include "tests/support/process.h"

namespace ipfly::layer {
namespace {

TarEntry Member(std::string path, EntryType t, uint64_t size = 0, uint64_t off = 0) {
  TarEntry e;
  e.path = std::move(path);
  e.type = t;
  e.mode = t == EntryType::kDirectory ? 0755 : 0644;
  e.size = size;
  e.data_offset = off;
  return e;
}

const IndexEntry* Find(const std::vector<IndexEntry>& v, const std::string& p) {
  for (const auto& e : v) {
    if (e.path == p) return &e;
  }
  return nullptr;
}

TEST(ResolveEntries, LaterWinsImpliedParentsAndHardLinks) {
  std::vector<TarEntry> m;
  m.push_back(Member("a/b/file", EntryType::kFile, 10, 512));   // parents implied
  m.push_back(Member("a/b/file", EntryType::kFile, 20, 2048));  // later wins
  m.push_back(Member("d", EntryType::kDirectory));
  m.push_back(Member("d/x", EntryType::kFile, 1, 4096));
  m.push_back(Member("d", EntryType::kFile, 3, 5120));  // dir replaced: d/x dropped
  auto h = Member("hl", EntryType::kHardlink);
  h.link_target = "a/b/file";
  m.push_back(h);
  auto bad = Member("hl2", EntryType::kHardlink);
  bad.link_target = "missing";
  m.push_back(bad);  // skipped, like extraction
  auto out = ResolveEntries(m);
  ASSERT_TRUE(out.ok()) << out.error().ToString();
  ASSERT_FALSE(out->empty());
  EXPECT_EQ((*out)[0].path, "");
  for (size_t i = 1; i < out->size(); ++i) EXPECT_LT((*out)[i - 1].path, (*out)[i].path);
  ASSERT_NE(Find(*out, "a"), nullptr);
  EXPECT_EQ(Find(*out, "a")->type, EntryType::kDirectory);
  EXPECT_EQ(Find(*out, "a/b/file")->size, 20u);
  EXPECT_EQ(Find(*out, "a/b/file")->data_offset, 2048u);
  EXPECT_EQ(Find(*out, "d")->type, EntryType::kFile);
  EXPECT_EQ(Find(*out, "d/x"), nullptr);
  ASSERT_NE(Find(*out, "hl"), nullptr);
  EXPECT_EQ(Find(*out, "hl")->type, EntryType::kHardlink);
  EXPECT_EQ(Find(*out, "hl")->data_offset, 2048u);
  EXPECT_EQ(Find(*out, "hl2"), nullptr);
}

TEST(ResolveEntries, HardLinkToReplacedFileKeepsOldContent) {
  std::vector<TarEntry> m;
  m.push_back(Member("f", EntryType::kFile, 5, 512));
  auto h = Member("h", EntryType::kHardlink);
  h.link_target = "f";
  m.push_back(h);
  m.push_back(Member("f", EntryType::kFile, 7, 2048));
  auto out = ResolveEntries(m);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(Find(*out, "h")->type, EntryType::kFile);  // stands alone now
  EXPECT_EQ(Find(*out, "h")->data_offset, 512u);
  EXPECT_EQ(Find(*out, "f")->data_offset, 2048u);
}

struct Built {
  Bytes blob;
  std::string tar;
  LayerIndex index;
};

Built BuildFrom(const std::string& compress_cmd, uint64_t span) {
  ipfly::testing::TempDir w;
  auto r = ipfly::testing::Sh(
      "set -e; cd '" + w.path() +
      "'; mkdir s; head -c 3000000 /dev/urandom > s/r; "
      "seq 1 400000 > s/t; mkdir s/d; echo hi > s/d/h; ln s/t s/hard; ln -s t s/sym; "
      "tar -C s -cf layer.tar . && " +
      compress_cmd + " < layer.tar > blob");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Built b;
  std::string blob = ipfly::testing::ReadFile(w / "blob");
  b.blob.assign(blob.begin(), blob.end());
  b.tar = ipfly::testing::ReadFile(w / "layer.tar");
  BuildOptions o;
  o.span = span;
  LayerIndexBuilder builder(o);
  std::mt19937_64 rng(1);
  size_t pos = 0;
  while (pos < b.blob.size()) {
    size_t n = std::min<size_t>(b.blob.size() - pos, 1 + rng() % 100000);
    EXPECT_TRUE(builder.Feed(ByteView(b.blob.data() + pos, n)).ok());
    pos += n;
  }
  auto idx = builder.Finish();
  EXPECT_TRUE(idx.ok()) << idx.error().ToString();
  if (idx.ok()) b.index = std::move(*idx);
  return b;
}

class MemBlob : public BlobSource {
 public:
  explicit MemBlob(Bytes b) : b_(std::move(b)) {}
  Result<size_t> ReadAt(uint64_t off, MutableByteView out, fetch::Deadline) override {
    if (off >= b_.size()) return size_t{0};
    size_t n = std::min<size_t>(out.size(), b_.size() - off);
    std::memcpy(out.data(), b_.data() + off, n);
    return n;
  }
  Bytes b_;
};

class IndexFormats : public ::testing::TestWithParam<std::string> {};

TEST_P(IndexFormats, RoundTripAndRandomReads) {
  Built b = BuildFrom(GetParam(), 256 * 1024);
  ASSERT_EQ(b.index.uncompressed_size, b.tar.size());
  ASSERT_EQ(b.index.span_hashes.size(), b.index.points.size());
  ASSERT_TRUE(b.index.layer_digest.has_value());
  EXPECT_EQ(b.index.layer_digest->ToString(), Digest::FromSha256(Sha256Of(b.blob)).ToString());
  Bytes enc = b.index.Encode();
  auto dec = LayerIndex::Decode(enc);
  ASSERT_TRUE(dec.ok()) << dec.error().ToString();
  EXPECT_EQ(dec->entries.size(), b.index.entries.size());
  EXPECT_EQ(dec->points.size(), b.index.points.size());
  EXPECT_EQ(dec->Encode(), enc);

  for (std::string cache : {std::string(), std::string("disk")}) {
    ipfly::testing::TempDir dir;
    LayerReaderOptions ro;
    if (!cache.empty()) ro.cache_dir = dir.path();
    auto idx = std::make_shared<const LayerIndex>(*dec);
    auto reader = LayerReader::Open(idx, std::make_unique<MemBlob>(b.blob), ro);
    ASSERT_TRUE(reader.ok()) << reader.error().ToString();
    std::mt19937_64 rng(7);
    for (int i = 0; i < 60; ++i) {
      uint64_t off = rng() % b.tar.size();
      size_t len = 1 + rng() % 600000;
      Bytes out(len);
      auto n = (*reader)->Read(off, out, fetch::DeadlineIn(std::chrono::seconds(10)));
      ASSERT_TRUE(n.ok()) << n.error().ToString();
      ASSERT_EQ(*n, std::min<uint64_t>(len, b.tar.size() - off));
      ASSERT_EQ(std::memcmp(out.data(), b.tar.data() + off, *n), 0) << "offset " << off;
    }
    if (!cache.empty() && b.index.compression != Compression::kNone) {
      EXPECT_GT((*reader)->stats().spans_cached, 0u);
      // Reopen: the span cache survives and serves without touching the blob.
      auto again = LayerReader::Open(idx, std::make_unique<MemBlob>(Bytes{}), ro);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ((*again)->stats().spans_cached, (*reader)->stats().spans_cached);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Compressions, IndexFormats,
                         ::testing::Values("gzip -c", "cat", "zstd -q -c"));

TEST(LayerIndex, CorruptEncodingIsRejected) {
  Built b = BuildFrom("gzip -c", 256 * 1024);
  Bytes enc = b.index.Encode();
  std::mt19937_64 rng(3);
  for (int i = 0; i < 200; ++i) {
    Bytes bad = enc;
    size_t pos = rng() % bad.size();
    bad[pos] ^= static_cast<uint8_t>(1 + rng() % 255);
    EXPECT_FALSE(LayerIndex::Decode(bad).ok()) << "flip at " << pos;
  }
  for (size_t cut : {size_t{0}, size_t{7}, size_t{20}, enc.size() / 2, enc.size() - 1}) {
    EXPECT_FALSE(LayerIndex::Decode(ByteView(enc.data(), cut)).ok()) << cut;
  }
}

TEST(LayerReader, CorruptBlobNeverServesWrongBytes) {
  Built b = BuildFrom("gzip -c", 256 * 1024);
  auto idx = std::make_shared<const LayerIndex>(b.index);
  Bytes bad = b.blob;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 40; ++i) bad[1000 + rng() % (bad.size() - 2000)] ^= 0x5a;
  auto reader = LayerReader::Open(idx, std::make_unique<MemBlob>(bad));
  ASSERT_TRUE(reader.ok());
  int errors = 0;
  for (size_t s = 0; s < idx->points.size(); ++s) {
    uint64_t start = idx->SpanStart(s);
    Bytes out(static_cast<size_t>(idx->SpanEnd(s) - start));
    auto n = (*reader)->Read(start, out, fetch::DeadlineIn(std::chrono::seconds(10)));
    if (!n.ok()) {
      EXPECT_EQ(n.error().code(), Errc::kCorrupt) << n.error().ToString();
      ++errors;
      continue;
    }
    EXPECT_EQ(std::memcmp(out.data(), b.tar.data() + start, *n), 0) << "wrong bytes in span " << s;
  }
  EXPECT_GT(errors, 0);
}

// Two indexes of one blob with different span sizes share a cache directory: their span maps
// must never be mixed up (span i of one is not span i of the other).
TEST(LayerReader, IndexesWithDifferentSpansDoNotShareACache) {
  Built small = BuildFrom("gzip -c", 64 * 1024);
  Built big = small;  // the same blob, indexed again with 1 MiB spans
  {
    BuildOptions o;
    o.span = 1024 * 1024;
    LayerIndexBuilder builder(o);
    ASSERT_TRUE(builder.Feed(small.blob).ok());
    auto idx = builder.Finish();
    ASSERT_TRUE(idx.ok()) << idx.error().ToString();
    big.index = std::move(*idx);
  }
  auto a = std::make_shared<const LayerIndex>(small.index);
  auto c = std::make_shared<const LayerIndex>(big.index);
  ASSERT_NE(a->points.size(), c->points.size());
  EXPECT_NE(SpanCacheName(*a), SpanCacheName(*c));
  EXPECT_EQ(SpanCacheName(*a), SpanCacheName(LayerIndex(small.index)));  // stable
  EXPECT_EQ(SpanCacheName(*a).rfind(a->layer_digest->hex() + "-", 0), 0u);
  ipfly::testing::TempDir tmp;
  LayerReaderOptions ro;
  ro.cache_dir = tmp.path();
  auto dl = [] { return fetch::DeadlineIn(std::chrono::seconds(10)); };
  {
    // Fill the first span of the fine-grained index only.
    auto r = LayerReader::Open(a, std::make_unique<MemBlob>(small.blob), ro);
    ASSERT_TRUE(r.ok());
    Bytes out(16);
    ASSERT_TRUE((*r)->Read(0, out, dl()).ok());
  }
  // The coarse index reads everything right from the same directory, and its own cache
  // persists across a reopen.
  for (int round = 0; round < 2; ++round) {
    auto r = LayerReader::Open(c, std::make_unique<MemBlob>(big.blob), ro);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)->stats().spans_cached, round == 0 ? 0u : c->points.size());
    for (size_t s = 0; s < c->points.size(); ++s) {
      uint64_t start = c->SpanStart(s);
      Bytes out(static_cast<size_t>(c->SpanEnd(s) - start));
      auto n = (*r)->Read(start, out, dl());
      ASSERT_TRUE(n.ok()) << n.error().ToString();
      ASSERT_EQ(std::memcmp(out.data(), big.tar.data() + start, *n), 0) << "span " << s;
    }
  }
}

// Zero-copy access hands out the cache file only for ranges that are entirely cached, at the
// stream's own offsets, and a drop waits until the caller is done with it.
TEST(LayerReader, WithCachedRangeOnlyForCachedRanges) {
  Built b = BuildFrom("gzip -c", 64 * 1024);
  auto idx = std::make_shared<const LayerIndex>(b.index);
  ASSERT_GT(idx->points.size(), 4u);
  ipfly::testing::TempDir tmp;
  LayerReaderOptions ro;
  ro.cache_dir = tmp.path();
  auto r = LayerReader::Open(idx, std::make_unique<MemBlob>(b.blob), ro);
  ASSERT_TRUE(r.ok());
  LayerReader& reader = **r;
  const uint64_t s1 = idx->SpanStart(1), s3 = idx->SpanStart(3);
  int calls = 0;
  auto check = [&](int fd, uint64_t off) {
    ++calls;
    Bytes got(static_cast<size_t>(s3 - s1));
    if (::pread(fd, got.data(), got.size(), static_cast<off_t>(off)) !=
        static_cast<ssize_t>(got.size())) {
      return Status(IoError("short pread"));
    }
    EXPECT_EQ(off, s1);
    EXPECT_EQ(std::memcmp(got.data(), b.tar.data() + s1, got.size()), 0);
    return OkStatus();
  };
  // Nothing cached yet: no fd, no fetch.
  EXPECT_EQ(reader.WithCachedRange(s1, s3 - s1, check).error().code(), Errc::kNotFound);
  EXPECT_EQ(reader.stats().spans_decompressed, 0u);
  // Span 1 cached, span 2 not: still not.
  Bytes one(16);
  ASSERT_TRUE(reader.Read(s1, one, fetch::DeadlineIn(std::chrono::seconds(10))).ok());
  EXPECT_EQ(reader.WithCachedRange(s1, s3 - s1, check).error().code(), Errc::kNotFound);
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(
      reader.Read(idx->SpanStart(2), one, fetch::DeadlineIn(std::chrono::seconds(10))).ok());
  EXPECT_TRUE(reader.WithCachedRange(s1, s3 - s1, check).ok());
  EXPECT_EQ(calls, 1);
  // Out of range: not found, never a call.
  EXPECT_EQ(reader.WithCachedRange(idx->uncompressed_size, 1, check).error().code(),
            Errc::kNotFound);
  EXPECT_EQ(reader.WithCachedRange(0, 0, check).error().code(), Errc::kNotFound);
  // A drop started while the caller holds the range waits for it.
  std::atomic<bool> in_fn{false}, dropped{false};
  std::thread holder([&] {
    EXPECT_TRUE(reader
                    .WithCachedRange(s1, s3 - s1,
                                     [&](int fd, uint64_t off) {
                                       in_fn = true;
                                       std::this_thread::sleep_for(std::chrono::milliseconds(200));
                                       EXPECT_FALSE(dropped.load());
                                       return check(fd, off);
                                     })
                    .ok());
  });
  while (!in_fn) std::this_thread::yield();
  auto freed = reader.DropSpanCache();
  dropped = true;
  holder.join();
  ASSERT_TRUE(freed.ok());
  EXPECT_GT(*freed, 0u);
  EXPECT_EQ(reader.WithCachedRange(s1, s3 - s1, check).error().code(), Errc::kNotFound);
}

// The snapshotter's span cache cap drops caches while containers read: every read must still
// return the layer's bytes (never the zeros of a punched hole), and the accounting and the
// persisted map must stay right.
TEST(LayerReader, DropSpanCacheUnderConcurrentReadsNeverServesWrongBytes) {
  Built b = BuildFrom("gzip -c", 64 * 1024);
  auto idx = std::make_shared<const LayerIndex>(b.index);
  ASSERT_GT(idx->points.size(), 20u);
  // On tmpfs when there is one (fdatasync is free there: the race is what is tested here; the
  // FUSE test of the snapshotter drops caches on a disk filesystem).
  struct ShmDir {
    std::string p;
    ShmDir() {
      std::string t = "/dev/shm/ipfly-drop-XXXXXX";
      if (::access("/dev/shm", W_OK) == 0 && ::mkdtemp(t.data())) p = t;
    }
    ~ShmDir() {
      std::error_code ec;
      if (!p.empty()) std::filesystem::remove_all(p, ec);
    }
  } shm;
  ipfly::testing::TempDir tmp;
  const std::string dir = shm.p.empty() ? tmp.path() : shm.p;
  std::atomic<uint64_t> announced{0};
  LayerReaderOptions ro;
  ro.cache_dir = dir;
  ro.on_span_cached = [&](uint64_t n) { announced += n; };
  // Every 8th cached read pauses before its pread: a drop would slip in there if it could.
  std::atomic<uint64_t> cached_reads{0};
  ro.test_before_cached_pread = [&] {
    if (++cached_reads % 8 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  };
  auto opened = LayerReader::Open(idx, std::make_unique<MemBlob>(b.blob), ro);
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  LayerReader& reader = **opened;
  auto span_size = [&](size_t i) { return idx->SpanEnd(i) - idx->SpanStart(i); };
  auto read_spans = [&](LayerReader& r, size_t from, size_t to) {
    Bytes out(static_cast<size_t>(idx->SpanEnd(to - 1) - idx->SpanStart(from)));
    auto n = r.Read(idx->SpanStart(from), out, fetch::DeadlineIn(std::chrono::seconds(10)));
    ASSERT_TRUE(n.ok()) << n.error().ToString();
    ASSERT_EQ(*n, out.size());
    ASSERT_EQ(std::memcmp(out.data(), b.tar.data() + idx->SpanStart(from), *n), 0);
  };

  // Accounting: the bytes of exactly the spans read.
  EXPECT_EQ(reader.SpanCacheBytes(), 0u);
  auto before = reader.LastAccess();
  read_spans(reader, 0, 4);
  EXPECT_GE(reader.LastAccess(), before);
  uint64_t four = span_size(0) + span_size(1) + span_size(2) + span_size(3);
  EXPECT_EQ(reader.SpanCacheBytes(), four);
  EXPECT_EQ(announced.load(), four);
  read_spans(reader, 2, 5);  // two hits, one new span
  EXPECT_EQ(reader.SpanCacheBytes(), four + span_size(4));

  // Many readers, random ranges, while the cache is dropped again and again.
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int i = 0; i < 150; ++i) {
        uint64_t off = rng() % b.tar.size();
        size_t len = 1 + rng() % 200000;
        Bytes out(len);
        auto n = reader.Read(off, out, fetch::DeadlineIn(std::chrono::seconds(30)));
        if (!n.ok()) {
          ++failed;
          continue;
        }
        if (std::memcmp(out.data(), b.tar.data() + off, *n) != 0) ++wrong;
      }
    });
  }
  int drops = 0;
  uint64_t released = 0;
  std::thread dropper([&] {
    while (!stop) {
      auto r = reader.DropSpanCache();
      EXPECT_TRUE(r.ok()) << r.error().ToString();
      if (r.ok() && *r > 0) {
        ++drops;
        released += *r;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (auto& t : readers) t.join();
  stop = true;
  dropper.join();
  EXPECT_EQ(wrong.load(), 0) << "a read returned bytes that are not the layer's";
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(drops, 3);
  EXPECT_GT(cached_reads.load(), 100u);
  EXPECT_EQ(reader.stats().drops, static_cast<uint64_t>(drops));
  // Everything announced was either released or is still cached.
  EXPECT_EQ(announced.load(), released + reader.SpanCacheBytes());

  // A final drop leaves an empty map and a data file with (almost) no blocks.
  uint64_t left = reader.SpanCacheBytes();
  auto last = reader.DropSpanCache();
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, left);
  EXPECT_EQ(reader.SpanCacheBytes(), 0u);
  EXPECT_EQ(reader.stats().spans_cached, 0u);
  std::string base = dir + "/" + SpanCacheName(*idx);
  struct stat st {};
  ASSERT_EQ(::stat((base + ".data").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), idx->uncompressed_size);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 64u << 10);
  auto empty = reader.DropSpanCache();  // nothing left: a no-op
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, 0u);

  // Reads after the drop fetch again; the persisted map lists exactly those spans.
  read_spans(reader, 10, 12);
  auto again = LayerReader::Open(idx, std::make_unique<MemBlob>(Bytes{}), ro);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ((*again)->stats().spans_cached, 2u);
  EXPECT_EQ((*again)->SpanCacheBytes(), span_size(10) + span_size(11));
  read_spans(**again, 10, 12);  // served from the cache: the blob source is empty
  Bytes out(16);
  auto gone = (*again)->Read(idx->SpanStart(0), out, fetch::DeadlineIn(std::chrono::seconds(5)));
  EXPECT_FALSE(gone.ok()) << "a dropped span must be fetched again, not read from the hole";
}

// A point whose sparse window keeps at least one byte.
size_t SparsePointWithBytes(const LayerIndex& idx) {
  for (size_t i = 0; i < idx.points.size(); ++i) {
    if (idx.points[i].sparse() && !idx.points[i].window.empty()) return i;
  }
  return idx.points.size();
}

TEST(LayerIndex, GzipWindowsAreSparseAndSmaller) {
  Built b = BuildFrom("gzip -c", 256 * 1024);
  ASSERT_LT(SparsePointWithBytes(b.index), b.index.points.size());
  BuildOptions dense;
  dense.span = 256 * 1024;
  dense.sparse_windows = false;
  LayerIndexBuilder builder(dense);
  ASSERT_TRUE(builder.Feed(b.blob).ok());
  auto d = builder.Finish();
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->points.size(), b.index.points.size());
  EXPECT_EQ(d->span_hashes, b.index.span_hashes);
  EXPECT_LT(b.index.Encode().size(), d->Encode().size());
  // Both decode, and the dense one round-trips too.
  auto dd = LayerIndex::Decode(d->Encode());
  ASSERT_TRUE(dd.ok()) << dd.error().ToString();
  EXPECT_EQ(dd->Encode(), d->Encode());
}

// A wrong or missing (zeroed) byte in a sparse window must never reach a reader as wrong bytes:
// the span hash from the index catches it (kCorrupt).
TEST(LayerReader, DamagedSparseWindowIsCaughtBySpanHash) {
  Built b = BuildFrom("gzip -c", 256 * 1024);
  const size_t i = SparsePointWithBytes(b.index);
  ASSERT_LT(i, b.index.points.size());
  for (bool zero : {false, true}) {
    LayerIndex bad = b.index;
    uint8_t& byte = bad.points[i].window[0];  // the first byte of a run is always referenced
    const uint8_t was = byte;
    byte = zero ? 0 : static_cast<uint8_t>(byte ^ 0x21);
    if (byte == was) byte ^= 1;
    auto reader = LayerReader::Open(std::make_shared<const LayerIndex>(bad),
                                    std::make_unique<MemBlob>(b.blob));
    ASSERT_TRUE(reader.ok());
    const uint64_t start = bad.SpanStart(i);
    Bytes out(static_cast<size_t>(bad.SpanEnd(i) - start));
    auto n = (*reader)->Read(start, out, fetch::DeadlineIn(std::chrono::seconds(10)));
    ASSERT_FALSE(n.ok()) << "a damaged window byte went unnoticed";
    EXPECT_EQ(n.error().code(), Errc::kCorrupt) << n.error().ToString();
    // Other spans still read correctly.
    const size_t j = i == 0 ? 1 : 0;
    const uint64_t s2 = bad.SpanStart(j);
    Bytes out2(static_cast<size_t>(bad.SpanEnd(j) - s2));
    auto n2 = (*reader)->Read(s2, out2, fetch::DeadlineIn(std::chrono::seconds(10)));
    ASSERT_TRUE(n2.ok()) << n2.error().ToString();
    EXPECT_EQ(std::memcmp(out2.data(), b.tar.data() + s2, *n2), 0);
  }
}

TEST(LayerIndex, MalformedSparseWindowsAreRejected) {
  Built b = BuildFrom("gzip -c", 256 * 1024);
  const size_t i = SparsePointWithBytes(b.index);
  ASSERT_LT(i, b.index.points.size());
  auto decodes = [](const LayerIndex& idx) { return LayerIndex::Decode(idx.Encode()).ok(); };
  ASSERT_TRUE(decodes(b.index));
  const AccessPoint& good = b.index.points[i];
  {
    LayerIndex bad = b.index;  // a run past the end of the window
    bad.points[i].window_runs.back().offset = good.window_size - good.window_runs.back().length + 1;
    EXPECT_FALSE(decodes(bad));
  }
  {
    LayerIndex bad = b.index;  // bytes and runs disagree
    bad.points[i].window.push_back(0);
    EXPECT_FALSE(decodes(bad));
  }
  {
    LayerIndex bad = b.index;  // adjacent runs (not canonical)
    AccessPoint& p = bad.points[i];
    p.window_size = 32768;
    p.window_runs = {{0, 1}, {1, 1}};
    p.window = {1, 2};
    EXPECT_FALSE(decodes(bad));
    p.window_runs = {{0, 1}, {2, 1}};  // the same, one apart: fine
    EXPECT_TRUE(decodes(bad));
  }
  {
    LayerIndex bad = b.index;  // a window over 32 KiB
    bad.points[i].window_size = 32769;
    EXPECT_FALSE(decodes(bad));
  }
  {
    LayerIndex bad = b.index;  // a member start carrying a sparse window
    bad.points[i].member_start = true;
    EXPECT_FALSE(decodes(bad));
  }
}

// Format version 1 (dense windows, no window-kind byte) is still read.
Bytes EncodeV1(const LayerIndex& idx) {
  Bytes p;
  auto raw = [&](const void* v, size_t n) {
    p.insert(p.end(), static_cast<const uint8_t*>(v), static_cast<const uint8_t*>(v) + n);
  };
  auto u8 = [&](uint8_t v) { p.push_back(v); };
  auto u32 = [&](uint32_t v) { raw(&v, 4); };
  auto u64 = [&](uint64_t v) { raw(&v, 8); };
  auto str = [&](std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s.data(), s.size());
  };
  str(idx.layer_digest ? idx.layer_digest->ToString() : "");
  Bytes cid = idx.blob_cid ? idx.blob_cid->ToBytes() : Bytes{};
  u32(static_cast<uint32_t>(cid.size()));
  raw(cid.data(), cid.size());
  u8(static_cast<uint8_t>(idx.compression));
  u64(idx.compressed_size);
  u64(idx.uncompressed_size);
  u64(idx.span);
  u64(idx.frames);
  u8(idx.seekable ? 1 : 0);
  u32(static_cast<uint32_t>(idx.points.size()));
  for (size_t i = 0; i < idx.points.size(); ++i) {
    const AccessPoint& pt = idx.points[i];
    u64(pt.compressed_bit_offset);
    u64(pt.uncompressed_offset);
    u8(pt.member_start ? 1 : 0);
    u32(static_cast<uint32_t>(pt.window.size()));
    raw(pt.window.data(), pt.window.size());
    raw(idx.span_hashes[i].data(), 32);
  }
  u32(static_cast<uint32_t>(idx.entries.size()));
  for (const auto& e : idx.entries) {
    str(e.path);
    u8(static_cast<uint8_t>(e.type));
    u32(e.mode);
    u32(e.uid);
    u32(e.gid);
    raw(&e.mtime_sec, 8);
    u32(e.mtime_nsec);
    u64(e.size);
    u64(e.data_offset);
    str(e.link_target);
    u32(e.dev_major);
    u32(e.dev_minor);
    u32(static_cast<uint32_t>(e.xattrs.size()));
    for (const auto& [k, v] : e.xattrs) {
      str(k);
      str(v);
    }
  }
  Bytes out = {'I', 'P', 'F', 'L', 'Y', 'I', 'X', '1'};
  uint32_t version = 1;
  uint64_t size = p.size();
  out.insert(out.end(), reinterpret_cast<uint8_t*>(&version),
             reinterpret_cast<uint8_t*>(&version) + 4);
  out.insert(out.end(), reinterpret_cast<uint8_t*>(&size), reinterpret_cast<uint8_t*>(&size) + 8);
  Bytes z(ZSTD_compressBound(p.size()));
  z.resize(ZSTD_compress(z.data(), z.size(), p.data(), p.size(), 3));
  out.insert(out.end(), z.begin(), z.end());
  auto sum = Sha256Of(p);
  out.insert(out.end(), sum.begin(), sum.end());
  return out;
}

TEST(LayerIndex, Version1StillDecodes) {
  BuildOptions o;
  o.span = 256 * 1024;
  o.sparse_windows = false;
  Built b = BuildFrom("gzip -c", 256 * 1024);
  LayerIndexBuilder builder(o);
  ASSERT_TRUE(builder.Feed(b.blob).ok());
  auto dense = builder.Finish();
  ASSERT_TRUE(dense.ok());
  auto v1 = LayerIndex::Decode(EncodeV1(*dense));
  ASSERT_TRUE(v1.ok()) << v1.error().ToString();
  EXPECT_EQ(v1->Encode(), dense->Encode());  // same index, re-encoded as the current version
  auto reader =
      LayerReader::Open(std::make_shared<const LayerIndex>(*v1), std::make_unique<MemBlob>(b.blob));
  ASSERT_TRUE(reader.ok());
  Bytes out(b.tar.size());
  auto n = (*reader)->Read(0, out, fetch::DeadlineIn(std::chrono::seconds(20)));
  ASSERT_TRUE(n.ok()) << n.error().ToString();
  EXPECT_EQ(std::memcmp(out.data(), b.tar.data(), b.tar.size()), 0);
}

}  // namespace
}  // namespace ipfly::layer
