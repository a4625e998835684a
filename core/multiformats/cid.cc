#include "core/multiformats/cid.h"

#include <cstring>

#include "core/multiformats/varint.h"

namespace ipfly::mf {
namespace {

bool KnownCodec(uint64_t c) {
  return c == kCodecRaw || c == kCodecDagPb || c == kCodecDagCbor || c == kCodecLibp2pKey;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string CodecName(uint64_t codec) {
  switch (codec) {
    case kCodecRaw:
      return "raw";
    case kCodecDagPb:
      return "dag-pb";
    case kCodecDagCbor:
      return "dag-cbor";
    case kCodecLibp2pKey:
      return "libp2p-key";
    default:
      return Hex(codec);
  }
}

Result<uint64_t> CodecFromName(std::string_view name) {
  if (name == "raw") return kCodecRaw;
  if (name == "dag-pb") return kCodecDagPb;
  if (name == "dag-cbor") return kCodecDagCbor;
  if (name == "libp2p-key") return kCodecLibp2pKey;
  return InvalidArgument("unknown codec '" + std::string(name) +
                         "' (expected raw, dag-pb, dag-cbor or libp2p-key)");
}

Result<Cid> Cid::Read(ByteView in, size_t* consumed) {
  if (in.size() >= 2 && in[0] == kHashSha2_256 && in[1] == 0x20) {
    if (in.size() < 34) return Corrupt("CIDv0 truncated: " + std::to_string(in.size()) + " bytes");
    size_t n = 0;
    auto mh = IPFLY_TRY(Multihash::Read(in.first(34), &n));
    *consumed = 34;
    return Cid(0, kCodecDagPb, std::move(mh));
  }
  size_t n1 = 0, n2 = 0, n3 = 0;
  auto version = DecodeVarint(in, &n1);
  if (!version.ok()) return std::move(version).error().With("CID version");
  if (*version != 1) {
    if (*version == 2 || *version == 3) {
      return Unsupported("CID version " + std::to_string(*version) + " is reserved");
    }
    return Corrupt("invalid CID version " + std::to_string(*version));
  }
  auto codec = DecodeVarint(in.subspan(n1), &n2);
  if (!codec.ok()) return std::move(codec).error().With("CID codec");
  if (!KnownCodec(*codec)) {
    return Unsupported("unsupported CID codec " + Hex(*codec) +
                       " (supported: raw, dag-pb, dag-cbor, libp2p-key)");
  }
  auto mh = Multihash::Read(in.subspan(n1 + n2), &n3);
  if (!mh.ok()) return std::move(mh).error().With("CID");
  *consumed = n1 + n2 + n3;
  return Cid(1, *codec, std::move(*mh));
}

Result<Cid> Cid::FromBytes(ByteView in) {
  size_t n = 0;
  auto cid = IPFLY_TRY(Read(in, &n));
  if (n != in.size())
    return Corrupt("CID has " + std::to_string(in.size() - n) + " trailing bytes");
  return cid;
}

Result<Cid> Cid::Parse(std::string_view s) {
  if (s.empty()) return InvalidArgument("empty CID");
  if (s.size() == 46 && s.starts_with("Qm")) {
    auto bytes = Base58btcDecode(s);
    if (!bytes.ok()) return std::move(bytes).error().With("CIDv0 '" + std::string(s) + "'");
    auto cid = FromBytes(*bytes);
    if (!cid.ok()) return std::move(cid).error().With("CIDv0 '" + std::string(s) + "'");
    if (cid->version() != 0) return InvalidArgument("'" + std::string(s) + "' is not a CIDv0");
    return cid;
  }
  auto bytes = MultibaseDecode(s);
  if (!bytes.ok()) return std::move(bytes).error().With("CID '" + std::string(s) + "'");
  if (!bytes->empty() && (*bytes)[0] == kHashSha2_256) {
    return InvalidArgument("CID '" + std::string(s) +
                           "': a CIDv0 must not carry a multibase prefix");
  }
  auto cid = FromBytes(*bytes);
  if (!cid.ok()) return std::move(cid).error().With("CID '" + std::string(s) + "'");
  return cid;
}

Cid Cid::V1(uint64_t codec, Multihash mh) { return Cid(1, codec, std::move(mh)); }

Result<Cid> Cid::V0(Multihash mh) {
  if (mh.code() != kHashSha2_256 || mh.digest().size() != 32) {
    return InvalidArgument("a CIDv0 needs a sha2-256 multihash");
  }
  return Cid(0, kCodecDagPb, std::move(mh));
}

Bytes Cid::ToBytes() const {
  if (version_ == 0) return mh_.bytes();
  Bytes out;
  out.reserve(mh_.bytes().size() + 4);
  AppendVarint(out, 1);
  AppendVarint(out, codec_);
  out.insert(out.end(), mh_.bytes().begin(), mh_.bytes().end());
  return out;
}

std::string Cid::ToString() const {
  if (version_ == 0) return Base58btcEncode(mh_.bytes());
  return MultibaseEncode(Multibase::kBase32, ToBytes());
}

std::string Cid::ToString(Multibase base) const {
  if (version_ == 0) return Base58btcEncode(mh_.bytes());
  return MultibaseEncode(base, ToBytes());
}

Cid Cid::ToV1() const { return Cid(1, codec_, mh_); }

Result<Cid> Cid::ToV0() const {
  if (codec_ != kCodecDagPb) {
    return InvalidArgument("only dag-pb CIDs have a v0 form; this one is " + CodecName(codec_));
  }
  if (mh_.code() != kHashSha2_256) return InvalidArgument("only sha2-256 CIDs have a v0 form");
  return Cid(0, codec_, mh_);
}

bool Cid::operator<(const Cid& o) const {
  if (version_ != o.version_) return version_ < o.version_;
  if (codec_ != o.codec_) return codec_ < o.codec_;
  return mh_ < o.mh_;
}

}  // namespace ipfly::mf

namespace {
size_t HashBytes(const ipfly::Bytes& b) {
  // Digests are uniformly distributed: the tail bytes are a good hash already.
  size_t h = 0;
  if (b.size() >= sizeof(size_t)) {
    std::memcpy(&h, b.data() + b.size() - sizeof(size_t), sizeof(size_t));
  } else {
    for (uint8_t c : b) h = h * 131 + c;
  }
  return h;
}
}  // namespace

size_t std::hash<ipfly::mf::Cid>::operator()(const ipfly::mf::Cid& c) const noexcept {
  return HashBytes(c.multihash().bytes()) ^ (c.codec() * 0x9e3779b97f4a7c15ull) ^ c.version();
}

size_t std::hash<ipfly::mf::Multihash>::operator()(const ipfly::mf::Multihash& m) const noexcept {
  return HashBytes(m.bytes());
}
