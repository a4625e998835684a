#include "layer/compression.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"

namespace ipfly::layer {
namespace {

using ipfly::testing::ReadFile;
using ipfly::testing::Sh;
using ipfly::testing::TempDir;

constexpr uint64_t kSpan = 64 * 1024;

// Layer-like test data: runs of word text, random bytes, zeros and short repeats, so deflate
// uses stored, fixed and dynamic blocks and long matches.
Bytes MakeData(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  static const char* kWords[] = {"layer",  "ipfs",  "gzip", "snapshot", "container",
                                 "the",    "of",    "fuse", "index",    "checkpoint",
                                 "window", "block", "\n",   "#include", "return",
                                 "0x1f8b", "{",     "}",    "  "};
  Bytes out;
  out.reserve(size);
  while (out.size() < size) {
    const size_t n = std::min<size_t>(size - out.size(), 1 + rng() % (384 * 1024));
    switch (rng() % 6) {
      case 0:
      case 1:
      case 2:
        for (size_t k = 0; k < n && out.size() < size;) {
          for (const char* w = kWords[rng() % std::size(kWords)]; *w; ++w, ++k) {
            out.push_back(static_cast<uint8_t>(*w));
          }
          out.push_back(' ');
          ++k;
        }
        break;
      case 3:
        for (size_t k = 0; k < n; ++k) out.push_back(static_cast<uint8_t>(rng()));
        break;
      case 4:
        out.insert(out.end(), n, 0);
        break;
      case 5: {
        uint8_t pat[7];
        for (auto& b : pat) b = static_cast<uint8_t>(rng());
        for (size_t k = 0; k < n; ++k) out.push_back(pat[k % (1 + (seed + k / 4096) % 7)]);
        break;
      }
    }
  }
  out.resize(size);
  return out;
}

Bytes ReadBytes(const std::string& path) { return ToBytes(ReadFile(path)); }

void WriteBytes(const std::string& path, ByteView b) {
  FILE* f = fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(fwrite(b.data(), 1, b.size(), f), b.size());
  fclose(f);
}

// Runs a shell pipeline that must succeed (a missing tool is a failure, never a skip).
void Shell(const std::string& script) {
  auto r = Sh("set -euo pipefail; " + script);
  ASSERT_EQ(r.exit_code, 0) << script << "\n" << r.err;
}

uint32_t TestCrc32(ByteView b) {
  uint32_t c = 0xFFFFFFFF;
  for (uint8_t x : b) {
    c ^= x;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320 & (0 - (c & 1)));
  }
  return ~c;
}

struct Indexed {
  Status status;
  Bytes out;
  std::vector<AccessPoint> points;
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t frames = 0;
  bool seekable = false;
};

// Feeds `blob` in random pieces (many tiny ones, some large).
Indexed Index(Compression c, ByteView blob, uint64_t span, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Indexed r;
  StreamIndexer ix(c, IndexerOptions{span}, [&](ByteView b) {
    r.out.insert(r.out.end(), b.begin(), b.end());
    return OkStatus();
  });
  size_t pos = 0;
  while (pos < blob.size()) {
    size_t n = rng() % 3 == 0 ? 1 + rng() % 64 : 1 + rng() % (512 * 1024);
    n = std::min(n, blob.size() - pos);
    r.status = ix.Feed(blob.subspan(pos, n));
    pos += n;
    if (!r.status.ok()) break;
  }
  if (r.status.ok()) r.status = ix.Finish();
  r.points = ix.points();
  r.compressed = ix.compressed_size();
  r.uncompressed = ix.uncompressed_size();
  r.frames = ix.frames();
  r.seekable = ix.seekable();
  return r;
}

BlobReadFn MemReader(ByteView blob, uint64_t* max_end = nullptr) {
  return [blob, max_end](uint64_t off, MutableByteView out) -> Result<size_t> {
    if (off > blob.size()) return size_t{0};
    const size_t n = std::min<size_t>(out.size(), blob.size() - off);
    memcpy(out.data(), blob.data() + off, n);
    if (max_end) *max_end = std::max(*max_end, off + n);
    return n;
  };
}

size_t PointFor(const std::vector<AccessPoint>& pts, uint64_t start) {
  auto it = std::upper_bound(pts.begin(), pts.end(), start, [](uint64_t s, const AccessPoint& p) {
    return s < p.uncompressed_offset;
  });
  return static_cast<size_t>(it - pts.begin()) - 1;
}

void CheckPoints(Compression c, const Indexed& ix, uint64_t span) {
  ASSERT_FALSE(ix.points.empty());
  EXPECT_EQ(ix.points[0].uncompressed_offset, 0u);
  for (size_t i = 0; i < ix.points.size(); ++i) {
    const AccessPoint& p = ix.points[i];
    EXPECT_LE(p.history_size(), 32u * 1024);
    EXPECT_LE(p.window.size(), p.history_size());
    if (c != Compression::kGzip || p.member_start) {
      EXPECT_TRUE(p.window.empty());
      EXPECT_FALSE(p.sparse());
      EXPECT_EQ(p.compressed_bit_offset % 8, 0u);
    } else {
      EXPECT_GT(p.history_size(), 0u);  // sparse windows may keep no bytes at all
    }
    if (i > 0) {
      const AccessPoint& q = ix.points[i - 1];
      EXPECT_GE(p.uncompressed_offset - q.uncompressed_offset, span) << "point " << i;
      EXPECT_GT(p.uncompressed_offset, q.uncompressed_offset);
      EXPECT_GT(p.compressed_bit_offset, q.compressed_bit_offset);
    }
    EXPECT_LE(p.compressed_bit_offset / 8, ix.compressed);
    EXPECT_LE(p.uncompressed_offset, ix.uncompressed);
  }
}

// The first step BlobReader takes past a hint (ISA-L wants a few bytes of look-ahead).
constexpr uint64_t kLookAhead = 16;

// One range through DecompressRange; checks bytes and that reads stayed within the hint.
void CheckRange(Compression c, ByteView blob, const Bytes& orig,
                const std::vector<AccessPoint>& pts, uint64_t start, uint64_t end,
                size_t chunk = 256 * 1024) {
  SCOPED_TRACE("range [" + std::to_string(start) + ", " + std::to_string(end) + ")");
  const size_t i = PointFor(pts, start);
  uint64_t hint = 0;
  if (i + 1 < pts.size() && end <= pts[i + 1].uncompressed_offset) {
    hint = (pts[i + 1].compressed_bit_offset + 7) / 8;
  }
  uint64_t max_end = 0;
  auto r = DecompressRange(c, pts[i], start, end, MemReader(blob, &max_end), hint, chunk);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  ASSERT_EQ(r->size(), end - start);
  ASSERT_TRUE(std::equal(r->begin(), r->end(), orig.begin() + start)) << "bytes differ";
  if (hint != 0) {
    // zlib never reads past the hint; ISA-L needs a little look-ahead beyond the last symbol.
    EXPECT_LE(max_end, hint + (GetInflateEngine() == InflateEngine::kIsal && c == Compression::kGzip
                                   ? kLookAhead
                                   : 0))
        << "read past the hint";
  }
}

const InflateEngine kEngines[] = {InflateEngine::kZlib, InflateEngine::kIsal};

// Random and boundary ranges, with every inflate engine.
void CheckRanges(Compression c, ByteView blob, const Bytes& orig,
                 const std::vector<AccessPoint>& pts, uint64_t seed,
                 const std::vector<uint64_t>& boundaries = {}) {
  const InflateEngine saved = GetInflateEngine();
  for (InflateEngine e : kEngines) {
    if (c != Compression::kGzip && e != saved) continue;
    SetInflateEngine(e);
    SCOPED_TRACE(e == InflateEngine::kZlib ? "zlib" : "isal");
    std::mt19937_64 rng(seed);
    const uint64_t size = orig.size();
    std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, size},
                                                         {0, 0},
                                                         {size, size},
                                                         {size ? size - 1 : 0, size},
                                                         {0, std::min<uint64_t>(1, size)}};
    for (int k = 0; k < 120; ++k) {
      const uint64_t s = rng() % (size + 1);
      const uint64_t len = rng() % 4 == 0 ? rng() % 64 : rng() % (300 * 1024);
      ranges.emplace_back(s, std::min(size, s + len));
    }
    for (size_t i = 1; i < pts.size(); ++i) {  // spanning, ending at and starting at checkpoints
      const uint64_t u = pts[i].uncompressed_offset;
      ranges.emplace_back(u - std::min<uint64_t>(u, 7), std::min(size, u + 9));
      ranges.emplace_back(pts[i - 1].uncompressed_offset, u);
      ranges.emplace_back(u, std::min(size, u + 1));
    }
    for (uint64_t b : boundaries) {  // member / frame boundaries
      ranges.emplace_back(b - std::min<uint64_t>(b, 100), std::min(size, b + 100));
      ranges.emplace_back(b, std::min(size, b + 1));
      ranges.emplace_back(b - std::min<uint64_t>(b, 1), b);
    }
    for (auto [s, e2] : ranges) {
      CheckRange(c, blob, orig, pts, s, e2);
      if (::testing::Test::HasFatalFailure()) break;
    }
    // Tiny read chunks: decoders must cope with any input split (ISA-L's read-ahead at member
    // ends, headers split across reads).
    for (size_t chunk : {size_t{1}, size_t{3}, size_t{1000}}) {
      for (int k = 0; k < 4; ++k) {
        const uint64_t s = rng() % (size + 1);
        CheckRange(c, blob, orig, pts, s, std::min(size, s + 20000), chunk);
      }
      for (uint64_t b : boundaries)
        CheckRange(c, blob, orig, pts, b - std::min<uint64_t>(b, 50), std::min(size, b + 50),
                   chunk);
    }
    // Beyond the end: the blob "ends early".
    auto r = DecompressRange(c, pts.back(), size, size + 1, MemReader(blob));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kCorrupt) << r.error().ToString();
  }
  SetInflateEngine(saved);
}

class CompressionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data_ = new Bytes(MakeData(6 << 20, 42));
    small_ = new Bytes(MakeData(400 << 10, 7));
    WriteBytes(*dir_ / "data", *data_);
    WriteBytes(*dir_ / "small", *small_);
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete data_;
    delete small_;
  }

  // Compresses data_ with `cmd` (reading stdin, writing stdout) and returns the blob.
  static Bytes Compress(const std::string& cmd, const std::string& input = "data") {
    Shell(cmd + " < " + *dir_ / input + " > " + *dir_ / "out");
    return ReadBytes(*dir_ / "out");
  }

  // Full round trip: index with random feeds, compare output, points and ranges.
  static void RoundTrip(Compression c, ByteView blob, const Bytes& orig, uint64_t span = kSpan,
                        const std::vector<uint64_t>& boundaries = {}, uint64_t frames = 0) {
    ASSERT_EQ(DetectCompression(blob.first(std::min<size_t>(blob.size(), 8))), c);
    const Indexed ix = Index(c, blob, span, blob.size());
    ASSERT_TRUE(ix.status.ok()) << ix.status.error().ToString();
    ASSERT_EQ(ix.out.size(), orig.size());
    ASSERT_TRUE(ix.out == orig) << "indexer output differs";
    EXPECT_EQ(ix.uncompressed, orig.size());
    EXPECT_EQ(ix.compressed, blob.size());
    if (frames) {
      EXPECT_EQ(ix.frames, frames);
    }
    CheckPoints(c, ix, span);
    if (::testing::Test::HasFailure()) return;
    CheckRanges(c, blob, orig, ix.points, span ^ blob.size(), boundaries);
  }

  static TempDir* dir_;
  static Bytes* data_;
  static Bytes* small_;
};
TempDir* CompressionTest::dir_ = nullptr;
Bytes* CompressionTest::data_ = nullptr;
Bytes* CompressionTest::small_ = nullptr;

