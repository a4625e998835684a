// Fuzzes the gzip/zstd/plain stream indexer and random-access decompression.
//
// Input: byte 0 picks the compression and the checkpoint span, byte 1 seeds the feed sizes and
// the ranges; the rest is the blob. Indexing must never crash or hang, and may fail only with
// kCorrupt. If it succeeds, every DecompressRange (both inflate engines for gzip) must return
// exactly the bytes the indexer delivered.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "layer/compression.h"

namespace {

using namespace ipfly;
using namespace ipfly::layer;

constexpr size_t kMaxOutput = 4 << 20;

uint64_t Next(uint64_t* s) {  // splitmix64
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static constexpr Compression kComp[] = {Compression::kGzip, Compression::kZstd,
                                          Compression::kNone};
  static constexpr uint64_t kSpans[] = {0, 1, 100, 4096, 65536};
  const Compression c = kComp[data[0] % 3];
  const uint64_t span = kSpans[(data[0] / 3) % 5];
  uint64_t seed = data[1];
  const ByteView blob(data + 2, size - 2);

  Bytes out;
  StreamIndexer ix(c, IndexerOptions{span}, [&](ByteView b) -> Status {
    if (out.size() + b.size() > kMaxOutput) return TooLarge("fuzz output cap");
    out.insert(out.end(), b.begin(), b.end());
    return OkStatus();
  });
  Status st;
  for (size_t pos = 0; pos < blob.size() && st.ok();) {
    const size_t n = std::min<size_t>(blob.size() - pos, 1 + Next(&seed) % 300);
    st = ix.Feed(blob.subspan(pos, n));
    pos += n;
  }
  if (st.ok()) st = ix.Finish();
  if (!st.ok()) {
    if (st.error().code() != Errc::kCorrupt && st.error().code() != Errc::kTooLarge) {
      __builtin_trap();
    }
    return 0;
  }
  if (ix.uncompressed_size() != out.size() || ix.compressed_size() != blob.size()) {
    __builtin_trap();
  }
  const auto& pts = ix.points();
  if (pts.empty() || pts[0].uncompressed_offset != 0) __builtin_trap();
  for (size_t i = 1; i < pts.size(); ++i) {
    if (pts[i].uncompressed_offset <= pts[i - 1].uncompressed_offset ||
        pts[i].uncompressed_offset - pts[i - 1].uncompressed_offset < span ||
        pts[i].compressed_bit_offset <= pts[i - 1].compressed_bit_offset ||
        pts[i].history_size() > 32768 || pts[i].window.size() > pts[i].history_size()) {
      __builtin_trap();
    }
  }

  const BlobReadFn read = [&](uint64_t off, MutableByteView buf) -> Result<size_t> {
    if (off >= blob.size()) return size_t{0};
    const size_t n = std::min<size_t>(buf.size(), blob.size() - off);
    std::copy_n(blob.data() + off, n, buf.data());
    return n;
  };
  const uint64_t total = out.size();
  for (int k = 0; k < 6; ++k) {
    uint64_t start = Next(&seed) % (total + 1);
    uint64_t end = std::min(total, start + Next(&seed) % 70000);
    if (k == 0) start = 0, end = total;
    const size_t i = static_cast<size_t>(std::upper_bound(pts.begin(), pts.end(), start,
                                                          [](uint64_t s, const AccessPoint& p) {
                                                            return s < p.uncompressed_offset;
                                                          }) -
                                         pts.begin() - 1);
    const uint64_t hint = (i + 1 < pts.size() && end <= pts[i + 1].uncompressed_offset)
                              ? (pts[i + 1].compressed_bit_offset + 7) / 8
                              : 0;
    const size_t chunk = 1 + Next(&seed) % 5000;
    for (InflateEngine e : {InflateEngine::kIsal, InflateEngine::kZlib}) {
      if (c != Compression::kGzip && e == InflateEngine::kZlib) break;
      SetInflateEngine(e);
      auto r = DecompressRange(c, pts[i], start, end, read, hint, chunk);
      if (!r.ok() || r->size() != end - start ||
          !std::equal(r->begin(), r->end(), out.begin() + start)) {
        __builtin_trap();
      }
    }
  }
  SetInflateEngine(InflateEngine::kIsal);
  return 0;
}
