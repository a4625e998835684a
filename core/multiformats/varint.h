// Multiformats unsigned varint (LEB128): minimal encoding, at most 9 bytes (63 bits).
// NOT the protobuf varint (up to 10 bytes, full uint64): see core/codec/protobuf_wire.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::mf {

inline constexpr size_t kMaxVarintBytes = 9;
inline constexpr uint64_t kMaxVarintValue = (uint64_t{1} << 63) - 1;

// Appends the minimal encoding of v (v must be <= kMaxVarintValue).
void AppendVarint(Bytes& out, uint64_t v);
// Length of the minimal LEB128 encoding of any v: 1..10 (at most 9 for v <= kMaxVarintValue).
size_t VarintSize(uint64_t v);

// Decodes one varint at the start of `in`. On success stores the number of bytes used in
// *consumed. Errors (kCorrupt): truncated input, non-minimal encoding, more than 9 bytes.
Result<uint64_t> DecodeVarint(ByteView in, size_t* consumed);

}  // namespace ipfly::mf
