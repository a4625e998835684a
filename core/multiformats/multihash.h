// Multihash: <varint code><varint length><digest>. ipfly accepts sha2-256 with exactly 32 bytes and
// identity with at most 128 bytes; everything else is rejected as unsupported.
#pragma once

#include <cstdint>
#include <string>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::mf {

inline constexpr uint64_t kHashIdentity = 0x00;
inline constexpr uint64_t kHashSha2_256 = 0x12;
inline constexpr size_t kMaxIdentityDigest = 128;

class Multihash {
 public:
  // Reads one multihash from the start of `in` (used inside CIDs). *consumed receives its length.
  static Result<Multihash> Read(ByteView in, size_t* consumed);
  // Parses a complete multihash (no trailing bytes allowed).
  static Result<Multihash> FromBytes(ByteView in);
  static Multihash Sha256Of(ByteView data);
  static Result<Multihash> Identity(ByteView data);  // kTooLarge above 128 bytes

  uint64_t code() const { return code_; }
  const Bytes& digest() const { return digest_; }
  // The full binary form (code, length, digest).
  const Bytes& bytes() const { return bytes_; }
  bool is_identity() const { return code_ == kHashIdentity; }

  // Checks that `data` hashes to this multihash. kCorrupt with both digests in the message.
  Status Verify(ByteView data) const;

  bool operator==(const Multihash& o) const { return bytes_ == o.bytes_; }
  bool operator<(const Multihash& o) const { return bytes_ < o.bytes_; }

 private:
  Multihash(uint64_t code, Bytes digest);
  uint64_t code_ = 0;
  Bytes digest_;
  Bytes bytes_;
};

}  // namespace ipfly::mf
