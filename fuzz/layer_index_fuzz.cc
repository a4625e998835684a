// Fuzzes the layer index decoder: arbitrary bytes must decode or fail cleanly; what decodes must
// re-encode to bytes that decode to the same index.
#include <cstdint>

#include "layer/layer_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto idx = ipfly::layer::LayerIndex::Decode(ipfly::ByteView(data, size));
  if (idx.ok()) {
    auto enc = idx->Encode();
    auto again = ipfly::layer::LayerIndex::Decode(enc);
    if (!again.ok() || again->Encode() != enc) __builtin_trap();
  }
  return 0;
}
