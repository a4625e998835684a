// dag-pb: canonical encoding, strict decoding, and the codec fixtures quoted in the UnixFS spec
// appendix (ipld/codec-fixtures dagpb_*; each file is named by its CID).
#include "core/codec/dagpb.h"

#include <gtest/gtest.h>

#include "core/block.h"
#include "core/codec/unixfs_pb.h"
#include "core/tests/test_util.h"

namespace ipfly::codec {
namespace {

std::string CidOf(const Bytes& block) {
  auto b = Block::Make(mf::kCodecDagPb, block, 1);
  EXPECT_TRUE(b.ok());
  return b.ok() ? b->cid().ToString() : "";
}

struct Fixture {
  const char* cid;
  const char* hex;
};

// From ipfs/specs src/unixfs.md "Invalid Test Cases": valid dag-pb, invalid as UnixFS.
const Fixture kCodecFixtures[] = {
    {"bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", ""},
    {"bafybeihyivpglm6o6wrafbe36fp5l67abmewk7i2eob5wacdbhz7as5obe",
     "12240a2212207521fe19c374a97759226dc5c0c8e674e73950e81b211f7dd3b6b30883a08a51"},
    {"bafybeibh647pmxyksmdm24uad6b5f7tx4dhvilzbg2fiqgzll4yek7g7y4",
     "12340a2212208ab7a6c5e74737878ac73863cb76739d15d4666de44e5756bf55a2f9e9ab5f431209736f6d6520"
     "6c696e6b1880c2d72f12370a2212208ab7a6c5e74737878ac73863cb76739d15d4666de44e5756bf55a2f9e9ab"
     "5f44120f736f6d65206f74686572206c696e6b18080a09736f6d652064617461"},
    {"bafybeibazl2z4vqp2tmwcfag6wirmtpnomxknqcgrauj7m2yisrz3qjbom", "0a050001020304"},
    {"bafybeiaqfni3s5s2k2r6rgpxz4hohdsskh44ka5tk6ztbjerqpvxwfkwaq", "0a00"},
    {"bafybeia53f5n75ituvc3yupuf7tdnxf6fqetrmo2alc6g6iljkmk7ys5mm", "120b0a09015500050001020304"},
    {"bafybeifq4hcxma3kjljrpxtunnljtc6tvbkgsy3vldyfpfbx2lij76niyu",
     "12160a090155000500010203041209736f6d65206e616d65"},
    {"bafybeie7fstnkm4yshfwnmpp7d3mlh4f4okmk7a54d6c3ffr755q7qzk44",
     "120d0a090155000500010203041200"},
    {"bafybeiezymjvhwfuharanxmzxwuomzjjuzqjewjolr4phaiyp6l7qfwo64",
     "12140a0901550005000102030418ffffffffffffff0f"},
    {"bafybeichjs5otecmbvwh5azdr4jc45mp2qcofh2fr54wjdxhz4znahod2i",
     "120d0a090155000500010203041800"},
    {"bafybeia2qk4u55f2qj7zimmtpulejgz7urp7rzs44cvledcaj42gltkk3u", "0a03010203"},
    {"bafybeiahfgovhod2uvww72vwdgatl5r6qkoeegg7at2bghiokupfphqcku",
     "120b0a0901550005000102030412100a09015500050001020304120362617212100a0901550005000102030412"
     "03666f6f"},
    {"bafybeidrg2f6slbv4yzydqtgmsi2vzojajnt7iufcreynfpxndca4z5twm",
     "120b0a09015500050001020304120e0a09015500050001020304120161120e0a09015500050001020304120161"},
    {"bafybeieube7zxmzoc5bgttub2aqofi6xdzimv5munkjseeqccn36a6v6j4",
     "120e0a09015500050001020304120161120e0a09015500050001020304120161"},
};

TEST(DagPb, CodecFixturesDecodeReencodeAndHash) {
  for (const Fixture& f : kCodecFixtures) {
    Bytes block = Hex(f.hex);
    EXPECT_EQ(CidOf(block), f.cid) << f.hex;
    auto node = DecodeDagPb(block);
    ASSERT_TRUE(node.ok()) << f.cid << ": " << node.error().ToString();
    EXPECT_EQ(HexEncode(EncodeDagPb(*node)), f.hex) << f.cid;
    // None of them is valid UnixFS: Data is absent or not a UnixFS message.
    if (node->data) {
      EXPECT_FALSE(DecodeUnixfs(*node->data).ok()) << f.cid;
    }
  }
}

TEST(DagPb, FixtureFieldsDecodeAsStored) {
  auto n = DecodeDagPb(Hex(kCodecFixtures[2].hex));
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(n->links.size(), 2u);
  EXPECT_EQ(n->links[0].name, "some link");
  EXPECT_EQ(n->links[0].tsize, 100000000u);
  EXPECT_EQ(n->links[1].name, "some other link");
  EXPECT_EQ(n->links[1].tsize, 8u);
  EXPECT_EQ(n->links[0].hash.version(), 0);
  ASSERT_TRUE(n->data);
  EXPECT_EQ(AsString(*n->data), "some data");

  auto tsize_max = DecodeDagPb(Hex(kCodecFixtures[8].hex));
  ASSERT_TRUE(tsize_max.ok());
  EXPECT_EQ(tsize_max->links[0].tsize, (uint64_t{1} << 53) - 1);
  EXPECT_FALSE(tsize_max->links[0].name.has_value());
  EXPECT_EQ(tsize_max->links[0].hash.codec(), mf::kCodecRaw);
  EXPECT_TRUE(tsize_max->links[0].hash.is_identity());

  // Links keep stored order; "" sorts before "bar" before "foo" here, but that is not checked.
  auto forms = DecodeDagPb(Hex(kCodecFixtures[11].hex));
  ASSERT_TRUE(forms.ok());
  ASSERT_EQ(forms->links.size(), 3u);
  EXPECT_FALSE(forms->links[0].name.has_value());
  EXPECT_EQ(forms->links[2].name, "foo");
}

TEST(DagPb, KuboEmptyFileAndCids) {
  Bytes empty_file = Hex("0a0408021800");
  EXPECT_EQ(Block::Make(mf::kCodecDagPb, empty_file, 0)->cid().ToString(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
  auto n = DecodeDagPb(empty_file);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(n->links.empty());
  EXPECT_EQ(HexEncode(EncodeDagPb(*n)), "0a0408021800");
  EXPECT_EQ(Block::Make(mf::kCodecDagPb, Hex("0a020801"), 0)->cid().ToString(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
}

TEST(DagPb, EncoderWritesLinksFirstAndEmptyNames) {
  auto leaf = mf::Cid::Parse("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
  ASSERT_TRUE(leaf.ok());
  PbNode node;
  node.data = Hex("0802180b200b");
  node.links.push_back(PbLink{*leaf, std::string(), 11});
  node.links.push_back(PbLink{*leaf, std::nullopt, std::nullopt});
  Bytes enc = EncodeDagPb(node);
  const std::string cid_hex = HexEncode(leaf->ToBytes());
  EXPECT_EQ(HexEncode(enc),
            "122a0a24" + cid_hex + "1200180b" + "12260a24" + cid_hex + "0a060802180b200b");
  auto back = DecodeDagPb(enc);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->links.size(), 2u);
  EXPECT_EQ(back->links[0].name, "");
  EXPECT_FALSE(back->links[1].name.has_value());
  EXPECT_FALSE(back->links[1].tsize.has_value());
  EXPECT_EQ(back->links[0].hash, *leaf);
}

TEST(DagPb, AcceptsDataBeforeLinks) {
  // Legacy order: Data first. Decodes; re-encoding produces the canonical order.
  Bytes legacy =
      Hex("0a0101"
          "120b0a09015500050001020304");
  auto n = DecodeDagPb(legacy);
  ASSERT_TRUE(n.ok()) << n.error().ToString();
  EXPECT_EQ(n->links.size(), 1u);
  EXPECT_EQ(HexEncode(EncodeDagPb(*n)),
            "120b0a09015500050001020304"
            "0a0101");
}

TEST(DagPb, StrictDecoderRejects) {
  const BadHex bad[] = {
      {"0a000a00", "duplicate Data"},
      {"1a00", "unknown PBNode field 3"},
      {"0801", "Data with varint wire type"},
      {"1201", "link truncated"},
      {"0a05000102", "Data length past the end"},
      {"120d12000a09015500050001020304", "Name before Hash"},
      {"12161209736f6d65206e616d650a09015500050001020304", "Name before Hash"},
      {"12160a090155000500010203040a09015500050001020304", "duplicate Hash"},
      {"120f0a0901550005000102030418001200", "Tsize then Name"},
      {"12020a00", "empty Hash"},
      {"12021200", "missing Hash"},
      {"12021800", "missing Hash (Tsize only)"},
      {"12040a021220", "Hash is not a CID"},
      {"120d0a090155000500010203042000", "unknown PBLink field 4"},
      {"120d0a09015500050001020304"
       "1a00",
       "Tsize with bytes wire type"},
      {"0a0101ff", "trailing junk (truncated tag)"},
      {"0a010100", "trailing zero byte (field 0)"},
      {"120b0a0901550005000102030412", "truncated second link"},
  };
  for (const BadHex& b : bad) {
    auto r = DecodeDagPb(Hex(b.hex));
    ASSERT_FALSE(r.ok()) << b.why;
    EXPECT_TRUE(r.error().code() == Errc::kCorrupt) << b.why << ": " << r.error().ToString();
    EXPECT_NE(r.error().message().find("offset"), std::string::npos)
        << b.why << ": " << r.error().message();
  }
}

TEST(DagPb, ErrorNamesTheOffset) {
  // Unknown field right after a 13-byte link.
  auto r =
      DecodeDagPb(Hex("120b0a09015500050001020304"
                      "2200"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("offset 13"), std::string::npos) << r.error().message();
  // Inside a link: the duplicate Hash starts at byte 13 of the block.
  auto d = DecodeDagPb(Hex("12160a090155000500010203040a09015500050001020304"));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("offset 13"), std::string::npos) << d.error().message();
}

TEST(DagPb, EveryTruncationOfAMultiLinkBlockIsHandled) {
  Bytes full = Hex(kCodecFixtures[2].hex);
  // Boundaries where a prefix is itself a complete message: after link 1, after link 2.
  const size_t ok_at[] = {0, 0x36, 0x36 + 0x39, full.size()};
  for (size_t k = 0; k <= full.size(); ++k) {
    auto r = DecodeDagPb(ByteView(full.data(), k));
    const bool boundary = std::find(std::begin(ok_at), std::end(ok_at), k) != std::end(ok_at);
    EXPECT_EQ(r.ok(), boundary) << "prefix " << k;
  }
}

}  // namespace
}  // namespace ipfly::codec
