#include "core/codec/protobuf_wire.h"

#include <string>

#include "core/multiformats/varint.h"

namespace ipfly::codec::pb {

// Both varints are LEB128 and their minimal encodings have the same length; only the decoding
// rules differ (see protobuf_wire.h).
size_t VarintSize(uint64_t v) { return mf::VarintSize(v); }

uint8_t* WriteVarint(uint8_t* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<uint8_t>(v);
  return p;
}

void AppendVarint(Bytes& out, uint64_t v) {
  uint8_t buf[kMaxVarintBytes];
  uint8_t* end = WriteVarint(buf, v);
  out.insert(out.end(), buf, end);
}

void AppendTag(Bytes& out, uint32_t field, WireType t) { AppendVarint(out, MakeTag(field, t)); }

void AppendVarintField(Bytes& out, uint32_t field, uint64_t v) {
  AppendTag(out, field, WireType::kVarint);
  AppendVarint(out, v);
}

void AppendBytesField(Bytes& out, uint32_t field, ByteView v) {
  AppendTag(out, field, WireType::kLen);
  AppendVarint(out, v.size());
  out.insert(out.end(), v.begin(), v.end());
}

void AppendFixed32Field(Bytes& out, uint32_t field, uint32_t v) {
  AppendTag(out, field, WireType::kI32);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

size_t BytesFieldSize(uint32_t field, size_t len) {
  return VarintSize(MakeTag(field, WireType::kLen)) + VarintSize(len) + len;
}

size_t VarintFieldSize(uint32_t field, uint64_t v) {
  return VarintSize(MakeTag(field, WireType::kVarint)) + VarintSize(v);
}

std::string DescribeTag(const Tag& t) {
  return "field " + std::to_string(t.field) + " wire type " +
         std::to_string(static_cast<int>(t.type));
}

Error Reader::Truncated(std::string_view what) const {
  return Corrupt("protobuf: truncated " + std::string(what) + " at offset " +
                 std::to_string(offset()));
}

Result<uint64_t> Reader::ReadVarint() {
  const size_t start = pos_;
  uint64_t v = 0;
  for (size_t i = 0; i < kMaxVarintBytes; ++i) {
    if (pos_ >= in_.size()) {
      pos_ = start;
      return Truncated("varint");
    }
    const uint8_t b = in_[pos_++];
    // The 10th byte holds only bit 63; anything more does not fit a uint64.
    if (i == kMaxVarintBytes - 1 && b > 1) {
      const size_t at = base_ + start;
      pos_ = start;
      return Corrupt("protobuf: varint overflows 64 bits at offset " + std::to_string(at));
    }
    v |= uint64_t{b & 0x7fu} << (7 * i);
    if (!(b & 0x80)) return v;
  }
  // Unreachable: the 10th byte either ended the varint or failed the overflow check above.
  const size_t at = base_ + start;
  pos_ = start;
  return Corrupt("protobuf: varint longer than 10 bytes at offset " + std::to_string(at));
}

Result<Tag> Reader::ReadTag() {
  const size_t at = offset();
  uint64_t key = IPFLY_TRY(ReadVarint());
  const uint64_t wt = key & 7;
  const uint64_t field = key >> 3;
  if (field == 0 || field > kMaxFieldNumber) {
    return Corrupt("protobuf: invalid field number " + std::to_string(field) + " at offset " +
                   std::to_string(at));
  }
  if (wt == 3 || wt == 4 || wt > 5) {
    return Corrupt("protobuf: unsupported wire type " + std::to_string(wt) + " at offset " +
                   std::to_string(at));
  }
  return Tag{static_cast<uint32_t>(field), static_cast<WireType>(wt)};
}

Result<ByteView> Reader::ReadLengthDelimited() {
  const size_t at = offset();
  uint64_t len = IPFLY_TRY(ReadVarint());
  if (len > in_.size() - pos_) {
    return Corrupt("protobuf: length " + std::to_string(len) + " at offset " + std::to_string(at) +
                   " runs past the end (" + std::to_string(in_.size() - pos_) + " bytes left)");
  }
  ByteView v = in_.subspan(pos_, static_cast<size_t>(len));
  pos_ += static_cast<size_t>(len);
  return v;
}

Result<uint32_t> Reader::ReadFixed32() {
  if (in_.size() - pos_ < 4) return Truncated("fixed32");
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{in_[pos_ + i]} << (8 * i);
  pos_ += 4;
  return v;
}

Result<uint64_t> Reader::ReadFixed64() {
  if (in_.size() - pos_ < 8) return Truncated("fixed64");
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{in_[pos_ + i]} << (8 * i);
  pos_ += 8;
  return v;
}

}  // namespace ipfly::codec::pb