TEST(CompressionDetect, Magic) {
  EXPECT_EQ(DetectCompression(AsBytes("\x1f\x8b\x08")), Compression::kGzip);
  EXPECT_EQ(DetectCompression(ByteView((const uint8_t*)"\x28\xb5\x2f\xfd", 4)), Compression::kZstd);
  EXPECT_EQ(DetectCompression(ByteView((const uint8_t*)"\x50\x2a\x4d\x18", 4)), Compression::kZstd);
  EXPECT_EQ(DetectCompression(ByteView((const uint8_t*)"\x5f\x2a\x4d\x18", 4)), Compression::kZstd);
  EXPECT_EQ(DetectCompression(ByteView((const uint8_t*)"\x60\x2a\x4d\x18", 4)), Compression::kNone);
  EXPECT_EQ(DetectCompression(AsBytes("ustar")), Compression::kNone);
  EXPECT_EQ(DetectCompression(AsBytes("\x1f")), Compression::kNone);
  EXPECT_EQ(DetectCompression({}), Compression::kNone);
  EXPECT_EQ(CompressionName(Compression::kGzip), "gzip");
  EXPECT_EQ(CompressionName(Compression::kZstd), "zstd");
  EXPECT_EQ(CompressionName(Compression::kNone), "none");
}

TEST_F(CompressionTest, GzipDefault) {
  RoundTrip(Compression::kGzip, Compress("gzip -c -n"), *data_, kSpan, {}, 1);
}
TEST_F(CompressionTest, GzipFastWithName) {
  // gzip stores the file name (FNAME) when compressing a named file.
  Shell("cd " + dir_->path() + " && gzip -1 -c data > out");
  const Bytes blob = ReadBytes(*dir_ / "out");
  ASSERT_TRUE(blob[3] & 0x08);
  RoundTrip(Compression::kGzip, blob, *data_, kSpan, {}, 1);
}
TEST_F(CompressionTest, GzipBest) {
  RoundTrip(Compression::kGzip, Compress("gzip -9 -c -n"), *data_, 200 * 1024, {}, 1);
}
TEST_F(CompressionTest, Pigz) {
  RoundTrip(Compression::kGzip, Compress("pigz -p 2 -c"), *data_, kSpan, {}, 1);
}
TEST_F(CompressionTest, PigzIndependentSmallBlocks) {
  RoundTrip(Compression::kGzip, Compress("pigz -p 2 -i -b 32 -c"), *data_, kSpan, {}, 1);
}
TEST_F(CompressionTest, SpanZeroAndHuge) {
  const Bytes blob = Compress("gzip -c -n", "small");
  RoundTrip(Compression::kGzip, blob, *small_, 0, {}, 1);
  const Indexed one = Index(Compression::kGzip, blob, uint64_t{1} << 40, 1);
  ASSERT_TRUE(one.status.ok());
  EXPECT_EQ(one.points.size(), 1u);
}

TEST_F(CompressionTest, GzipMultiMember) {
  // Pieces (one empty) compressed by different tools and concatenated, as `cat a.gz b.gz` does.
  const std::vector<size_t> cuts = {0, 1000000, 1000000, 2500000, 4000000, data_->size()};
  const char* tools[] = {"gzip -1 -c -n", "gzip -c", "pigz -p 2 -c", "gzip -9 -c -n",
                         "pigz -p 2 -i -b 64 -c"};
  Bytes blob;
  std::vector<uint64_t> boundaries;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    WriteBytes(*dir_ / "piece", ByteView(*data_).subspan(cuts[i], cuts[i + 1] - cuts[i]));
    const Bytes part = Compress(tools[i], "piece");
    blob.insert(blob.end(), part.begin(), part.end());
    boundaries.push_back(cuts[i + 1]);
  }
  boundaries.pop_back();
  RoundTrip(Compression::kGzip, blob, *data_, kSpan, boundaries, 5);
  // Member starts that are due become checkpoints with empty windows.
  const Indexed ix = Index(Compression::kGzip, blob, kSpan, 3);
  size_t members = 0;
  for (const auto& p : ix.points) members += p.member_start;
  EXPECT_GE(members, 3u);  // 0, 1000000, 2500000, 4000000 (the empty member is not due)
}

TEST_F(CompressionTest, GzipManyTinyMembers) {
  Bytes blob;
  Bytes orig;
  for (int i = 0; i < 40; ++i) {
    const size_t off = static_cast<size_t>(i) * 9973;
    WriteBytes(*dir_ / "piece", ByteView(*small_).subspan(off, 1 + i * 37));
    orig.insert(orig.end(), small_->begin() + off, small_->begin() + off + 1 + i * 37);
    const Bytes part = Compress("gzip -c -n", "piece");
    blob.insert(blob.end(), part.begin(), part.end());
  }
  RoundTrip(Compression::kGzip, blob, orig, 1000, {}, 40);
}

