// UnixFS Data message (ipfs/specs unixfs.md; proto2 semantics, hand-coded).
//
// Decoder (strict, kCorrupt on violations): Type is required; unknown fields rejected; blocksizes
// accepted unpacked (canonical) and packed; mtime FractionalNanoseconds must be in [1, 999999999];
// HAMT fanout must be a power of two, multiple of 8 and <= 1024.
// Encoder writes fields in field-number order, blocksizes unpacked, and filesize whenever it is
// set (an explicit 0 included: Kubo's empty file is 08 02 18 00).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::codec {

enum class UnixfsType : uint32_t {
  kRaw = 0,  // deprecated: read like File, never produced
  kDirectory = 1,
  kFile = 2,
  kMetadata = 3,
  kSymlink = 4,
  kHamtShard = 5,
};

struct UnixTime {
  int64_t seconds = 0;
  std::optional<uint32_t> nanos;
};

struct UnixfsData {
  UnixfsType type = UnixfsType::kFile;
  std::optional<Bytes> data;
  std::optional<uint64_t> filesize;
  std::vector<uint64_t> blocksizes;
  std::optional<uint64_t> hash_type;
  std::optional<uint64_t> fanout;
  std::optional<uint32_t> mode;
  std::optional<UnixTime> mtime;
};

Result<UnixfsData> DecodeUnixfs(ByteView bytes);
Bytes EncodeUnixfs(const UnixfsData& d);

}  // namespace ipfly::codec
