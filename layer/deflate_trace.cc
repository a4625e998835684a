// A small raw-deflate decoder (RFC 1951) that records which bytes of the history a stretch of
// deflate data copies from. zlib and ISA-L do not report match distances, and the indexer needs
// them to store sparse checkpoint windows (compression.h). It only ever decodes the first 32 KiB
// after a checkpoint (later references cannot reach before the checkpoint), so it favours
// simplicity over speed: a 10-bit lookup table per Huffman code, bit-by-bit canonical decoding
// for longer codes. Its verdict is not trusted blindly: the indexer re-decodes the stretch with
// zlib and the sparse window and keeps the dense window unless the bytes match.
#include <algorithm>
#include <array>
#include <cstring>

#include "layer/compression.h"

namespace ipfly::layer {
namespace {

constexpr int kMaxBits = 15;
constexpr int kFastBits = 10;
constexpr size_t kMergeGap = 4;  // runs at most this far apart are stored as one

constexpr std::array<uint16_t, 29> kLengthBase = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                                  15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                                  67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr std::array<uint8_t, 29> kLengthExtra = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr std::array<uint16_t, 30> kDistBase = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr std::array<uint8_t, 30> kDistExtra = {0, 0, 0,  0,  1,  1,  2,  2,  3,  3,
                                                4, 4, 5,  5,  6,  6,  7,  7,  8,  8,
                                                9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
constexpr std::array<uint8_t, 19> kCodeLengthOrder = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                      11, 4,  12, 3, 13, 2, 14, 1, 15};

// LSB-first bit reader. Reading past the end yields zero bits and is detected by overrun().
class Bits {
 public:
  Bits(ByteView in, int first_bit) : in_(in) {
    Refill();
    Drop(first_bit);
  }
  uint32_t Peek(int n) {
    if (count_ < n) Refill();
    return static_cast<uint32_t>(buf_ & ((uint64_t{1} << n) - 1));
  }
  void Drop(int n) {
    buf_ >>= n;
    count_ -= n;
  }
  uint32_t Get(int n) {
    if (n == 0) return 0;
    const uint32_t v = Peek(n);
    Drop(n);
    return v;
  }
  void AlignToByte() { Drop(count_ % 8); }
  // True once more bits were consumed than the input holds.
  bool overrun() const { return pos_ * 8 > in_.size() * 8 + static_cast<size_t>(count_); }

 private:
  void Refill() {
    while (count_ <= 56) {
      const uint64_t b = pos_ < in_.size() ? in_[pos_] : 0;
      ++pos_;
      buf_ |= b << count_;
      count_ += 8;
    }
  }
  ByteView in_;
  size_t pos_ = 0;
  uint64_t buf_ = 0;
  int count_ = 0;
};

// A canonical Huffman code: a fast table for codes up to kFastBits, and the per-length counts
// and symbols in canonical order for the rest.
class Huffman {
 public:
  // False for an over-subscribed set of lengths (incomplete codes are allowed, as zlib does for
  // the one-distance-code case).
  bool Build(const uint8_t* lengths, int n) {
    counts_.fill(0);
    fast_.fill(0);
    symbols_.assign(static_cast<size_t>(n), 0);
    for (int s = 0; s < n; ++s) ++counts_[lengths[s]];
    counts_[0] = 0;
    int left = 1;
    for (int len = 1; len <= kMaxBits; ++len) {
      left = (left << 1) - counts_[len];
      if (left < 0) return false;
    }
    std::array<int, kMaxBits + 2> offs{};
    for (int len = 1; len <= kMaxBits; ++len) offs[len + 1] = offs[len] + counts_[len];
    for (int s = 0; s < n; ++s) {
      if (lengths[s]) symbols_[static_cast<size_t>(offs[lengths[s]]++)] = static_cast<uint16_t>(s);
    }
    // Fast table: canonical codes, bit-reversed because deflate packs them MSB first.
    uint32_t code = 0;
    size_t k = 0;
    for (int len = 1; len <= kMaxBits; ++len) {
      for (int i = 0; i < counts_[len]; ++i, ++k, ++code) {
        if (len > kFastBits) continue;
        uint32_t rev = 0;
        for (int b = 0; b < len; ++b) rev |= ((code >> b) & 1u) << (len - 1 - b);
        for (uint32_t e = rev; e < (1u << kFastBits); e += 1u << len) {
          fast_[e] = static_cast<uint16_t>(symbols_[k] << 4 | len);
        }
      }
      code <<= 1;
    }
    return true;
  }

  // The next symbol, or -1 if the bits match no code.
  int Decode(Bits& in) const {
    const uint16_t e = fast_[in.Peek(kFastBits)];
    if (e != 0) {
      in.Drop(e & 15);
      return e >> 4;
    }
    // Canonical decoding one bit at a time (codes longer than kFastBits, or no code at all).
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= kMaxBits; ++len) {
      code |= static_cast<int>(in.Get(1));
      const int count = counts_[len];
      if (code - first < count) return symbols_[static_cast<size_t>(index + code - first)];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    return -1;
  }

