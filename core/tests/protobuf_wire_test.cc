// Protobuf wire helpers: varints up to 10 bytes / full uint64, tags, length-delimited fields.
#include "core/codec/protobuf_wire.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "core/tests/test_util.h"

namespace ipfly::codec::pb {
namespace {

TEST(ProtobufWire, VarintRoundTripIncludingFullUint64) {
  const uint64_t values[] = {0,
                             1,
                             127,
                             128,
                             300,
                             16383,
                             16384,
                             (uint64_t{1} << 35) + 7,
                             uint64_t{1} << 63,
                             std::numeric_limits<uint64_t>::max()};
  for (uint64_t v : values) {
    Bytes b;
    AppendVarint(b, v);
    EXPECT_EQ(b.size(), VarintSize(v)) << v;
    Reader r(b);
    auto got = r.ReadVarint();
    ASSERT_TRUE(got.ok()) << v;
    EXPECT_EQ(*got, v);
    EXPECT_TRUE(r.done());
  }
  Bytes max;
  AppendVarint(max, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(HexEncode(max), "ffffffffffffffffff01");
}

TEST(ProtobufWire, VarintRejectsOverflowAndTruncation) {
  for (const char* bad :
       {"ffffffffffffffffff02", "ffffffffffffffffff7f", "ffffffffffffffffffff01", "80", "ff", ""}) {
    Bytes b = Hex(bad);
    Reader r(b);
    auto got = r.ReadVarint();
    ASSERT_FALSE(got.ok()) << bad;
    EXPECT_EQ(got.error().code(), Errc::kCorrupt) << bad;
  }
}

TEST(ProtobufWire, VarintAcceptsNonMinimalLikeProtobuf) {
  Bytes b = Hex("8000");
  Reader r(b);
  auto got = r.ReadVarint();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 0u);
}

TEST(ProtobufWire, Tags) {
  Bytes b = Hex("0a12182015");
  Reader r(b);
  struct Want {
    uint32_t field;
    WireType type;
  } want[] = {{1, WireType::kLen},
              {2, WireType::kLen},
              {3, WireType::kVarint},
              {4, WireType::kVarint},
              {2, WireType::kI32}};
  for (const Want& w : want) {
    auto t = r.ReadTag();
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->field, w.field);
    EXPECT_EQ(t->type, w.type);
  }
  // Field 0, group wire types 3/4 and undefined types 6/7 are all invalid.
  for (const char* bad : {"00", "02", "0b", "0c", "0e", "0f"}) {
    Bytes x = Hex(bad);
    Reader rx(x);
    EXPECT_FALSE(rx.ReadTag().ok()) << bad;
  }
}

TEST(ProtobufWire, LengthDelimitedBoundsAndOffsets) {
  Bytes ok = Hex("03616263");
  Reader r(ok);
  auto v = r.ReadLengthDelimited();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(AsString(*v), "abc");

  Bytes bad = Hex("04616263");
  Reader rb(bad, 100);
  auto e = rb.ReadLengthDelimited();
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("offset 100"), std::string::npos) << e.error().message();
  // A huge length must not overflow the bounds check.
  Bytes huge = Hex("ffffffffffffffffff0100");
  Reader rh(huge);
  EXPECT_FALSE(rh.ReadLengthDelimited().ok());
}

TEST(ProtobufWire, Fixed) {
  Bytes b = Hex("78563412efcdab8967452301");
  Reader r(b);
  EXPECT_EQ(*r.ReadFixed32(), 0x12345678u);
  EXPECT_EQ(*r.ReadFixed64(), 0x0123456789abcdefull);
  EXPECT_FALSE(r.ReadFixed32().ok());
}

TEST(ProtobufWire, Writers) {
  Bytes out;
  AppendVarintField(out, 3, 0);
  AppendBytesField(out, 2, AsBytes(""));
  AppendBytesField(out, 1, AsBytes("hi"));
  AppendFixed32Field(out, 2, 1);
  EXPECT_EQ(HexEncode(out), "180012000a0268691501000000");
  EXPECT_EQ(BytesFieldSize(1, 2), 4u);
  EXPECT_EQ(BytesFieldSize(1, 200), 203u);
  EXPECT_EQ(VarintFieldSize(3, 300), 3u);
}

}  // namespace
}  // namespace ipfly::codec::pb
