// Fuzzes multibase decoding; decoded bytes must re-encode to a string that decodes to the same.
#include <cstdint>

#include "core/multiformats/multibase.h"
#include "core/multiformats/varint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipfly::mf;
  std::string_view s(reinterpret_cast<const char*>(data), size);
  Multibase base;
  if (auto r = MultibaseDecode(s, &base); r.ok()) {
    auto again = MultibaseDecode(MultibaseEncode(base, *r));
    if (!again.ok() || *again != *r) __builtin_trap();
  }
  size_t n = 0;
  if (auto v = DecodeVarint(ipfly::ByteView(data, size), &n); v.ok()) {
    ipfly::Bytes b;
    AppendVarint(b, *v);
    if (b.size() != n || !std::equal(b.begin(), b.end(), data)) __builtin_trap();
  }
  return 0;
}