 private:
  std::array<int, kMaxBits + 1> counts_{};
  std::array<uint16_t, 1u << kFastBits> fast_{};
  std::vector<uint16_t> symbols_;
};

Error Bad(const std::string& what) { return Corrupt("deflate trace: " + what); }

}  // namespace

Result<Bytes> TraceWindowUse(ByteView in, int first_bit, ByteView window, size_t limit,
                             std::vector<uint8_t>* used) {
  if (first_bit < 0 || first_bit > 7) return InvalidArgument("deflate trace: bad first bit");
  used->assign(window.size(), 0);
  Bytes out;
  out.reserve(limit + 258);
  Bits bits(in, first_bit);
  Huffman lit, dist;
  bool final_block = false;
  while (out.size() < limit && !final_block) {
    final_block = bits.Get(1) != 0;
    const uint32_t type = bits.Get(2);
    if (type == 0) {
      bits.AlignToByte();
      const uint32_t len = bits.Get(16);
      const uint32_t nlen = bits.Get(16);
      if ((len ^ 0xFFFF) != nlen) return Bad("stored block length check failed");
      for (uint32_t i = 0; i < len && out.size() < limit; ++i) {
        out.push_back(static_cast<uint8_t>(bits.Get(8)));
      }
      if (bits.overrun()) return Bad("input ends");
      continue;
    }
    if (type == 3) return Bad("invalid block type");
    uint8_t lengths[288 + 32];
    int nlit, ndist;
    if (type == 1) {
      nlit = 288;
      ndist = 30;
      for (int s = 0; s < 288; ++s) lengths[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
      for (int s = 0; s < 30; ++s) lengths[288 + s] = 5;
    } else {
      nlit = static_cast<int>(bits.Get(5)) + 257;
      ndist = static_cast<int>(bits.Get(5)) + 1;
      const int ncode = static_cast<int>(bits.Get(4)) + 4;
      if (nlit > 286 || ndist > 30) return Bad("too many length or distance codes");
      uint8_t cl[19] = {};
      for (int i = 0; i < ncode; ++i) cl[kCodeLengthOrder[static_cast<size_t>(i)]] = bits.Get(3);
      Huffman clh;
      if (!clh.Build(cl, 19)) return Bad("bad code length code");
      std::memset(lengths, 0, sizeof(lengths));
      int i = 0;
      while (i < nlit + ndist) {
        const int sym = clh.Decode(bits);
        if (sym < 0) return Bad("bad code length symbol");
        if (sym < 16) {
          lengths[i < nlit ? i : 288 + i - nlit] = static_cast<uint8_t>(sym);
          ++i;
          continue;
        }
        int rep;
        uint8_t val = 0;
        if (sym == 16) {
          if (i == 0) return Bad("repeat with no previous length");
          const int prev = i - 1;
          val = lengths[prev < nlit ? prev : 288 + prev - nlit];
          rep = 3 + static_cast<int>(bits.Get(2));
        } else if (sym == 17) {
          rep = 3 + static_cast<int>(bits.Get(3));
        } else {
          rep = 11 + static_cast<int>(bits.Get(7));
        }
        if (i + rep > nlit + ndist) return Bad("code lengths overflow");
        for (; rep > 0; --rep, ++i) lengths[i < nlit ? i : 288 + i - nlit] = val;
      }
      if (lengths[256] == 0) return Bad("no end-of-block code");
    }
    if (!lit.Build(lengths, nlit) || !dist.Build(lengths + 288, ndist)) {
      return Bad("over-subscribed code");
    }
    for (;;) {
      if (bits.overrun()) return Bad("input ends");
      const int sym = lit.Decode(bits);
      if (sym < 0) return Bad("bad literal/length code");
      if (sym < 256) {
        out.push_back(static_cast<uint8_t>(sym));
        if (out.size() >= limit) break;
        continue;
      }
      if (sym == 256) break;
      const size_t li = static_cast<size_t>(sym - 257);
      if (li >= kLengthBase.size()) return Bad("bad length symbol");
      const size_t len = kLengthBase[li] + bits.Get(kLengthExtra[li]);
      const int ds = dist.Decode(bits);
      if (ds < 0 || ds >= 30) return Bad("bad distance code");
      const size_t d =
          kDistBase[static_cast<size_t>(ds)] + bits.Get(kDistExtra[static_cast<size_t>(ds)]);
      for (size_t k = 0; k < len && out.size() < limit; ++k) {
        const size_t at = out.size();
        if (d <= at) {
          out.push_back(out[at - d]);
        } else {
          const size_t back = d - at;  // bytes before the point
          if (back > window.size()) return Bad("distance reaches beyond the window");
          const size_t w = window.size() - back;
          (*used)[w] = 1;
          out.push_back(window[w]);
        }
      }
      if (out.size() >= limit) break;
    }
  }
  if (bits.overrun()) return Bad("input ends");
  return out;
}

void MakeSparseWindow(AccessPoint* point, const std::vector<uint8_t>& used) {
  const ByteView w(point->window);
  std::vector<WindowRun> runs;
  for (size_t i = 0; i < used.size() && i < w.size(); ++i) {
    if (!used[i]) continue;
    if (!runs.empty() && i - (runs.back().offset + runs.back().length) <= kMergeGap) {
      runs.back().length = static_cast<uint32_t>(i + 1 - runs.back().offset);
    } else {
      runs.push_back({static_cast<uint32_t>(i), 1});
    }
  }
  Bytes kept;
  for (const auto& r : runs)
    kept.insert(kept.end(), w.begin() + r.offset, w.begin() + r.offset + r.length);
  point->window_size = static_cast<uint32_t>(w.size());
  point->window_runs = std::move(runs);
  point->window = std::move(kept);
}

ByteView AccessPoint::History(Bytes* scratch) const {
  if (!sparse()) return window;
  scratch->assign(window_size, 0);
  size_t at = 0;
  for (const auto& r : window_runs) {
    std::memcpy(scratch->data() + r.offset, window.data() + at, r.length);
    at += r.length;
  }
  return *scratch;
}

}  // namespace ipfly::layer
