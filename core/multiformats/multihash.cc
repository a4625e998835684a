#include "core/multiformats/multihash.h"

#include <algorithm>
#include <cstring>

#include "core/base/sha256.h"
#include "core/multiformats/varint.h"

namespace ipfly::mf {

Multihash::Multihash(uint64_t code, Bytes digest) : code_(code), digest_(std::move(digest)) {
  bytes_.reserve(digest_.size() + 4);
  AppendVarint(bytes_, code_);
  AppendVarint(bytes_, digest_.size());
  bytes_.insert(bytes_.end(), digest_.begin(), digest_.end());
}

Result<Multihash> Multihash::Read(ByteView in, size_t* consumed) {
  size_t n1 = 0, n2 = 0;
  auto code = DecodeVarint(in, &n1);
  if (!code.ok()) return std::move(code).error().With("multihash code");
  auto len = DecodeVarint(in.subspan(n1), &n2);
  if (!len.ok()) return std::move(len).error().With("multihash length");
  if (*code == kHashSha2_256) {
    if (*len != 32) {
      return Corrupt("sha2-256 multihash must have a 32-byte digest, got " + std::to_string(*len));
    }
  } else if (*code == kHashIdentity) {
    if (*len > kMaxIdentityDigest) {
      return TooLarge("identity multihash of " + std::to_string(*len) +
                      " bytes exceeds the 128-byte limit");
    }
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(*code));
    return Unsupported(std::string("unsupported multihash function ") + buf +
                       " (supported: sha2-256, identity)");
  }
  size_t head = n1 + n2;
  if (in.size() - head < *len) {
    return Corrupt("multihash digest truncated: need " + std::to_string(*len) + " bytes, have " +
                   std::to_string(in.size() - head));
  }
  *consumed = head + *len;
  return Multihash(*code, Bytes(in.begin() + head, in.begin() + head + *len));
}

Result<Multihash> Multihash::FromBytes(ByteView in) {
  size_t n = 0;
  auto mh = IPFLY_TRY(Read(in, &n));
  if (n != in.size()) {
    return Corrupt("multihash has " + std::to_string(in.size() - n) + " trailing bytes");
  }
  return mh;
}

Multihash Multihash::Sha256Of(ByteView data) {
  auto h = ipfly::Sha256Of(data);
  return Multihash(kHashSha2_256, Bytes(h.begin(), h.end()));
}

Result<Multihash> Multihash::Identity(ByteView data) {
  if (data.size() > kMaxIdentityDigest) {
    return TooLarge("identity multihash of " + std::to_string(data.size()) +
                    " bytes exceeds the 128-byte limit");
  }
  return Multihash(kHashIdentity, Bytes(data.begin(), data.end()));
}

Status Multihash::Verify(ByteView data) const {
  if (code_ == kHashIdentity) {
    if (std::equal(data.begin(), data.end(), digest_.begin(), digest_.end())) {
      return OkStatus();
    }
    return Corrupt("data does not match identity multihash");
  }
  // Only sha2-256 can be constructed besides identity (Read rejects the rest).
  auto h = ipfly::Sha256Of(data);
  if (std::memcmp(h.data(), digest_.data(), h.size()) == 0) return OkStatus();
  return Corrupt("sha2-256 mismatch: expected " + HexEncode(digest_) + ", got " +
                 HexEncode(ByteView(h.data(), h.size())));
}

}  // namespace ipfly::mf
