// Fuzzes CID parsing from both string and binary forms; whatever parses must round-trip.
#include <cstdint>
#include <cstdlib>

#include "core/multiformats/cid.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ipfly::mf::Cid;
  ipfly::ByteView in(data, size);
  if (auto c = Cid::FromBytes(in); c.ok()) {
    if (c->ToBytes() != ipfly::Bytes(in.begin(), in.end())) __builtin_trap();
    auto again = Cid::Parse(c->ToString());
    if (!again.ok() || !(*again == *c)) __builtin_trap();
  }
  size_t n = 0;
  if (auto c = Cid::Read(in, &n); c.ok() && n > size) __builtin_trap();
  std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto c = Cid::Parse(s); c.ok()) {
    auto again = Cid::Parse(c->ToString());
    if (!again.ok() || !(*again == *c)) __builtin_trap();
  }
  return 0;
}
