// Fuzzes the CAR push parser. The first input byte seeds the piece sizes: the outcome of feeding
// the rest in random-sized pieces must equal feeding it whole. A CARv1 that parses is re-written
// with the writer and must parse back to the same roots and blocks.
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/codec/car.h"

namespace {

using ipfly::Bytes;
using ipfly::ByteView;
using ipfly::Status;

struct Outcome {
  bool ok = false;
  ipfly::Errc code = ipfly::Errc::kInternal;
  std::optional<ipfly::codec::CarHeader> header;
  std::vector<std::pair<ipfly::mf::Cid, Bytes>> blocks;
};

Outcome Run(ByteView in, uint32_t seed) {
  Outcome o;
  ipfly::codec::CarParser p(
      [&](const ipfly::codec::CarHeader& h) {
        if (o.header) __builtin_trap();  // the header callback fires once
        o.header = h;
        return ipfly::OkStatus();
      },
      [&](ipfly::mf::Cid c, Bytes b) {
        o.blocks.emplace_back(std::move(c), std::move(b));
        return ipfly::OkStatus();
      });
  size_t off = 0;
  Status s;
  while (off < in.size()) {
    size_t n = in.size() - off;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (seed >> 16) % 64);
    }
    s = p.Feed(in.subspan(off, n));
    if (!s.ok()) break;
    off += n;
  }
  if (s.ok()) s = p.Finish();
  o.ok = s.ok();
  if (!s.ok()) o.code = s.error().code();
  if (o.ok && p.blocks_seen() != o.blocks.size()) __builtin_trap();
  return o;
}

bool SameBlocks(const Outcome& a, const Outcome& b) {
  if (a.blocks.size() != b.blocks.size()) return false;
  for (size_t i = 0; i < a.blocks.size(); ++i) {
    if (a.blocks[i].first != b.blocks[i].first || a.blocks[i].second != b.blocks[i].second) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint32_t seed = data[0] | 1u;
  ByteView in(data + 1, size - 1);
  Outcome whole = Run(in, 0);
  Outcome pieces = Run(in, seed);
  if (whole.ok != pieces.ok || whole.code != pieces.code || !SameBlocks(whole, pieces)) {
    __builtin_trap();
  }
  if (!whole.ok || !whole.header || whole.header->version != 1) return 0;

  Bytes car = ipfly::codec::EncodeCarV1Header(whole.header->roots);
  for (const auto& [cid, block] : whole.blocks) {
    Bytes sec = ipfly::codec::EncodeCarSection(cid, block);
    car.insert(car.end(), sec.begin(), sec.end());
  }
  Outcome again = Run(car, 0);
  if (!again.ok || !SameBlocks(whole, again) || again.header->roots != whole.header->roots) {
    __builtin_trap();
  }
  return 0;
}
