// Multibase: the string encodings of binary CIDs. Supported: base32 lower 'b' (and 'B' upper on
// decode), base58btc 'z', base16 'f' ('F' on decode), base36 'k' ('K' on decode).
// base32/base36 decoding is case-insensitive as the multibase tests require.
#pragma once

#include <string>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::mf {

enum class Multibase : char {
  kBase32 = 'b',
  kBase58btc = 'z',
  kBase16 = 'f',
  kBase36 = 'k',
};

// Returns prefix char + encoding.
std::string MultibaseEncode(Multibase base, ByteView data);
// Decodes a prefixed string. `base` (optional) receives the base used.
Result<Bytes> MultibaseDecode(std::string_view s, Multibase* base = nullptr);
// Parses a base name as used on the command line: "base32", "base58btc", "base16", "base36".
Result<Multibase> MultibaseFromName(std::string_view name);

// Raw (unprefixed) alphabets, used by CIDv0 (base58btc without prefix).
std::string Base58btcEncode(ByteView data);
Result<Bytes> Base58btcDecode(std::string_view s);
std::string Base32LowerEncode(ByteView data);  // RFC 4648, no padding

}  // namespace ipfly::mf
