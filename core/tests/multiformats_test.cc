// Varint, multibase, multihash, CID and Block: spec vectors from notes/ipfs.md A1 and the
// multiformats test suites.
#include <gtest/gtest.h>

#include "core/base/bytes.h"
#include "core/block.h"
#include "core/multiformats/cid.h"
#include "core/multiformats/multibase.h"
#include "core/multiformats/multihash.h"
#include "core/multiformats/varint.h"
#include "core/tests/test_util.h"

namespace ipfly::mf {
namespace {

TEST(Varint, RoundTripsAndIsMinimal) {
  for (uint64_t v :
       std::initializer_list<uint64_t>{0ull, 1ull, 127ull, 128ull, 255ull, 300ull, 16383ull,
                                       16384ull, (1ull << 35) + 7, kMaxVarintValue}) {
    Bytes b;
    AppendVarint(b, v);
    EXPECT_EQ(b.size(), VarintSize(v));
    size_t n = 0;
    auto r = DecodeVarint(b, &n);
    ASSERT_TRUE(r.ok()) << v;
    EXPECT_EQ(*r, v);
    EXPECT_EQ(n, b.size());
  }
  Bytes one;
  AppendVarint(one, 300);
  EXPECT_EQ(HexEncode(one), "ac02");
}

TEST(Varint, RejectsBadEncodings) {
  size_t n = 0;
  EXPECT_EQ(DecodeVarint(Hex("8100"), &n).error().code(), Errc::kCorrupt);  // non-minimal 1
  EXPECT_EQ(DecodeVarint(Hex("80"), &n).error().code(), Errc::kCorrupt);    // truncated
  EXPECT_EQ(DecodeVarint(Bytes{}, &n).error().code(), Errc::kCorrupt);      // empty
  // 10 bytes: longer than 9.
  EXPECT_EQ(DecodeVarint(Hex("ffffffffffffffffff01"), &n).error().code(), Errc::kCorrupt);
  // 9 bytes is the max: 2^63 - 1.
  auto r = DecodeVarint(Hex("ffffffffffffffff7f"), &n);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, kMaxVarintValue);
  EXPECT_TRUE(DecodeVarint(Hex("00"), &n).ok());
}

TEST(Multibase, SpecVectors) {
  auto yes = AsBytes("yes mani !");
  EXPECT_EQ(MultibaseEncode(Multibase::kBase32, yes), "bpfsxgidnmfxgsibb");
  EXPECT_EQ(MultibaseEncode(Multibase::kBase58btc, yes), "z7paNL19xttacUY");
  Bytes lead{0};
  lead.insert(lead.end(), yes.begin(), yes.end());
  EXPECT_EQ(MultibaseEncode(Multibase::kBase32, lead), "bab4wk4zanvqw42jaee");
  EXPECT_EQ(MultibaseEncode(Multibase::kBase58btc, lead), "z17paNL19xttacUY");
  EXPECT_EQ(MultibaseEncode(Multibase::kBase16, yes), "f796573206d616e692021");
  for (auto s : {"bpfsxgidnmfxgsibb", "BPFSXGIDNMFXGSIBB", "z7paNL19xttacUY",
                 "f796573206d616e692021", "F796573206D616E692021"}) {
    auto r = MultibaseDecode(s);
    ASSERT_TRUE(r.ok()) << s << ": " << r.error().ToString();
    EXPECT_EQ(AsString(*r), "yes mani !") << s;
  }
  // base36 round trip, case-insensitive.
  auto k = MultibaseEncode(Multibase::kBase36, lead);
  EXPECT_EQ(k[0], 'k');
  auto back = MultibaseDecode(k);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, lead);
  std::string upper = k;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto back2 = MultibaseDecode(upper);
  ASSERT_TRUE(back2.ok());
  EXPECT_EQ(*back2, lead);
}

TEST(Multibase, RejectsJunk) {
  EXPECT_FALSE(MultibaseDecode("").ok());
  EXPECT_EQ(MultibaseDecode("xabc").error().code(), Errc::kUnsupported);
  EXPECT_FALSE(MultibaseDecode("b0").ok());     // '0' not in base32
  EXPECT_FALSE(MultibaseDecode("z0OIl").ok());  // not in base58 alphabet
  EXPECT_FALSE(MultibaseDecode("fabc").ok());   // odd hex
  EXPECT_FALSE(MultibaseDecode("bb").ok());     // 1 char: impossible length
}

