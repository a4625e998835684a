#include "core/multiformats/varint.h"

#include <string>

namespace ipfly::mf {

void AppendVarint(Bytes& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

Result<uint64_t> DecodeVarint(ByteView in, size_t* consumed) {
  uint64_t v = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (i == kMaxVarintBytes) return Corrupt("varint longer than 9 bytes");
    uint8_t b = in[i];
    v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      // Minimal: the last byte may only be zero when it is the only byte (the number 0).
      if (b == 0 && i > 0) return Corrupt("varint is not minimally encoded");
      *consumed = i + 1;
      return v;
    }
  }
  return Corrupt(in.empty() ? "varint expected, input is empty" : "varint is truncated");
}

}  // namespace ipfly::mf