// A member with every optional header field, built by hand (no common tool writes them all).
Bytes FancyMember(const Bytes& plain_gz, bool good_hcrc) {
  Bytes m = {0x1f, 0x8b, 8, 0x02 | 0x04 | 0x08 | 0x10, 1, 2, 3, 4, 0, 3};
  const Bytes extra = {'A', 'P', 2, 0, 'x', 'y'};
  m.push_back(static_cast<uint8_t>(extra.size()));
  m.push_back(0);
  m.insert(m.end(), extra.begin(), extra.end());
  for (const char* s : {"name.tar", "a comment"}) m.insert(m.end(), s, s + strlen(s) + 1);
  const uint32_t crc = TestCrc32(m) ^ (good_hcrc ? 0 : 1);
  m.push_back(static_cast<uint8_t>(crc));
  m.push_back(static_cast<uint8_t>(crc >> 8));
  m.insert(m.end(), plain_gz.begin() + 10, plain_gz.end());  // deflate data + trailer
  return m;
}

TEST_F(CompressionTest, GzipAllHeaderFields) {
  const Bytes plain = Compress("gzip -c -n", "small");
  Bytes blob = FancyMember(plain, true);
  blob.insert(blob.end(), blob.begin(), blob.end());  // two members
  Bytes orig = *small_;
  orig.insert(orig.end(), small_->begin(), small_->end());
  RoundTrip(Compression::kGzip, blob, orig, kSpan, {small_->size()}, 2);

  const Bytes bad = FancyMember(plain, false);
  const Indexed ix = Index(Compression::kGzip, bad, kSpan, 1);
  ASSERT_FALSE(ix.status.ok());
  EXPECT_EQ(ix.status.error().code(), Errc::kCorrupt);
  EXPECT_NE(ix.status.error().message().find("CRC16"), std::string::npos)
      << ix.status.error().message();
}

TEST_F(CompressionTest, GzipZeroPaddingTolerated) {
  Bytes blob = Compress("gzip -c -n", "small");
  const size_t gz_size = blob.size();
  blob.insert(blob.end(), 10000, 0);
  const Indexed ix = Index(Compression::kGzip, blob, kSpan, 5);
  ASSERT_TRUE(ix.status.ok()) << ix.status.error().ToString();
  EXPECT_TRUE(ix.out == *small_);
  EXPECT_EQ(ix.compressed, blob.size());
  CheckRanges(Compression::kGzip, blob, *small_, ix.points, 5);
  // Zeros and then something else is garbage, not padding.
  blob.push_back(1);
  const Indexed bad = Index(Compression::kGzip, blob, kSpan, 5);
  ASSERT_FALSE(bad.status.ok());
  EXPECT_EQ(bad.status.error().code(), Errc::kCorrupt);
  EXPECT_NE(bad.status.error().message().find(std::to_string(blob.size() - 1)), std::string::npos)
      << bad.status.error().message();
  (void)gz_size;
}

void ExpectCorrupt(Compression c, ByteView blob, const std::string& what,
                   const std::string& needle = "offset") {
  SCOPED_TRACE(what);
  const Indexed ix = Index(c, blob, kSpan, blob.size());
  ASSERT_FALSE(ix.status.ok()) << "accepted";
  EXPECT_EQ(ix.status.error().code(), Errc::kCorrupt) << ix.status.error().ToString();
  EXPECT_NE(ix.status.error().message().find(needle), std::string::npos)
      << ix.status.error().message();
}

TEST_F(CompressionTest, GzipTrailerChecks) {
  const Bytes good = Compress("gzip -c -n", "small");
  Bytes b = good;
  b[b.size() - 6] ^= 0x10;
  ExpectCorrupt(Compression::kGzip, b, "bad crc", "CRC32");
  b = good;
  b[b.size() - 2] ^= 0x01;
  ExpectCorrupt(Compression::kGzip, b, "bad isize", "ISIZE");
  b = good;
  for (char ch : std::string("garbage")) b.push_back(static_cast<uint8_t>(ch));
  ExpectCorrupt(Compression::kGzip, b, "trailing garbage", "garbage");
  for (const Bytes& tail : {Bytes{0x1f}, Bytes{0x1f, 0x8b}, Bytes{0x1f, 0x8b, 8, 0, 0},
                            Bytes{0x1f, 0x8b, 7}, Bytes{0x1f, 0x8b, 8, 0x20}}) {
    b = good;
    b.insert(b.end(), tail.begin(), tail.end());
    ExpectCorrupt(Compression::kGzip, b, "partial member " + std::to_string(tail.size()));
  }
  ExpectCorrupt(Compression::kGzip, Bytes{}, "empty", "empty");
}

TEST_F(CompressionTest, GzipTruncatedAnywhere) {
  const Bytes good = Compress("gzip -c -n", "small");
  std::vector<size_t> cuts;
  for (size_t i = 0; i < 24; ++i) cuts.push_back(i);
  for (size_t i = 0; i < 160; ++i) cuts.push_back(good.size() * i / 160);
  for (size_t i = 1; i <= 24; ++i) cuts.push_back(good.size() - i);
  for (size_t cut : cuts) {
    ExpectCorrupt(Compression::kGzip, ByteView(good).first(cut),
                  "truncated at " + std::to_string(cut), cut ? "offset" : "empty");
    if (HasFatalFailure()) return;
  }
}

