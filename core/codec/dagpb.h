// dag-pb codec (ipld specs/codecs/dag-pb): strict decoder, canonical encoder.
//
// Decoder rejects (kCorrupt, with the byte offset in the message): duplicate fields, unknown fields
// or wire types, PBLink fields out of order (Hash, Name, Tsize), a missing link Hash, a Hash that
// is not a CID, truncated varints/lengths, trailing garbage. It accepts Data before or after Links
// (legacy data has both). Links keep stored order (never sorted on decode).
// Encoder writes Links first, then Data (canonical), each link Hash, Name (if present, "" included:
// Kubo writes an empty Name on file-chunk links), Tsize (if present).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/multiformats/cid.h"

namespace ipfly::codec {

struct PbLink {
  mf::Cid hash;
  std::optional<std::string> name;
  std::optional<uint64_t> tsize;
};

struct PbNode {
  std::vector<PbLink> links;
  std::optional<Bytes> data;
};

Result<PbNode> DecodeDagPb(ByteView block);
Bytes EncodeDagPb(const PbNode& node);

}  // namespace ipfly::codec
