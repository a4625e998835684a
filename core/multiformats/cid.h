// Content identifiers, v0 and v1 (multiformats/cid). See ../shared/notes/ipfs.md A1.
//
// Value type; cheap enough to copy (≈ 40 bytes of heap). Equality is on (version, codec,
// multihash): a CIDv0 and its v1 form are different CIDs for the same block (compare multihash() to
// dedupe).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/multiformats/multibase.h"
#include "core/multiformats/multihash.h"

namespace ipfly::mf {

inline constexpr uint64_t kCodecRaw = 0x55;
inline constexpr uint64_t kCodecDagPb = 0x70;
inline constexpr uint64_t kCodecDagCbor = 0x71;
inline constexpr uint64_t kCodecLibp2pKey = 0x72;

// Returns "raw", "dag-pb", ... or "0x<hex>" for unknown codes.
std::string CodecName(uint64_t codec);
// Parses "raw", "dag-pb", "dag-cbor", "libp2p-key".
Result<uint64_t> CodecFromName(std::string_view name);

class Cid {
 public:
  // String form: "Qm…" (46 chars, v0) or a multibase string of a v1 CID. A multibase string that
  // decodes to bytes starting 0x12 is rejected (v0 must never be multibase-prefixed).
  // Only the codecs raw, dag-pb, dag-cbor and libp2p-key are accepted; others give kUnsupported.
  static Result<Cid> Parse(std::string_view s);
  // Binary form, whole input must be exactly one CID.
  static Result<Cid> FromBytes(ByteView in);
  // Reads one binary CID from the start of `in` (CAR sections, dag-pb links).
  static Result<Cid> Read(ByteView in, size_t* consumed);

  static Cid V1(uint64_t codec, Multihash mh);
  // v0 needs a sha2-256 multihash (32-byte digest); otherwise kInvalidArgument.
  static Result<Cid> V0(Multihash mh);

  int version() const { return version_; }
  uint64_t codec() const { return codec_; }
  const Multihash& multihash() const { return mh_; }
  bool is_identity() const { return mh_.is_identity(); }

  // Binary form (v0: the multihash; v1: varint(1) varint(codec) multihash).
  Bytes ToBytes() const;
  // v0: base58btc without prefix; v1: multibase (default base32 lower).
  std::string ToString() const;
  std::string ToString(Multibase base) const;  // v0 ignores `base` unless converted first

  Cid ToV1() const;
  // Only dag-pb + sha2-256 CIDs have a v0 form; others give kInvalidArgument.
  Result<Cid> ToV0() const;

  bool operator==(const Cid& o) const {
    return version_ == o.version_ && codec_ == o.codec_ && mh_ == o.mh_;
  }
  bool operator!=(const Cid& o) const { return !(*this == o); }
  bool operator<(const Cid& o) const;

 private:
  Cid(int version, uint64_t codec, Multihash mh)
      : version_(version), codec_(codec), mh_(std::move(mh)) {}
  int version_;
  uint64_t codec_;
  Multihash mh_;
};

}  // namespace ipfly::mf

template <>
struct std::hash<ipfly::mf::Cid> {
  size_t operator()(const ipfly::mf::Cid& c) const noexcept;
};
template <>
struct std::hash<ipfly::mf::Multihash> {
  size_t operator()(const ipfly::mf::Multihash& m) const noexcept;
};