TEST_F(CompressionTest, GzipFlippedBytesNeverGiveWrongBytes) {
  const Bytes good = Compress("gzip -c -n", "small");
  std::mt19937_64 rng(99);
  int detected = 0;
  for (int k = 0; k < 120; ++k) {
    Bytes b = good;
    // Anywhere after the MTIME/XFL/OS bytes, which no check covers.
    const size_t at = 8 + rng() % (b.size() - 8);
    b[at] ^= static_cast<uint8_t>(1 + rng() % 255);
    const Indexed ix = Index(Compression::kGzip, b, kSpan, k);
    if (ix.status.ok()) {
      // Only a flip in bits deflate ignores (stored-block or final padding) may pass.
      EXPECT_TRUE(ix.out == *small_) << "wrong bytes accepted, flip at " << at;
    } else {
      ++detected;
      EXPECT_EQ(ix.status.error().code(), Errc::kCorrupt) << ix.status.error().ToString();
    }
  }
  EXPECT_GT(detected, 100);
}

TEST_F(CompressionTest, GzipRangeOnDamagedBlob) {
  const Bytes good = Compress("gzip -c -n");
  const Indexed ix = Index(Compression::kGzip, good, kSpan, 1);
  ASSERT_TRUE(ix.status.ok());
  ASSERT_GT(ix.points.size(), 4u);
  for (InflateEngine e : kEngines) {
    SetInflateEngine(e);
    // Truncated blob: ranges needing the missing part fail as kCorrupt.
    const ByteView cut = ByteView(good).first(good.size() / 2);
    const AccessPoint& p = ix.points[ix.points.size() / 2 - 1];
    auto r = DecompressRange(Compression::kGzip, p, p.uncompressed_offset, data_->size(),
                             MemReader(cut));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kCorrupt);
    // Garbage instead of deflate data: an error, never a crash or a hang.
    Bytes junk = good;
    std::mt19937_64 rng(5);
    for (size_t i = junk.size() / 4; i < junk.size() / 2; ++i)
      junk[i] = static_cast<uint8_t>(rng());
    for (const AccessPoint& q : ix.points) {
      auto j = DecompressRange(Compression::kGzip, q, q.uncompressed_offset,
                               std::min<uint64_t>(data_->size(), q.uncompressed_offset + 300000),
                               MemReader(junk));
      if (!j.ok()) {
        EXPECT_EQ(j.error().code(), Errc::kCorrupt) << j.error().ToString();
      }
    }
    // Read errors pass through.
    BlobReadFn failing = [](uint64_t, MutableByteView) -> Result<size_t> {
      return Unavailable("gateway down");
    };
    auto f = DecompressRange(Compression::kGzip, ix.points[1], ix.points[1].uncompressed_offset,
                             ix.points[1].uncompressed_offset + 10, failing);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.error().code(), Errc::kUnavailable);
  }
  SetInflateEngine(InflateEngine::kIsal);
  // Misuse.
  auto bad = DecompressRange(Compression::kGzip, ix.points[1], 0, 10, MemReader(good));
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  bad = DecompressRange(Compression::kGzip, ix.points[0], 10, 5, MemReader(good));
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
}

TEST_F(CompressionTest, OutputErrorStopsIndexing) {
  const Bytes blob = Compress("gzip -c -n");
  for (Compression c : {Compression::kGzip, Compression::kNone}) {
    uint64_t seen = 0;
    StreamIndexer ix(c, {}, [&](ByteView b) -> Status {
      seen += b.size();
      if (seen > 1000000) return Error(Errc::kCancelled, "stop");
      return OkStatus();
    });
    Status s;
    for (size_t pos = 0; pos < blob.size() && s.ok(); pos += 4096) {
      s = ix.Feed(ByteView(blob).subspan(pos, std::min<size_t>(4096, blob.size() - pos)));
    }
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), Errc::kCancelled);
    auto again = ix.Feed(ByteView(blob).first(1));
    EXPECT_EQ(again.error().code(), Errc::kCancelled);
    EXPECT_EQ(ix.Finish().error().code(), Errc::kCancelled);
  }
}

TEST_F(CompressionTest, ConcurrentAndReentrantRanges) {
  const Bytes blob = Compress("gzip -c -n");
  const Indexed ix = Index(Compression::kGzip, blob, kSpan, 8);
  ASSERT_TRUE(ix.status.ok());
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int k = 0; k < 40; ++k) {
        const uint64_t s = rng() % data_->size();
        const uint64_t e = std::min<uint64_t>(data_->size(), s + rng() % 100000);
        const size_t i = PointFor(ix.points, s);
        auto r = DecompressRange(Compression::kGzip, ix.points[i], s, e, MemReader(blob));
        if (!r.ok() || !std::equal(r->begin(), r->end(), data_->begin() + s)) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  // A BlobReadFn that itself decompresses (e.g. a cache filled through the same code).
  const BlobReadFn inner = MemReader(blob);
  const BlobReadFn nested = [&](uint64_t off, MutableByteView out) -> Result<size_t> {
    auto r = DecompressRange(Compression::kGzip, ix.points[2], ix.points[2].uncompressed_offset,
                             ix.points[2].uncompressed_offset + 5000, inner);
    if (!r.ok() ||
        !std::equal(r->begin(), r->end(), data_->begin() + ix.points[2].uncompressed_offset)) {
      return Internal("nested range wrong");
    }
    return inner(off, out);
  };
  const uint64_t s = ix.points[1].uncompressed_offset + 10;
  auto r = DecompressRange(Compression::kGzip, ix.points[1], s, s + 70000, nested, 0, 4096);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(std::equal(r->begin(), r->end(), data_->begin() + s));
}

// ---- zstd

