// UnixFS Data message: proto2 semantics (explicit filesize 0, unpacked blocksizes), strictness.
#include "core/codec/unixfs_pb.h"

#include <gtest/gtest.h>

#include "core/tests/test_util.h"

namespace ipfly::codec {
namespace {

void ExpectRoundTrip(std::string_view hex) {
  auto d = DecodeUnixfs(Hex(hex));
  ASSERT_TRUE(d.ok()) << hex << ": " << d.error().ToString();
  EXPECT_EQ(HexEncode(EncodeUnixfs(*d)), hex);
}

TEST(Unixfs, KuboEmptyFileKeepsExplicitZeroFilesize) {
  auto d = DecodeUnixfs(Hex("08021800"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->type, UnixfsType::kFile);
  ASSERT_TRUE(d->filesize.has_value());
  EXPECT_EQ(*d->filesize, 0u);
  EXPECT_FALSE(d->data.has_value());
  ExpectRoundTrip("08021800");

  UnixfsData f;
  f.type = UnixfsType::kFile;
  f.filesize = 0;
  EXPECT_EQ(HexEncode(EncodeUnixfs(f)), "08021800");
  f.filesize.reset();
  EXPECT_EQ(HexEncode(EncodeUnixfs(f)), "0802");
}

TEST(Unixfs, DirectoryAndSymlinkAndLeaf) {
  ExpectRoundTrip("0801");
  ExpectRoundTrip("08041203666f6f");
  // dag-pb leaf payload for "hello world": 08 02 12 0b <data> 18 0b.
  auto leaf = DecodeUnixfs(Hex("0802120b68656c6c6f20776f726c64180b"));
  ASSERT_TRUE(leaf.ok());
  EXPECT_EQ(AsString(*leaf->data), "hello world");
  EXPECT_EQ(*leaf->filesize, 11u);
  ExpectRoundTrip("0802120b68656c6c6f20776f726c64180b");
}

TEST(Unixfs, BlocksizesUnpackedOnEncodeAcceptPackedOnDecode) {
  // Kubo internal node: filesize 1026, blocksizes 256 x4 + 2, unpacked.
  ExpectRoundTrip(
      "0802188208208002208002208002208002"
      "2002");
  auto packed = DecodeUnixfs(Hex("0802180a22020505"));
  ASSERT_TRUE(packed.ok()) << packed.error().ToString();
  EXPECT_EQ(packed->blocksizes, (std::vector<uint64_t>{5, 5}));
  EXPECT_EQ(HexEncode(EncodeUnixfs(*packed)), "0802180a20052005");
  // Mixed packed and unpacked entries keep their order.
  auto mixed = DecodeUnixfs(Hex("0802200122020203"));
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->blocksizes, (std::vector<uint64_t>{1, 2, 3}));
  // A truncated packed list is rejected.
  EXPECT_FALSE(DecodeUnixfs(Hex("0802220180")).ok());
}

TEST(Unixfs, ModeAndMtime) {
  UnixfsData d;
  d.type = UnixfsType::kFile;
  d.mode = 0644;
  d.mtime = UnixTime{-5, 999999999};
  Bytes enc = EncodeUnixfs(d);
  auto back = DecodeUnixfs(enc);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(*back->mode, 0644u);
  EXPECT_EQ(back->mtime->seconds, -5);
  EXPECT_EQ(*back->mtime->nanos, 999999999u);
  EXPECT_EQ(EncodeUnixfs(*back), enc);
  ExpectRoundTrip(
      "0802420208"
      "01");  // mtime {Seconds: 1}
  ExpectRoundTrip(
      "08024207080115"
      "01000000");  // nanos = 1
}

TEST(Unixfs, HamtShard) {
  // Type 5, Data = bitfield, hashType 0x22, fanout 256.
  ExpectRoundTrip("0805120201002822308002");
  EXPECT_FALSE(DecodeUnixfs(Hex("080512020100308002")).ok()) << "missing hashType";
  EXPECT_FALSE(DecodeUnixfs(Hex("0805120201002822")).ok()) << "missing fanout";
  EXPECT_FALSE(DecodeUnixfs(Hex("0805120201002821308002")).ok()) << "bad hashType";
}

TEST(Unixfs, Rejects) {
  const BadHex bad[] = {
      {"", "missing Type (empty message)"},
      {"1800", "missing Type"},
      {"0806", "unknown Type 6"},
      {"08020801", "duplicate Type"},
      {"0802180118 02", "duplicate filesize"},
      {"080212001200", "duplicate Data"},
      {"48 00", "unknown field 9"},
      {"0a00", "Type with bytes wire type"},
      {"0802 1a00", "filesize with bytes wire type"},
      {"0802 3880808080 10", "mode above uint32"},
      {"0802 4207 0801 15 00000000", "mtime nanos 0"},
      {"0802 4207 0801 15 00ca9a3b", "mtime nanos 1e9"},
      {"0802 4205 15 01000000", "mtime without Seconds"},
      {"0805 2822 3081 08", "fanout 1025"},
      {"0805 2822 3080 10", "fanout 2048"},
      {"0805 2822 3004", "fanout 4 (not a multiple of 8)"},
      {"0805 2822 3018", "fanout 24 (not a power of two)"},
      {"0805 2822 3000", "fanout 0"},
      {"0802 12", "truncated"},
      // From the UnixFS spec's invalid vectors: dag-pb Data that is not a UnixFS message.
      {"0001020304", "codec fixture Data_some"},
      {"010203", "codec fixture simple_forms_1"},
      {"736f6d652064617461", "codec fixture 'some data'"},
  };
  for (const BadHex& b : bad) {
    std::string h(b.hex);
    std::erase(h, ' ');
    auto r = DecodeUnixfs(Hex(h));
    ASSERT_FALSE(r.ok()) << b.why;
    EXPECT_EQ(r.error().code(), Errc::kCorrupt) << b.why;
  }
}

}  // namespace
}  // namespace ipfly::codec
