// CAR: writer/parser round trips, CARv2, piecewise feeding, truncation, malformed input.
#include "core/codec/car.h"

#include <gtest/gtest.h>

#include <random>

#include "core/multiformats/varint.h"
#include "core/tests/test_util.h"

namespace ipfly::codec {
namespace {

struct Parsed {
  Status status;
  std::optional<CarHeader> header;
  std::vector<std::pair<mf::Cid, Bytes>> blocks;
};

// Feeds `car` in pieces whose sizes come from `piece` (called repeatedly), then calls Finish.
Parsed Parse(ByteView car, const std::function<size_t()>& piece) {
  Parsed out;
  CarParser p(
      [&](const CarHeader& h) {
        EXPECT_FALSE(out.header.has_value()) << "header callback called twice";
        out.header = h;
        return OkStatus();
      },
      [&](mf::Cid cid, Bytes data) {
        out.blocks.emplace_back(std::move(cid), std::move(data));
        return OkStatus();
      });
  size_t off = 0;
  while (off < car.size()) {
    size_t n = std::min(std::max<size_t>(piece(), 1), car.size() - off);
    Status s = p.Feed(car.subspan(off, n));
    if (!s.ok()) {
      out.status = s;
      return out;
    }
    off += n;
  }
  out.status = p.Finish();
  if (out.status.ok()) {
    EXPECT_EQ(p.blocks_seen(), out.blocks.size());
  }
  return out;
}

Parsed ParseWhole(ByteView car) {
  return Parse(car, [&] { return car.size(); });
}

struct Fixture {
  std::vector<Block> blocks;
  Bytes car;
  std::vector<size_t> boundaries;  // offsets where a CARv1 prefix is itself complete
};

Fixture MakeV1() {
  Fixture f;
  f.blocks.push_back(*Block::Make(mf::kCodecRaw, ToBytes("hello world"), 1));
  f.blocks.push_back(*Block::Make(mf::kCodecDagPb, Hex("0a0408021800"), 0));
  f.blocks.push_back(*Block::Make(mf::kCodecDagPb, Hex("0a020801"), 1));
  f.blocks.push_back(*Block::Make(mf::kCodecRaw, Bytes(), 1));  // zero-length block
  Bytes big(300000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31 + 7);
  f.blocks.push_back(*Block::Make(mf::kCodecRaw, big, 1));
  CarV1Writer w([&](ByteView b) {
    f.car.insert(f.car.end(), b.begin(), b.end());
    return OkStatus();
  });
  EXPECT_TRUE(w.WriteHeader({f.blocks[2].cid(), f.blocks[1].cid()}).ok());
  f.boundaries.push_back(f.car.size());
  for (const Block& b : f.blocks) {
    EXPECT_TRUE(w.Put(b).ok());
    f.boundaries.push_back(f.car.size());
  }
  return f;
}

void ExpectSameBlocks(const Parsed& p, const std::vector<Block>& want) {
  ASSERT_EQ(p.blocks.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(p.blocks[i].first, want[i].cid()) << i;
    EXPECT_TRUE(std::equal(p.blocks[i].second.begin(), p.blocks[i].second.end(),
                           want[i].data().begin(), want[i].data().end()))
        << i;
    EXPECT_TRUE(Block::Verify(p.blocks[i].first, p.blocks[i].second).ok()) << i;
  }
}

TEST(Car, HeaderBytesMatchDagCbor) {
  auto root = mf::Cid::Parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
  ASSERT_TRUE(root.ok());
  Bytes h = EncodeCarV1Header({*root});
  const std::string mh = HexEncode(root->ToBytes());
  // varint(56) a2 65"roots" 81 d82a 5823 00 <34-byte v0> 67"version" 01
  EXPECT_EQ(HexEncode(h), "38a265726f6f747381d82a582300" + mh + "6776657273696f6e01");
  Bytes sec = EncodeCarSection(*root, Hex("0a0408021800"));
  EXPECT_EQ(HexEncode(sec), "28" + mh + "0a0408021800");
}

TEST(Car, V1RoundTripWholeAndByteAtATimeAndRandomPieces) {
  Fixture f = MakeV1();
  for (int mode = 0; mode < 3; ++mode) {
    std::mt19937 rng(42 + mode);
    Parsed p = mode == 0   ? ParseWhole(f.car)
               : mode == 1 ? Parse(f.car, [] { return size_t{1}; })
                           : Parse(f.car, [&] { return size_t{rng() % 7000}; });
    ASSERT_TRUE(p.status.ok()) << mode << ": " << p.status.error().ToString();
    ASSERT_TRUE(p.header);
    EXPECT_EQ(p.header->version, 1u);
    ASSERT_EQ(p.header->roots.size(), 2u);
    EXPECT_EQ(p.header->roots[0], f.blocks[2].cid());
    EXPECT_EQ(p.header->roots[1], f.blocks[1].cid());
    ExpectSameBlocks(p, f.blocks);
  }
}

TEST(Car, V1TruncationAtEveryByte) {
  Fixture f = MakeV1();
  // Skip most of the 300 KB block's interior to keep the test fast; check its edges densely.
  const size_t big_start = f.boundaries[4], big_end = f.boundaries[5];
  for (size_t k = 0; k < f.car.size(); ++k) {
    if (k > big_start + 64 && k < big_end - 64 && k % 4096 != 0) continue;
    Parsed p = ParseWhole(ByteView(f.car.data(), k));
    const bool boundary =
        std::find(f.boundaries.begin(), f.boundaries.end(), k) != f.boundaries.end();
    if (boundary) {
      EXPECT_TRUE(p.status.ok()) << k;
    } else {
      ASSERT_FALSE(p.status.ok()) << k;
      EXPECT_EQ(p.status.error().code(), Errc::kCorrupt) << k << p.status.error().ToString();
    }
  }
}

// CARv2 = pragma | 40-byte header | padding | CARv1 payload | padding | index (ignored).
Bytes MakeV2(const Bytes& v1, size_t pad_before, size_t pad_after, Bytes index) {
  Bytes out = Hex("0aa16776657273696f6e02");
  auto put64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  Bytes characteristics(16, 0);
  out.insert(out.end(), characteristics.begin(), characteristics.end());
  const uint64_t data_offset = 11 + 40 + pad_before;
  put64(data_offset);
  put64(v1.size());
  put64(index.empty() ? 0 : data_offset + v1.size() + pad_after);
  out.insert(out.end(), pad_before, 0);
  out.insert(out.end(), v1.begin(), v1.end());
  out.insert(out.end(), pad_after, 0);
  out.insert(out.end(), index.begin(), index.end());
  return out;
}

TEST(Car, V2ParsesPayloadAndIgnoresIndex) {
  Fixture f = MakeV1();
  // The "index" is junk on purpose: the parser must not read past data_size.
  Bytes v2 = MakeV2(f.car, 5, 3, Hex("8008ffffffffdeadbeef"));
  for (int mode = 0; mode < 2; ++mode) {
    Parsed p = mode == 0 ? ParseWhole(v2) : Parse(v2, [] { return size_t{1}; });
    ASSERT_TRUE(p.status.ok()) << p.status.error().ToString();
    ASSERT_TRUE(p.header);
    EXPECT_EQ(p.header->version, 2u);
    EXPECT_EQ(p.header->roots.size(), 2u);
    ExpectSameBlocks(p, f.blocks);
  }
  Bytes v2_nopad = MakeV2(f.car, 0, 0, {});
  Parsed p = ParseWhole(v2_nopad);
  ASSERT_TRUE(p.status.ok()) << p.status.error().ToString();
  EXPECT_EQ(p.blocks.size(), f.blocks.size());
}

TEST(Car, V2TruncationAnywhereBeforePayloadEndIsCorrupt) {
  Fixture f = MakeV1();
  Bytes v2 = MakeV2(f.car, 2, 0, {});
  const size_t payload_end = v2.size();
  const size_t big_start = 53 + f.boundaries[4], big_end = 53 + f.boundaries[5];
  for (size_t k = 0; k < payload_end; ++k) {
    if (k > big_start + 64 && k < big_end - 64 && k % 4096 != 0) continue;
    Parsed p = ParseWhole(ByteView(v2.data(), k));
    ASSERT_FALSE(p.status.ok()) << k;
    EXPECT_EQ(p.status.error().code(), Errc::kCorrupt) << k;
  }
}

TEST(Car, V2PayloadSizeThatSplitsASectionIsCorrupt) {
  Fixture f = MakeV1();
  Bytes v1_cut(f.car.begin(), f.car.begin() + static_cast<long>(f.boundaries[1]) + 3);
  Bytes v2 = MakeV2(v1_cut, 0, 0, {});
  v2.insert(v2.end(), f.car.begin() + static_cast<long>(f.boundaries[1]) + 3, f.car.end());
  Parsed p = ParseWhole(v2);
  ASSERT_FALSE(p.status.ok());
  EXPECT_EQ(p.status.error().code(), Errc::kCorrupt);
}

TEST(Car, RejectsMalformedInput) {
  auto root = *mf::Cid::Parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
  const std::string mh = HexEncode(root.ToBytes());
  auto with_len = [](const std::string& cbor_hex) {
    Bytes c = Hex(cbor_hex);
    Bytes out;
    mf::AppendVarint(out, c.size());
    out.insert(out.end(), c.begin(), c.end());
    return out;
  };
  struct Case {
    Bytes car;
    Errc code;
    const char* why;
  } cases[] = {
      {with_len("a265726f6f747381d82a582300" + mh + "6776657273696f6e03"), Errc::kUnsupported,
       "version 3"},
      {with_len("a16776657273696f6e01"), Errc::kCorrupt, "v1 without roots"},
      {with_len("a265726f6f747381d82a5822" + mh + "6776657273696f6e01"), Errc::kCorrupt,
       "root without 0x00 prefix"},
      {with_len("a265726f6f747381d82b582300" + mh + "6776657273696f6e01"), Errc::kCorrupt,
       "tag 43"},
      {with_len("a365726f6f747380"
                "6776657273696f6e01"
                "6161"
                "01"),
       Errc::kCorrupt, "three keys"},
      {with_len("a265726f6f747380"
                "6776657273696f6e01"
                "00"),
       Errc::kCorrupt, "trailing byte in header"},
      {Hex("00"), Errc::kCorrupt, "zero header length"},
      {Hex("ffffffffffffffffff01"), Errc::kCorrupt, "over-long varint"},
      {Hex("8100"), Errc::kCorrupt, "non-minimal header length"},
  };
  for (auto& c : cases) {
    Parsed p = ParseWhole(c.car);
    ASSERT_FALSE(p.status.ok()) << c.why;
    EXPECT_EQ(p.status.error().code(), c.code) << c.why << ": " << p.status.error().ToString();
  }

  Bytes header = EncodeCarV1Header({root});
  Bytes zero_section = header;
  zero_section.push_back(0x00);
  EXPECT_EQ(ParseWhole(zero_section).status.error().code(), Errc::kCorrupt);

  Bytes too_big = header;
  mf::AppendVarint(too_big, 3 * 1024 * 1024);
  EXPECT_EQ(ParseWhole(too_big).status.error().code(), Errc::kTooLarge);

  Bytes bad_cid = header;
  bad_cid.insert(bad_cid.end(), {0x04, 0x12, 0x20, 0x00, 0x00});
  EXPECT_FALSE(ParseWhole(bad_cid).status.ok());

  // Empty roots list is tolerated (the spec leaves it open).
  Parsed empty_roots = ParseWhole(EncodeCarV1Header({}));
  EXPECT_TRUE(empty_roots.status.ok());
  EXPECT_TRUE(empty_roots.header->roots.empty());

  Parsed nothing = ParseWhole({});
  EXPECT_EQ(nothing.status.error().code(), Errc::kCorrupt);
}

TEST(Car, CallbackErrorStopsAndSticks) {
  Fixture f = MakeV1();
  int calls = 0;
  CarParser p([](const CarHeader&) { return OkStatus(); },
              [&](mf::Cid, Bytes) -> Status {
                ++calls;
                return NotFound("stop here");
              });
  Status s = p.Feed(f.car);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kNotFound);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(p.Feed(Hex("00")).ok());
  EXPECT_FALSE(p.Finish().ok());
}

}  // namespace
}  // namespace ipfly::codec