TEST_F(CompressionTest, ZstdSingleFrame) {
  const Bytes blob = Compress("zstd -q -3 -c");
  RoundTrip(Compression::kZstd, blob, *data_, kSpan, {}, 1);
  const Indexed ix = Index(Compression::kZstd, blob, kSpan, 2);
  EXPECT_FALSE(ix.seekable);
  EXPECT_EQ(ix.points.size(), 1u);
}

TEST_F(CompressionTest, ZstdMultiFrameWithSkippables) {
  const std::vector<size_t> cuts = {0, 700000, 700001, 2000000, 2000000, 5100000, data_->size()};
  // A skippable frame before the first, between and after the last data frame (one empty).
  auto skippable = [](uint8_t nibble, uint32_t n) {
    Bytes s = {static_cast<uint8_t>(0x50 | nibble), 0x2a, 0x4d, 0x18, static_cast<uint8_t>(n),
               static_cast<uint8_t>(n >> 8),        0,    0};
    s.insert(s.end(), n, 0xAB);
    return s;
  };
  Bytes blob = skippable(0xF, 300);
  std::vector<uint64_t> boundaries;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    WriteBytes(*dir_ / "piece", ByteView(*data_).subspan(cuts[i], cuts[i + 1] - cuts[i]));
    const Bytes part = Compress(i % 2 ? "zstd -q -1 --no-check -c" : "zstd -q -c", "piece");
    blob.insert(blob.end(), part.begin(), part.end());
    const Bytes s = skippable(static_cast<uint8_t>(i), i == 2 ? 0 : 17);
    blob.insert(blob.end(), s.begin(), s.end());
    boundaries.push_back(cuts[i + 1]);
  }
  boundaries.pop_back();
  RoundTrip(Compression::kZstd, blob, *data_, kSpan, boundaries, 6);
  const Indexed ix = Index(Compression::kZstd, blob, kSpan, 3);
  EXPECT_TRUE(ix.seekable);
  // 6 data frames; the 1-byte and the empty frame start within `span` of the previous point.
  EXPECT_EQ(ix.points.size(), 4u);
  EXPECT_EQ(ix.points[0].compressed_bit_offset, 308u * 8);  // after the leading skippable
  // span merges frames: points only every >= 3 MB.
  const Indexed coarse = Index(Compression::kZstd, blob, 3000000, 4);
  ASSERT_TRUE(coarse.status.ok());
  EXPECT_EQ(coarse.points.size(), 2u);
  EXPECT_EQ(coarse.frames, 6u);
  CheckRanges(Compression::kZstd, blob, *data_, coarse.points, 9, boundaries);
}

TEST_F(CompressionTest, Pzstd) {
  const Bytes blob = Compress("pzstd -q -p 2 -1 -c");
  const Indexed ix = Index(Compression::kZstd, blob, 0, 1);
  ASSERT_TRUE(ix.status.ok()) << ix.status.error().ToString();
  EXPECT_GE(ix.frames, 2u);
  EXPECT_TRUE(ix.seekable);
  RoundTrip(Compression::kZstd, blob, *data_, 0);
}

TEST_F(CompressionTest, ZstdEmptyAndSkippableOnly) {
  Shell("printf '' | zstd -q -c > " + *dir_ / "empty.zst");
  const Bytes empty = ReadBytes(*dir_ / "empty.zst");
  const Indexed ix = Index(Compression::kZstd, empty, kSpan, 1);
  ASSERT_TRUE(ix.status.ok()) << ix.status.error().ToString();
  EXPECT_EQ(ix.uncompressed, 0u);
  EXPECT_EQ(ix.frames, 1u);
  const Bytes only = {0x5a, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, 9};
  const Indexed s = Index(Compression::kZstd, only, kSpan, 1);
  ASSERT_TRUE(s.status.ok()) << s.status.error().ToString();
  EXPECT_EQ(s.frames, 0u);
  ASSERT_EQ(s.points.size(), 1u);
  ExpectCorrupt(Compression::kZstd, Bytes{}, "empty", "empty");
}

TEST_F(CompressionTest, ZstdCorrupt) {
  const Bytes good = Compress("zstd -q -c", "small");
  Bytes b = good;
  for (char ch : std::string("garbage")) b.push_back(static_cast<uint8_t>(ch));
  ExpectCorrupt(Compression::kZstd, b, "trailing garbage");
  b = good;
  b.insert(b.end(), 512, 0);
  ExpectCorrupt(Compression::kZstd, b, "trailing zeros");
  b = {0x50, 0x2a, 0x4d, 0x18, 10, 0, 0, 0, 1, 2};
  ExpectCorrupt(Compression::kZstd, b, "truncated skippable");
  for (size_t i = 0; i < 100; ++i) {
    const size_t cut = i < 12 ? i + 1 : good.size() * i / 100;
    ExpectCorrupt(Compression::kZstd, ByteView(good).first(cut), "cut " + std::to_string(cut));
    if (HasFatalFailure()) return;
  }
  std::mt19937_64 rng(3);
  int detected = 0;
  for (int k = 0; k < 100; ++k) {
    b = good;
    const size_t at = rng() % b.size();
    b[at] ^= static_cast<uint8_t>(1 + rng() % 255);
    const Indexed ix = Index(Compression::kZstd, b, kSpan, k);
    if (ix.status.ok()) {
      EXPECT_TRUE(ix.out == *small_) << "wrong bytes accepted, flip at " << at;
    } else {
      ++detected;
      EXPECT_EQ(ix.status.error().code(), Errc::kCorrupt);
    }
  }
  EXPECT_GT(detected, 90);
  // Range reads over a truncated blob.
  const Bytes multi = Compress("pzstd -q -p 2 -c");
  const Indexed ix = Index(Compression::kZstd, multi, 0, 1);
  ASSERT_TRUE(ix.status.ok());
  auto r = DecompressRange(Compression::kZstd, ix.points[0], 0, data_->size(),
                           MemReader(ByteView(multi).first(multi.size() / 2)));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kCorrupt);
}

