// Fuzzes the strict dag-pb decoder. Anything it accepts must re-encode canonically, and the
// canonical bytes must decode to the same node and encode to themselves (a fixed point).
#include <cstdint>

#include "core/codec/dagpb.h"

namespace {

bool SameNode(const ipfly::codec::PbNode& a, const ipfly::codec::PbNode& b) {
  if (a.data != b.data || a.links.size() != b.links.size()) return false;
  for (size_t i = 0; i < a.links.size(); ++i) {
    const auto &x = a.links[i], &y = b.links[i];
    if (x.hash != y.hash || x.name != y.name || x.tsize != y.tsize) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipfly::codec;
  auto node = DecodeDagPb(ipfly::ByteView(data, size));
  if (!node.ok()) return 0;
  ipfly::Bytes enc = EncodeDagPb(*node);
  auto again = DecodeDagPb(enc);
  if (!again.ok()) __builtin_trap();
  if (!SameNode(*node, *again)) __builtin_trap();
  if (EncodeDagPb(*again) != enc) __builtin_trap();
  return 0;
}
