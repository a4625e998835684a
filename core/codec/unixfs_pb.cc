#include "core/codec/unixfs_pb.h"

#include <limits>
#include <string>

#include "core/codec/protobuf_wire.h"

namespace ipfly::codec {
namespace {

using pb::WireType;

// UnixFS Data field numbers (ipfs/specs unixfs.md; boxo unixfs.proto, proto2).
constexpr uint32_t kType = 1;
constexpr uint32_t kData = 2;
constexpr uint32_t kFilesize = 3;
constexpr uint32_t kBlocksizes = 4;
constexpr uint32_t kHashType = 5;
constexpr uint32_t kFanout = 6;
constexpr uint32_t kMode = 7;
constexpr uint32_t kMtime = 8;
// UnixTime
constexpr uint32_t kSeconds = 1;
constexpr uint32_t kNanos = 2;

constexpr uint64_t kMurmur3x64_64 = 0x22;
constexpr uint64_t kMaxFanout = 1024;  // CVE-2023-23625

std::string At(size_t off) { return " at offset " + std::to_string(off); }

Error WrongType(const pb::Tag& t, size_t at) {
  return Corrupt("unixfs: " + pb::DescribeTag(t) + " has the wrong wire type" + At(at));
}
Error Duplicate(const char* what, size_t at) {
  return Corrupt(std::string("unixfs: duplicate ") + what + At(at));
}

Result<UnixTime> DecodeUnixTime(ByteView bytes, size_t base) {
  pb::Reader r(bytes, base);
  UnixTime t;
  bool have_seconds = false;
  while (!r.done()) {
    const size_t at = r.offset();
    pb::Tag tag = IPFLY_TRY(r.ReadTag());
    switch (tag.field) {
      case kSeconds:
        if (tag.type != WireType::kVarint) return WrongType(tag, at);
        if (have_seconds) return Duplicate("mtime Seconds", at);
        have_seconds = true;
        // int64 on the wire: two's complement in a 64-bit varint.
        t.seconds = static_cast<int64_t>(IPFLY_TRY(r.ReadVarint()));
        break;
      case kNanos: {
        if (tag.type != WireType::kI32) return WrongType(tag, at);
        if (t.nanos) return Duplicate("mtime FractionalNanoseconds", at);
        uint32_t ns = IPFLY_TRY(r.ReadFixed32());
        if (ns < 1 || ns > 999'999'999) {
          return Corrupt("unixfs: mtime FractionalNanoseconds " + std::to_string(ns) +
                         " outside [1, 999999999]" + At(at));
        }
        t.nanos = ns;
        break;
      }
      default:
        return Corrupt("unixfs: unknown UnixTime " + pb::DescribeTag(tag) + At(at));
    }
  }
  if (!have_seconds) return Corrupt("unixfs: mtime without Seconds" + At(base));
  return t;
}

Status CheckFanout(uint64_t f, size_t at) {
  if (f == 0 || (f & (f - 1)) != 0 || f % 8 != 0 || f > kMaxFanout) {
    return Corrupt("unixfs: HAMT fanout " + std::to_string(f) +
                   " must be a power of two, a multiple of 8 and <= 1024" + At(at));
  }
  return OkStatus();
}

}  // namespace

Result<UnixfsData> DecodeUnixfs(ByteView bytes) {
  UnixfsData d;
  pb::Reader r(bytes);
  bool have_type = false;
  while (!r.done()) {
    const size_t at = r.offset();
    pb::Tag tag = IPFLY_TRY(r.ReadTag());
    switch (tag.field) {
      case kType: {
        if (tag.type != WireType::kVarint) return WrongType(tag, at);
        if (have_type) return Duplicate("Type", at);
        uint64_t v = IPFLY_TRY(r.ReadVarint());
        // proto2 treats an unknown enum value as an unknown field, which leaves the required
        // Type unset: reject.
        if (v > static_cast<uint64_t>(UnixfsType::kHamtShard)) {
          return Corrupt("unixfs: unknown Type " + std::to_string(v) + At(at));
        }
        d.type = static_cast<UnixfsType>(v);
        have_type = true;
        break;
      }
      case kData: {
        if (tag.type != WireType::kLen) return WrongType(tag, at);
        if (d.data) return Duplicate("Data", at);
        ByteView b = IPFLY_TRY(r.ReadLengthDelimited());
        d.data.emplace(b.begin(), b.end());
        break;
      }
      case kFilesize:
        if (tag.type != WireType::kVarint) return WrongType(tag, at);
        if (d.filesize) return Duplicate("filesize", at);
        d.filesize = IPFLY_TRY(r.ReadVarint());
        break;
      case kBlocksizes:
        if (tag.type == WireType::kVarint) {
          d.blocksizes.push_back(IPFLY_TRY(r.ReadVarint()));
        } else if (tag.type == WireType::kLen) {
          // Packed form (proto3 writers): accepted on read, never written.
          const size_t body_at = r.offset();
          ByteView body = IPFLY_TRY(r.ReadLengthDelimited());
          pb::Reader pr(body, body_at + pb::VarintSize(body.size()));
          while (!pr.done()) d.blocksizes.push_back(IPFLY_TRY(pr.ReadVarint()));
        } else {
          return WrongType(tag, at);
        }
        break;
      case kHashType:
        if (tag.type != WireType::kVarint) return WrongType(tag, at);
        if (d.hash_type) return Duplicate("hashType", at);
        d.hash_type = IPFLY_TRY(r.ReadVarint());
        break;
      case kFanout: {
        if (tag.type != WireType::kVarint) return WrongType(tag, at);
        if (d.fanout) return Duplicate("fanout", at);
        uint64_t f = IPFLY_TRY(r.ReadVarint());
        IPFLY_RETURN_IF_ERROR(CheckFanout(f, at));
        d.fanout = f;
        break;
      }
      case kMode: {
        if (tag.type != WireType::kVarint) return WrongType(tag, at);
        if (d.mode) return Duplicate("mode", at);
        uint64_t m = IPFLY_TRY(r.ReadVarint());
        if (m > std::numeric_limits<uint32_t>::max()) {
          return Corrupt("unixfs: mode " + std::to_string(m) + " does not fit uint32" + At(at));
        }
        d.mode = static_cast<uint32_t>(m);
        break;
      }
      case kMtime: {
        if (tag.type != WireType::kLen) return WrongType(tag, at);
        if (d.mtime) return Duplicate("mtime", at);
        const size_t body_at = r.offset();
        ByteView body = IPFLY_TRY(r.ReadLengthDelimited());
        d.mtime = IPFLY_TRY(DecodeUnixTime(body, body_at + pb::VarintSize(body.size())));
        break;
      }
      default:
        return Corrupt("unixfs: unknown " + pb::DescribeTag(tag) + At(at));
    }
  }
  if (!have_type) return Corrupt("unixfs: missing required Type");
  if (d.type == UnixfsType::kHamtShard) {
    if (!d.fanout) return Corrupt("unixfs: HAMTShard without fanout");
    if (d.hash_type != kMurmur3x64_64) {
      return Corrupt("unixfs: HAMTShard hashType must be 0x22 (murmur3-x64-64)");
    }
  }
  return d;
}

Bytes EncodeUnixfs(const UnixfsData& d) {
  Bytes out;
  size_t est = 2 + (d.data ? d.data->size() + 6 : 0) + 11 * (d.blocksizes.size() + 6) + 24;
  out.reserve(est);
  // Field-number order, proto2 style: Type always, optional fields only when set (an explicit
  // filesize of 0 included), blocksizes unpacked.
  pb::AppendVarintField(out, kType, static_cast<uint64_t>(d.type));
  if (d.data) pb::AppendBytesField(out, kData, *d.data);
  if (d.filesize) pb::AppendVarintField(out, kFilesize, *d.filesize);
  for (uint64_t b : d.blocksizes) pb::AppendVarintField(out, kBlocksizes, b);
  if (d.hash_type) pb::AppendVarintField(out, kHashType, *d.hash_type);
  if (d.fanout) pb::AppendVarintField(out, kFanout, *d.fanout);
  if (d.mode) pb::AppendVarintField(out, kMode, *d.mode);
  if (d.mtime) {
    Bytes t;
    pb::AppendVarintField(t, kSeconds, static_cast<uint64_t>(d.mtime->seconds));
    if (d.mtime->nanos) pb::AppendFixed32Field(t, kNanos, *d.mtime->nanos);
    pb::AppendBytesField(out, kMtime, t);
  }
  return out;
}

}  // namespace ipfly::codec
