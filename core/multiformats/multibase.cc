#include "core/multiformats/multibase.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace ipfly::mf {
namespace {

constexpr char kBase32Alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
constexpr char kBase58Alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
constexpr char kBase36Alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";

// Encodes `data` in an arbitrary radix (base58/base36): each leading zero byte becomes the
// alphabet's zero digit, the rest is a big-number conversion. Inputs here are CIDs (< 200 bytes)
// so the quadratic algorithm is fine.
std::string RadixEncode(ByteView data, unsigned radix, const char* alphabet) {
  size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == 0) ++zeros;
  std::vector<uint8_t> digits;  // little-endian digits in `radix`
  digits.reserve(data.size() * 2);
  for (size_t i = zeros; i < data.size(); ++i) {
    unsigned carry = data[i];
    for (auto& d : digits) {
      carry += static_cast<unsigned>(d) << 8;
      d = static_cast<uint8_t>(carry % radix);
      carry /= radix;
    }
    while (carry) {
      digits.push_back(static_cast<uint8_t>(carry % radix));
      carry /= radix;
    }
  }
  std::string s(zeros, alphabet[0]);
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) s.push_back(alphabet[*it]);
  return s;
}

Result<Bytes> RadixDecode(std::string_view s, unsigned radix, const char* alphabet,
                          bool case_insensitive, const char* name) {
  std::array<int, 256> map;
  map.fill(-1);
  for (unsigned i = 0; i < radix; ++i) {
    auto c = static_cast<unsigned char>(alphabet[i]);
    map[c] = static_cast<int>(i);
    if (case_insensitive) map[std::toupper(c)] = static_cast<int>(i);
  }
  size_t zeros = 0;
  while (zeros < s.size() && s[zeros] == alphabet[0]) ++zeros;
  std::vector<uint8_t> bytes;  // little-endian base-256
  for (size_t i = zeros; i < s.size(); ++i) {
    int v = map[static_cast<unsigned char>(s[i])];
    if (v < 0) {
      return InvalidArgument(std::string("invalid ") + name + " character '" + s[i] +
                             "' at position " + std::to_string(i));
    }
    unsigned carry = static_cast<unsigned>(v);
    for (auto& b : bytes) {
      carry += static_cast<unsigned>(b) * radix;
      b = static_cast<uint8_t>(carry & 0xff);
      carry >>= 8;
    }
    while (carry) {
      bytes.push_back(static_cast<uint8_t>(carry & 0xff));
      carry >>= 8;
    }
  }
  Bytes out(zeros, 0);
  out.insert(out.end(), bytes.rbegin(), bytes.rend());
  return out;
}

Result<Bytes> Base32Decode(std::string_view s) {
  Bytes out;
  out.reserve(s.size() * 5 / 8);
  uint64_t buf = 0;
  int bits = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
    int v;
    if (c >= 'a' && c <= 'z')
      v = c - 'a';
    else if (c >= '2' && c <= '7')
      v = c - '2' + 26;
    else
      return InvalidArgument("invalid base32 character '" + std::string(1, s[i]) +
                             "' at position " + std::to_string(i));
    buf = (buf << 5) | static_cast<unsigned>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(buf >> bits));
      buf &= (uint64_t{1} << bits) - 1;
    }
  }
  // RFC 4648 without padding: leftover bits must be < 5 and zero, and a length of 1, 3 or 6
  // characters mod 8 can never come from whole bytes.
  size_t rem = s.size() % 8;
  if (rem == 1 || rem == 3 || rem == 6) return InvalidArgument("invalid base32 length");
  if (buf != 0) return InvalidArgument("base32 has non-zero trailing bits");
  return out;
}

Result<Bytes> Base16Decode(std::string_view s) {
  Bytes out;
  if (!HexDecode(s, &out)) return InvalidArgument("invalid base16 string");
  return out;
}

}  // namespace

std::string Base32LowerEncode(ByteView data) {
  std::string s;
  s.reserve((data.size() * 8 + 4) / 5);
  uint64_t buf = 0;
  int bits = 0;
  for (uint8_t b : data) {
    buf = (buf << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      s.push_back(kBase32Alphabet[(buf >> bits) & 31]);
    }
    buf &= (uint64_t{1} << bits) - 1;
  }
  if (bits > 0) s.push_back(kBase32Alphabet[(buf << (5 - bits)) & 31]);
  return s;
}

std::string Base58btcEncode(ByteView data) { return RadixEncode(data, 58, kBase58Alphabet); }

Result<Bytes> Base58btcDecode(std::string_view s) {
  return RadixDecode(s, 58, kBase58Alphabet, false, "base58btc");
}

std::string MultibaseEncode(Multibase base, ByteView data) {
  std::string s(1, static_cast<char>(base));
  switch (base) {
    case Multibase::kBase32:
      s += Base32LowerEncode(data);
      break;
    case Multibase::kBase58btc:
      s += Base58btcEncode(data);
      break;
    case Multibase::kBase16:
      s += HexEncode(data);
      break;
    case Multibase::kBase36:
      s += RadixEncode(data, 36, kBase36Alphabet);
      break;
  }
  return s;
}

Result<Bytes> MultibaseDecode(std::string_view s, Multibase* base) {
  if (s.empty()) return InvalidArgument("empty multibase string");
  std::string_view body = s.substr(1);
  Multibase b;
  Result<Bytes> r = InvalidArgument("");
  switch (s[0]) {
    case 'b':
    case 'B':
      b = Multibase::kBase32;
      r = Base32Decode(body);
      break;
    case 'z':
      b = Multibase::kBase58btc;
      r = Base58btcDecode(body);
      break;
    case 'f':
    case 'F':
      b = Multibase::kBase16;
      r = Base16Decode(body);
      break;
    case 'k':
    case 'K':
      b = Multibase::kBase36;
      r = RadixDecode(body, 36, kBase36Alphabet, true, "base36");
      break;
    default:
      return Unsupported(std::string("unsupported multibase prefix '") + s[0] +
                         "' (supported: b, z, f, k)");
  }
  if (r.ok() && base) *base = b;
  return r;
}

Result<Multibase> MultibaseFromName(std::string_view name) {
  if (name == "base32" || name == "b") return Multibase::kBase32;
  if (name == "base58btc" || name == "z") return Multibase::kBase58btc;
  if (name == "base16" || name == "f") return Multibase::kBase16;
  if (name == "base36" || name == "k") return Multibase::kBase36;
  return InvalidArgument("unknown multibase '" + std::string(name) +
                         "' (expected base32, base58btc, base16 or base36)");
}

}  // namespace ipfly::mf
