// Layer index: tar semantics (later wins, implied parents, hard links), the encoded format
// (round trip, corruption), and LayerReader random access with span verification.
#include "layer/layer_index.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

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

}  // namespace
}  // namespace ipfly::layer