// ---- none

TEST_F(CompressionTest, Plain) {
  RoundTrip(Compression::kNone, *data_, *data_, kSpan, {}, 0);
  const Indexed ix = Index(Compression::kNone, *data_, kSpan, 1);
  EXPECT_TRUE(ix.seekable);
  EXPECT_EQ(ix.points.size(), 1u);
  auto r = DecompressRange(Compression::kNone, ix.points[0], 5, 5 + 100,
                           MemReader(ByteView(*data_).first(50)));
  EXPECT_EQ(r.error().code(), Errc::kCorrupt);
}

// ---- benchmark: run with --gtest_also_run_disabled_tests (figures go to notes/).

double SpanThroughput(const Bytes& blob, const std::vector<AccessPoint>& pts, uint64_t total,
                      InflateEngine e, int reps) {
  SetInflateEngine(e);
  Bytes out;
  uint64_t bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < pts.size(); ++i) {
      const uint64_t end = i + 1 < pts.size() ? pts[i + 1].uncompressed_offset : total;
      out.resize(end - pts[i].uncompressed_offset);
      const uint64_t hint = i + 1 < pts.size() ? (pts[i + 1].compressed_bit_offset + 7) / 8 : 0;
      EXPECT_TRUE(DecompressRangeInto(Compression::kGzip, pts[i], pts[i].uncompressed_offset, out,
                                      MemReader(blob), hint)
                      .ok());
      bytes += out.size();
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return bytes / s / 1e6;
}

TEST_F(CompressionTest, DISABLED_BenchSpanDecompress) {
  // Layer-like content: real binaries and text from this system, ~96 MiB.
  Shell("tar -cf - -C /usr lib/x86_64-linux-gnu share/doc 2>/dev/null | head -c 100663296 > " +
        *dir_ / "layer.tar || true");
  for (const char* level : {"-1", "-6", "-9"}) {
    Shell(std::string("gzip -n ") + level + " -c " + *dir_ / "layer.tar" + " > " + *dir_ / "l.gz");
    const Bytes blob = ReadBytes(*dir_ / "l.gz");
    const Indexed ix = Index(Compression::kGzip, blob, 4 << 20, 1);
    ASSERT_TRUE(ix.status.ok());
    // Indexing as the importer does it: 256 KiB pieces, a consumer that only looks.
    const auto t0 = std::chrono::steady_clock::now();
    StreamIndexer streaming(Compression::kGzip, {}, [](ByteView) { return OkStatus(); });
    for (size_t pos = 0; pos < blob.size(); pos += 256 * 1024) {
      ASSERT_TRUE(
          streaming
              .Feed(ByteView(blob).subspan(pos, std::min<size_t>(256 * 1024, blob.size() - pos)))
              .ok());
    }
    ASSERT_TRUE(streaming.Finish().ok());
    const double index_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double z = SpanThroughput(blob, ix.points, ix.uncompressed, InflateEngine::kZlib, 2);
    const double i = SpanThroughput(blob, ix.points, ix.uncompressed, InflateEngine::kIsal, 2);
    printf(
        "gzip %s: %.1f MiB tar -> %.1f MiB, %zu spans: zlib %.0f MB/s, isal %.0f MB/s (x%.2f); "
        "indexing (zlib, CRC, window copies) %.0f MB/s\n",
        level, ix.uncompressed / 1048576.0, blob.size() / 1048576.0, ix.points.size(), z, i, i / z,
        ix.uncompressed / index_s / 1e6);
  }
  SetInflateEngine(InflateEngine::kIsal);
}

// ---------------------------------------------------------------------------------------------
// Sparse windows

// Raw-deflates `payload` with `dict` as the preset history (as if it followed `dict` in a stream).
Bytes DeflateWithHistory(ByteView dict, ByteView payload, int level = 9) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, level, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
  EXPECT_EQ(deflateSetDictionary(&z, dict.data(), static_cast<uInt>(dict.size())), Z_OK);
  Bytes out(deflateBound(&z, payload.size()) + 64);
  z.next_in = const_cast<Bytef*>(payload.data());
  z.avail_in = static_cast<uInt>(payload.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  return out;
}

