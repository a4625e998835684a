#include "core/codec/dagpb.h"

#include <string>

#include "core/codec/protobuf_wire.h"

namespace ipfly::codec {
namespace {

using pb::WireType;

// PBNode / PBLink field numbers (ipld specs/codecs/dag-pb).
constexpr uint32_t kNodeData = 1;
constexpr uint32_t kNodeLinks = 2;
constexpr uint32_t kLinkHash = 1;
constexpr uint32_t kLinkName = 2;
constexpr uint32_t kLinkTsize = 3;

std::string At(size_t off) { return " at offset " + std::to_string(off); }

Result<PbLink> DecodeLink(ByteView bytes, size_t base) {
  pb::Reader r(bytes, base);
  std::optional<mf::Cid> hash;
  std::optional<std::string> name;
  std::optional<uint64_t> tsize;
  // The spec fixes the field order Hash, Name, Tsize; a strictly increasing field number also
  // rules out duplicates.
  uint32_t last_field = 0;
  while (!r.done()) {
    const size_t at = r.offset();
    pb::Tag tag = IPFLY_TRY(r.ReadTag());
    if (tag.field > kLinkTsize) {
      return Corrupt("dag-pb: unknown PBLink " + pb::DescribeTag(tag) + At(at));
    }
    if (tag.field <= last_field) {
      return Corrupt("dag-pb: PBLink " + pb::DescribeTag(tag) +
                     (tag.field == last_field ? " duplicated" : " out of order") + At(at));
    }
    last_field = tag.field;
    const WireType want = tag.field == kLinkTsize ? WireType::kVarint : WireType::kLen;
    if (tag.type != want) {
      return Corrupt("dag-pb: PBLink " + pb::DescribeTag(tag) + " has the wrong wire type" +
                     At(at));
    }
    switch (tag.field) {
      case kLinkHash: {
        const size_t hash_at = r.offset();
        ByteView b = IPFLY_TRY(r.ReadLengthDelimited());
        auto cid = mf::Cid::FromBytes(b);
        if (!cid.ok()) {
          return Error(
              cid.error().code() == Errc::kUnsupported ? Errc::kUnsupported : Errc::kCorrupt,
              "dag-pb: PBLink Hash" + At(hash_at) +
                  " is not a usable CID: " + cid.error().message());
        }
        hash = std::move(cid).value();
        break;
      }
      case kLinkName: {
        ByteView b = IPFLY_TRY(r.ReadLengthDelimited());
        name.emplace(AsString(b));
        break;
      }
      case kLinkTsize:
        tsize = IPFLY_TRY(r.ReadVarint());
        break;
    }
  }
  if (!hash) return Corrupt("dag-pb: PBLink without Hash" + At(base));
  return PbLink{std::move(*hash), std::move(name), tsize};
}

size_t LinkBodySize(const PbLink& l, size_t hash_len) {
  size_t n = pb::BytesFieldSize(kLinkHash, hash_len);
  if (l.name) n += pb::BytesFieldSize(kLinkName, l.name->size());
  if (l.tsize) n += pb::VarintFieldSize(kLinkTsize, *l.tsize);
  return n;
}

}  // namespace

Result<PbNode> DecodeDagPb(ByteView block) {
  PbNode node;
  pb::Reader r(block);
  bool have_data = false;
  while (!r.done()) {
    const size_t at = r.offset();
    pb::Tag tag = IPFLY_TRY(r.ReadTag());
    if (tag.field != kNodeData && tag.field != kNodeLinks) {
      return Corrupt("dag-pb: unknown PBNode " + pb::DescribeTag(tag) + At(at));
    }
    if (tag.type != WireType::kLen) {
      return Corrupt("dag-pb: PBNode " + pb::DescribeTag(tag) + " has the wrong wire type" +
                     At(at));
    }
    const size_t body_at = r.offset();
    ByteView body = IPFLY_TRY(r.ReadLengthDelimited());
    if (tag.field == kNodeData) {
      if (have_data) return Corrupt("dag-pb: duplicate PBNode Data" + At(at));
      have_data = true;
      node.data.emplace(body.begin(), body.end());
    } else {
      // body_at points at the length varint; the link body starts after it.
      const size_t link_base = body_at + pb::VarintSize(body.size());
      node.links.push_back(IPFLY_TRY(DecodeLink(body, link_base)));
    }
  }
  return node;
}

Bytes EncodeDagPb(const PbNode& node) {
  // Size everything first so the output is written with a single allocation.
  std::vector<Bytes> hashes;
  hashes.reserve(node.links.size());
  size_t total = 0;
  for (const PbLink& l : node.links) {
    hashes.push_back(l.hash.ToBytes());
    total += pb::BytesFieldSize(kNodeLinks, LinkBodySize(l, hashes.back().size()));
  }
  if (node.data) total += pb::BytesFieldSize(kNodeData, node.data->size());

  Bytes out;
  out.reserve(total);
  // Canonical order: every link first, then Data (not field-number order).
  for (size_t i = 0; i < node.links.size(); ++i) {
    const PbLink& l = node.links[i];
    pb::AppendTag(out, kNodeLinks, WireType::kLen);
    pb::AppendVarint(out, LinkBodySize(l, hashes[i].size()));
    pb::AppendBytesField(out, kLinkHash, hashes[i]);
    if (l.name) pb::AppendBytesField(out, kLinkName, AsBytes(*l.name));
    if (l.tsize) pb::AppendVarintField(out, kLinkTsize, *l.tsize);
  }
  if (node.data) pb::AppendBytesField(out, kNodeData, *node.data);
  return out;
}

}  // namespace ipfly::codec