TEST(Multihash, Sha256AndIdentity) {
  auto mh = Multihash::Sha256Of(AsBytes("hello world\n"));
  EXPECT_EQ(mh.bytes().size(), 34u);
  EXPECT_EQ(mh.bytes()[0], 0x12);
  EXPECT_EQ(mh.bytes()[1], 0x20);
  EXPECT_TRUE(mh.Verify(AsBytes("hello world\n")).ok());
  auto bad = mh.Verify(AsBytes("hello world"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kCorrupt);
  EXPECT_NE(bad.error().message().find("mismatch"), std::string::npos);

  auto id = Multihash::Identity(AsBytes("abc"));
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(id->Verify(AsBytes("abc")).ok());
  EXPECT_FALSE(id->Verify(AsBytes("abd")).ok());
  EXPECT_EQ(Multihash::Identity(Bytes(129, 1)).error().code(), Errc::kTooLarge);
}

TEST(Multihash, RejectsUnsupportedAndMalformed) {
  EXPECT_EQ(Multihash::FromBytes(Hex("1340" + std::string(128, 'a'))).error().code(),
            Errc::kUnsupported);  // sha2-512
  EXPECT_EQ(Multihash::FromBytes(Hex("1210" + std::string(32, 'a'))).error().code(),
            Errc::kCorrupt);  // sha2-256 with 16-byte digest
  EXPECT_EQ(Multihash::FromBytes(Hex("1220aabb")).error().code(), Errc::kCorrupt);  // truncated
  EXPECT_EQ(Multihash::FromBytes(Hex("1220" + std::string(64, 'a') + "00")).error().code(),
            Errc::kCorrupt);  // trailing byte
}

struct CidVector {
  const char* hex_block;
  const char* v0;
  const char* v1;
};

TEST(Cid, DagPbVectors) {
  const CidVector vectors[] = {
      {"0a0408021800", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
       "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"},
      {"0a020801", "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
       "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"},
      {"", "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n",
       "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
  };
  for (const auto& v : vectors) {
    auto block = Block::Make(kCodecDagPb, Hex(v.hex_block), 0);
    ASSERT_TRUE(block.ok());
    EXPECT_EQ(block->cid().ToString(), v.v0);
    EXPECT_EQ(block->cid().ToV1().ToString(), v.v1);
    auto p0 = Cid::Parse(v.v0);
    ASSERT_TRUE(p0.ok());
    EXPECT_EQ(p0->version(), 0);
    EXPECT_EQ(*p0, block->cid());
    auto p1 = Cid::Parse(v.v1);
    ASSERT_TRUE(p1.ok());
    EXPECT_EQ(p1->version(), 1);
    EXPECT_EQ(p1->codec(), kCodecDagPb);
    EXPECT_EQ(p1->multihash(), p0->multihash());
    auto back = p1->ToV0();
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->ToString(), v.v0);
  }
}

TEST(Cid, RawVectors) {
  auto b = Block::Make(kCodecRaw, ToBytes("hello world\n"));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->cid().ToString(), "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4");
  auto b2 = Block::Make(kCodecRaw, ToBytes("hello world"));
  EXPECT_EQ(b2->cid().ToString(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
  auto e = Block::Make(kCodecRaw, Bytes{});
  EXPECT_EQ(e->cid().ToString(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
  EXPECT_FALSE(b->cid().ToV0().ok());  // raw has no v0 form

  auto id = Cid::Parse("bafkqaaa");
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  EXPECT_TRUE(id->is_identity());
  EXPECT_EQ(id->codec(), kCodecRaw);
  EXPECT_TRUE(id->multihash().digest().empty());
  EXPECT_EQ(id->ToString(), "bafkqaaa");
}

TEST(Cid, OtherBasesRoundTrip) {
  auto c = Cid::Parse("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4");
  ASSERT_TRUE(c.ok());
  for (auto base : {Multibase::kBase58btc, Multibase::kBase16, Multibase::kBase36}) {
    auto s = c->ToString(base);
    auto back = Cid::Parse(s);
    ASSERT_TRUE(back.ok()) << s;
    EXPECT_EQ(*back, *c);
  }
  // Upper-case base32 is accepted.
  auto up = Cid::Parse("BAFKREIFJJCIE6LYPI6NY7AMXNFFTAGCLBUXNDQONFIPMB64F2KM2DEVEI4");
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(*up, *c);
}

TEST(Cid, RejectsMalformed) {
  EXPECT_FALSE(Cid::Parse("").ok());
  EXPECT_FALSE(Cid::Parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ").ok());   // 45 chars
  EXPECT_FALSE(Cid::Parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0").ok());  // '0'
  // A v0 multihash behind a multibase prefix is an error, not a "CIDv18".
  auto v0 = Cid::Parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
  auto prefixed = MultibaseEncode(Multibase::kBase32, v0->ToBytes());
  auto r = Cid::Parse(prefixed);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("v0"), std::string::npos);
  // Unknown codec (0x90 = eth-block).
  Bytes b{0x01, 0x90, 0x01};
  auto mh = Multihash::Sha256Of(AsBytes("x"));
  b.insert(b.end(), mh.bytes().begin(), mh.bytes().end());
  EXPECT_EQ(Cid::FromBytes(b).error().code(), Errc::kUnsupported);
  // Version 2 is reserved; version 0x22 is junk.
  EXPECT_EQ(Cid::FromBytes(Hex("0255")).error().code(), Errc::kUnsupported);
  EXPECT_EQ(Cid::FromBytes(Hex("2255")).error().code(), Errc::kCorrupt);
  // Trailing bytes.
  auto good = Cid::Parse("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")->ToBytes();
  good.push_back(0);
  EXPECT_EQ(Cid::FromBytes(good).error().code(), Errc::kCorrupt);
  // Read() reports the consumed length for streams.
  good.pop_back();
  good.push_back(0xaa);
  size_t n = 0;
  auto rd = Cid::Read(good, &n);
  ASSERT_TRUE(rd.ok());
  EXPECT_EQ(n, good.size() - 1);
}

TEST(Block, VerifyRejectsWrongBytesAndOversize) {
  auto cid = Cid::Parse("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4");
  EXPECT_TRUE(Block::Verify(*cid, ToBytes("hello world\n")).ok());
  auto bad = Block::Verify(*cid, ToBytes("hello world!"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kCorrupt);
  EXPECT_NE(bad.error().message().find(cid->ToString()), std::string::npos);
  EXPECT_EQ(Block::Verify(*cid, Bytes(kMaxBlockSize + 1, 0)).error().code(), Errc::kTooLarge);
  auto id = Cid::Parse("bafkqaaa");
  EXPECT_TRUE(Block::Verify(*id, Bytes{}).ok());
}

}  // namespace
}  // namespace ipfly::mf