TEST(SparseWindow, FarReferencesAreTracedAndDecompressIdentically) {
  // A random 32 KiB history (no repeats inside it), then data that copies from near its start
  // (distance 32468: zlib's deflate reaches back at most 32768 - 262), its last bytes, and a
  // stretch in the middle.
  std::mt19937_64 rng(11);
  Bytes hist(32768);
  for (auto& b : hist) b = static_cast<uint8_t>(rng());
  Bytes payload;
  auto copy = [&](size_t off, size_t n) {
    payload.insert(payload.end(), hist.begin() + off, hist.begin() + off + n);
  };
  copy(300, 300);  // starts 32468 bytes back
  for (int i = 0; i < 2000; ++i) payload.push_back(static_cast<uint8_t>(rng()));
  copy(32768 - 40, 40);
  copy(10000, 5000);
  for (int i = 0; i < 40000; ++i) payload.push_back("abcdefgh"[rng() % 8]);
  const Bytes z = DeflateWithHistory(hist, payload);

  std::vector<uint8_t> used;
  auto traced = TraceWindowUse(z, 0, hist, payload.size(), &used);
  ASSERT_TRUE(traced.ok()) << traced.error().ToString();
  EXPECT_TRUE(*traced == payload);
  ASSERT_EQ(used.size(), hist.size());
  // Random bytes match only where they were copied from.
  for (size_t i = 300; i < 600; ++i) EXPECT_TRUE(used[i]) << i;
  for (size_t i = 32768 - 40; i < 32768; ++i) EXPECT_TRUE(used[i]) << i;
  for (size_t i = 10000; i < 15000; ++i) EXPECT_TRUE(used[i]) << i;
  size_t n_used = 0;
  for (uint8_t u : used) n_used += u;
  EXPECT_LT(n_used, 5340 + 200u) << "far more of the window marked than referenced";

  AccessPoint dense;
  dense.window = hist;
  AccessPoint sparse = dense;
  MakeSparseWindow(&sparse, used);
  ASSERT_TRUE(sparse.sparse());
  EXPECT_EQ(sparse.history_size(), hist.size());
  EXPECT_LT(sparse.window.size(), 6000u);
  // The "blob" is the bare deflate data; decompress the whole payload from the sparse point with
  // both engines, in large and tiny read chunks.
  for (InflateEngine e : kEngines) {
    SetInflateEngine(e);
    for (size_t chunk : {size_t{256 * 1024}, size_t{7}}) {
      auto r =
          DecompressRange(Compression::kGzip, sparse, 0, payload.size(), MemReader(z), 0, chunk);
      ASSERT_TRUE(r.ok()) << r.error().ToString();
      EXPECT_TRUE(*r == payload) << "sparse window gave different bytes";
    }
  }
  // A stored byte that is wrong, or missing (zero), changes the output: the window bytes kept
  // are exactly the ones that matter, and LayerReader's span hash turns such a change into
  // kCorrupt (layer_index_test.cc).
  for (bool zero : {false, true}) {
    AccessPoint bad = sparse;
    bad.window[0] = zero ? 0 : static_cast<uint8_t>(bad.window[0] ^ 0x40);
    if (bad.window[0] == sparse.window[0]) bad.window[0] ^= 1;
    for (InflateEngine e : kEngines) {
      SetInflateEngine(e);
      auto r = DecompressRange(Compression::kGzip, bad, 0, payload.size(), MemReader(z));
      EXPECT_TRUE(!r.ok() || *r != payload);
    }
  }
  SetInflateEngine(InflateEngine::kIsal);
}

TEST(SparseWindow, TraceRejectsBadInput) {
  std::mt19937_64 rng(3);
  Bytes hist(1000);
  for (auto& b : hist) b = static_cast<uint8_t>(rng());
  Bytes payload;
  for (int i = 0; i < 5; ++i) payload.insert(payload.end(), hist.begin(), hist.end());
  const Bytes z = DeflateWithHistory(hist, payload);
  std::vector<uint8_t> used;
  // Input cut short: an error, not a guess.
  auto cut = TraceWindowUse(ByteView(z).first(z.size() / 2), 0, hist, payload.size(), &used);
  EXPECT_FALSE(cut.ok());
  // History shorter than the references: an error.
  auto short_hist = TraceWindowUse(z, 0, ByteView(hist).first(0), payload.size(), &used);
  EXPECT_FALSE(short_hist.ok());
  // Garbage never crashes.
  for (int i = 0; i < 300; ++i) {
    Bytes junk(1 + rng() % 3000);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    auto r = TraceWindowUse(junk, static_cast<int>(rng() % 8), hist, 32768, &used);
    if (r.ok()) {
      EXPECT_LE(r->size(), 32768u);
    }
  }
}

TEST_F(CompressionTest, SparseWindowsAreSmallerAndExact) {
  for (const char* cmd : {"gzip -9 -c -n", "gzip -1 -c -n", "pigz -p 2 -c"}) {
    SCOPED_TRACE(cmd);
    const Bytes blob = Compress(cmd);
    std::vector<AccessPoint> sparse_pts, dense_pts;
    for (bool sparse : {true, false}) {
      StreamIndexer ix(Compression::kGzip, IndexerOptions{kSpan, sparse},
                       [](ByteView) { return OkStatus(); });
      ASSERT_TRUE(ix.Feed(blob).ok());
      ASSERT_TRUE(ix.Finish().ok());
      (sparse ? sparse_pts : dense_pts) = ix.points();
    }
    ASSERT_EQ(sparse_pts.size(), dense_pts.size());
    size_t n_sparse = 0, kept = 0, full = 0;
    for (size_t i = 0; i < sparse_pts.size(); ++i) {
      const AccessPoint& s = sparse_pts[i];
      const AccessPoint& d = dense_pts[i];
      EXPECT_FALSE(d.sparse());
      EXPECT_EQ(s.compressed_bit_offset, d.compressed_bit_offset);
      EXPECT_EQ(s.history_size(), d.history_size());
      if (!s.sparse()) continue;
      ++n_sparse;
      kept += s.window.size();
      full += d.window.size();
      // Every stored byte is the real history byte.
      Bytes scratch;
      const ByteView h = s.History(&scratch);
      for (const WindowRun& r : s.window_runs) {
        ASSERT_LE(r.offset + r.length, h.size());
        EXPECT_TRUE(std::equal(h.begin() + r.offset, h.begin() + r.offset + r.length,
                               d.window.begin() + r.offset));
      }
    }
    EXPECT_GT(n_sparse, sparse_pts.size() / 2) << "most gzip checkpoints should be sparse";
    EXPECT_LT(kept, full) << "sparse windows keep fewer bytes";
    CheckRanges(Compression::kGzip, blob, *data_, sparse_pts, 99);
  }
}

}  // namespace
}  // namespace ipfly::layer
