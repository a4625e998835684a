// Minimal protobuf wire-format helpers for the hand-written dag-pb and UnixFS codecs.
//
// Protobuf varints are NOT multiformats varints (core/multiformats/varint.h): they may be up to
// 10 bytes long and carry a full uint64. The reader accepts non-minimal encodings (protobuf allows
// them; the block hash is what pins the bytes) but rejects values that overflow 64 bits. The
// writers always produce the minimal encoding.
//
// All functions are pure; Reader is a cursor over caller-owned bytes (the bytes must outlive it
// and any ByteView it returns). Errors are kCorrupt and name the absolute byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::codec::pb {

inline constexpr size_t kMaxVarintBytes = 10;
inline constexpr uint32_t kMaxFieldNumber = (1u << 29) - 1;

enum class WireType : uint8_t {
  kVarint = 0,
  kI64 = 1,
  kLen = 2,
  kStartGroup = 3,  // deprecated groups: always rejected by the reader
  kEndGroup = 4,
  kI32 = 5,
};

struct Tag {
  uint32_t field = 0;
  WireType type = WireType::kVarint;
};

// Size of the minimal varint encoding of v (1..10).
size_t VarintSize(uint64_t v);
void AppendVarint(Bytes& out, uint64_t v);
// Writes varint v at p (which must have VarintSize(v) bytes); returns the byte after it.
uint8_t* WriteVarint(uint8_t* p, uint64_t v);

inline uint64_t MakeTag(uint32_t field, WireType t) {
  return (uint64_t{field} << 3) | static_cast<uint8_t>(t);
}
void AppendTag(Bytes& out, uint32_t field, WireType t);
void AppendVarintField(Bytes& out, uint32_t field, uint64_t v);
void AppendBytesField(Bytes& out, uint32_t field, ByteView v);
void AppendFixed32Field(Bytes& out, uint32_t field, uint32_t v);
// Encoded size of a length-delimited field with a payload of `len` bytes.
size_t BytesFieldSize(uint32_t field, size_t len);
size_t VarintFieldSize(uint32_t field, uint64_t v);

// Cursor over one message. `base` is added to positions in error messages so nested readers report
// offsets relative to the outermost buffer.
class Reader {
 public:
  explicit Reader(ByteView in, size_t base = 0) : in_(in), base_(base) {}

  bool done() const { return pos_ >= in_.size(); }
  // Absolute offset of the next unread byte.
  size_t offset() const { return base_ + pos_; }

  Result<uint64_t> ReadVarint();
  // Reads a field key. Rejects field number 0, numbers above kMaxFieldNumber, group wire types and
  // the undefined wire types 6 and 7.
  Result<Tag> ReadTag();
  // Reads a varint length and returns a view of that many following bytes.
  Result<ByteView> ReadLengthDelimited();
  Result<uint32_t> ReadFixed32();
  Result<uint64_t> ReadFixed64();

 private:
  Error Truncated(std::string_view what) const;
  ByteView in_;
  size_t base_;
  size_t pos_ = 0;
};

// "field N wire type W" for error messages.
std::string DescribeTag(const Tag& t);

}  // namespace ipfly::codec::pb
