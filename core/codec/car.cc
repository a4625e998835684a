#include "core/codec/car.h"

#include <algorithm>
#include <string>

#include "core/multiformats/varint.h"

namespace ipfly::codec {
namespace {

constexpr size_t kMaxHeaderLen = 1 << 20;
// A section is CID + block; CIDs we accept are at most a few varints plus a 128-byte identity
// digest, so 256 bytes of slack is generous.
constexpr uint64_t kMaxSectionLen = kMaxBlockSize + 256;
constexpr size_t kPragmaLen = 11;
constexpr size_t kV2HeaderLen = 40;
constexpr uint64_t kCidTag = 42;

std::string At(uint64_t off) { return " at offset " + std::to_string(off); }

// --- A tiny reader for the fixed shape of a CAR header in dag-cbor. ---------------------------

class CborReader {
 public:
  explicit CborReader(ByteView in) : in_(in) {}
  bool done() const { return pos_ == in_.size(); }
  size_t pos() const { return pos_; }

  // Reads an item head: major type and argument. Indefinite lengths, floats and simple values
  // (additional info 28..31) never occur in a CAR header and are rejected.
  Status ReadHead(int* major, uint64_t* arg) {
    if (pos_ >= in_.size()) return Corrupt("CAR header: truncated CBOR");
    const uint8_t ib = in_[pos_++];
    *major = ib >> 5;
    const uint8_t ai = ib & 31;
    if (ai < 24) {
      *arg = ai;
      return OkStatus();
    }
    if (ai > 27) return Corrupt("CAR header: unsupported CBOR item 0x" + HexEncode({&ib, 1}));
    const size_t n = size_t{1} << (ai - 24);
    if (in_.size() - pos_ < n) return Corrupt("CAR header: truncated CBOR");
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | in_[pos_++];
    *arg = v;
    return OkStatus();
  }

  Result<ByteView> ReadPayload(uint64_t len) {
    if (len > in_.size() - pos_) return Corrupt("CAR header: CBOR string runs past the end");
    ByteView v = in_.subspan(pos_, static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return v;
  }

 private:
  ByteView in_;
  size_t pos_ = 0;
};

struct ParsedHeader {
  uint64_t version = 0;
  bool has_roots = false;
  std::vector<mf::Cid> roots;
};

Result<ParsedHeader> ParseHeader(ByteView h) {
  CborReader r(h);
  ParsedHeader out;
  bool has_version = false;
  int major = 0;
  uint64_t n = 0;
  IPFLY_RETURN_IF_ERROR(r.ReadHead(&major, &n));
  if (major != 5 || n == 0 || n > 2) return Corrupt("CAR header: not a map of 1 or 2 entries");
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t klen = 0;
    IPFLY_RETURN_IF_ERROR(r.ReadHead(&major, &klen));
    if (major != 3) return Corrupt("CAR header: map key is not a text string");
    std::string_view key = AsString(IPFLY_TRY(r.ReadPayload(klen)));
    if (key == "version") {
      if (has_version) return Corrupt("CAR header: duplicate \"version\"");
      IPFLY_RETURN_IF_ERROR(r.ReadHead(&major, &out.version));
      if (major != 0) return Corrupt("CAR header: \"version\" is not an unsigned integer");
      has_version = true;
    } else if (key == "roots") {
      if (out.has_roots) return Corrupt("CAR header: duplicate \"roots\"");
      uint64_t count = 0;
      IPFLY_RETURN_IF_ERROR(r.ReadHead(&major, &count));
      if (major != 4) return Corrupt("CAR header: \"roots\" is not an array");
      // Each root takes at least 3 bytes, which bounds the loop by the header size.
      if (count > h.size()) return Corrupt("CAR header: too many roots");
      for (uint64_t j = 0; j < count; ++j) {
        uint64_t tag = 0, blen = 0;
        IPFLY_RETURN_IF_ERROR(r.ReadHead(&major, &tag));
        if (major != 6 || tag != kCidTag) return Corrupt("CAR header: root is not a tag-42 CID");
        IPFLY_RETURN_IF_ERROR(r.ReadHead(&major, &blen));
        if (major != 2) return Corrupt("CAR header: CID is not a byte string");
        ByteView b = IPFLY_TRY(r.ReadPayload(blen));
        if (b.empty() || b[0] != 0x00) {
          return Corrupt("CAR header: CID lacks the 0x00 multibase prefix");
        }
        auto cid = mf::Cid::FromBytes(b.subspan(1));
        if (!cid.ok()) return std::move(cid).error().With("CAR header root");
        out.roots.push_back(std::move(cid).value());
      }
      out.has_roots = true;
    } else {
      return Corrupt("CAR header: unexpected key \"" + std::string(key) + "\"");
    }
  }
  if (!r.done()) return Corrupt("CAR header: trailing bytes after the header map");
  if (!has_version) return Corrupt("CAR header: missing \"version\"");
  return out;
}

uint64_t LoadU64Le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

// --- CarParser ----------------------------------------------------------------------------------

struct CarParser::Impl {
  enum class State {
    kHeaderLen,       // outer varint: CARv1 header length, or the CARv2 pragma's
    kHeader,          // outer header bytes
    kV2Header,        // 40-byte CARv2 header
    kV2Skip,          // padding up to data_offset
    kInnerHeaderLen,  // CARv2 payload: CARv1 header length
    kInnerHeader,
    kSectionLen,
    kSection,
    kTrailer,  // CARv2: after the payload (padding, index): ignored
  };

  HeaderFn on_header;
  BlockFn on_block;
  State state = State::kHeaderLen;
  Bytes buf;             // the partial varint or unit being assembled (at most one section)
  uint64_t need = 0;     // length of the fixed-size unit being read
  uint64_t pos = 0;      // absolute offset of the next input byte
  uint64_t unit_at = 0;  // absolute offset where the current unit started
  bool v2 = false;
  bool header_seen = false;
  uint64_t payload_left = 0;
  uint64_t skip_left = 0;
  uint64_t data_size = 0;
  uint64_t blocks = 0;
  std::optional<Error> failed;

  bool InPayload() const {
    return v2 && (state == State::kInnerHeaderLen || state == State::kInnerHeader ||
                  state == State::kSectionLen || state == State::kSection);
  }
  bool IsVarintState() const {
    return state == State::kHeaderLen || state == State::kInnerHeaderLen ||
           state == State::kSectionLen;
  }

  void Consume(size_t n) {
    pos += n;
    if (InPayload()) payload_left -= n;
  }

  std::string Where() const {
    switch (state) {
      case State::kHeaderLen:
      case State::kHeader:
      case State::kInnerHeaderLen:
      case State::kInnerHeader:
        return "the header";
      case State::kV2Header:
      case State::kV2Skip:
        return "the CARv2 header";
      default:
        return "a section";
    }
  }

  Status OnVarint(uint64_t v) {
    switch (state) {
      case State::kHeaderLen:
      case State::kInnerHeaderLen:
        if (v == 0 || v > kMaxHeaderLen) {
          return Corrupt("CAR: header length " + std::to_string(v) + " out of range" + At(unit_at));
        }
        state = state == State::kHeaderLen ? State::kHeader : State::kInnerHeader;
        break;
      case State::kSectionLen:
        if (v == 0) return Corrupt("CAR: zero-length section" + At(unit_at));
        if (v > kMaxSectionLen) {
          return TooLarge("CAR: section of " + std::to_string(v) + " bytes" + At(unit_at) +
                          " exceeds the block size limit");
        }
        state = State::kSection;
        break;
      default:
        return Internal("CAR: varint in unexpected state");
    }
    need = v;
    unit_at = pos;
    return OkStatus();
  }

  Status OnUnit(ByteView u) {
    switch (state) {
      case State::kHeader: {
        auto h = ParseHeader(u);
        if (!h.ok()) return std::move(h).error().With("at offset " + std::to_string(unit_at));
        if (h->version == 2 && !h->has_roots) {
          if (unit_at != 1 || u.size() != kPragmaLen - 1) {
            return Corrupt("CAR: malformed CARv2 pragma");
          }
          v2 = true;
          state = State::kV2Header;
          need = kV2HeaderLen;
          unit_at = pos;
          return OkStatus();
        }
        if (h->version != 1) {
          return Unsupported("CAR: version " + std::to_string(h->version) + " not supported");
        }
        if (!h->has_roots) return Corrupt("CAR: CARv1 header without \"roots\"");
        header_seen = true;
        state = State::kSectionLen;
        unit_at = pos;
        return on_header(CarHeader{1, std::move(h->roots)});
      }
      case State::kV2Header: {
        // 16 bytes characteristics, then data_offset, data_size, index_offset (u64 LE).
        const uint64_t data_offset = LoadU64Le(u.data() + 16);
        data_size = LoadU64Le(u.data() + 24);
        const uint64_t header_end = kPragmaLen + kV2HeaderLen;
        if (data_offset < header_end || data_size > UINT64_MAX - data_offset) {
          return Corrupt("CARv2: data_offset " + std::to_string(data_offset) + " / data_size " +
                         std::to_string(data_size) + " out of range");
        }
        skip_left = data_offset - header_end;
        payload_left = data_size;
        state = skip_left ? State::kV2Skip : State::kInnerHeaderLen;
        unit_at = pos;
        return OkStatus();
      }
      case State::kInnerHeader: {
        auto h = ParseHeader(u);
        if (!h.ok())
          return std::move(h).error().With("CARv2 payload at offset " + std::to_string(unit_at));
        if (h->version != 1 || !h->has_roots) {
          return Corrupt("CARv2: payload header is not a CARv1 header");
        }
        header_seen = true;
        state = State::kSectionLen;
        unit_at = pos;
        return on_header(CarHeader{2, std::move(h->roots)});
      }
      case State::kSection: {
        const uint64_t section_at = unit_at;
        size_t consumed = 0;
        auto cid = mf::Cid::Read(u, &consumed);
        if (!cid.ok()) {
          return std::move(cid).error().With("CAR section at offset " + std::to_string(section_at));
        }
        ByteView data = u.subspan(consumed);
        if (data.size() > kMaxBlockSize) {
          return TooLarge("CAR: block of " + std::to_string(data.size()) + " bytes" +
                          At(section_at) + " exceeds " + std::to_string(kMaxBlockSize));
        }
        state = State::kSectionLen;
        unit_at = pos;
        ++blocks;
        return on_block(std::move(cid).value(), Bytes(data.begin(), data.end()));
      }
      default:
        return Internal("CAR: unit in unexpected state");
    }
  }

  Status Step(ByteView& chunk) {
    // Inside a CARv2 payload never look past its end.
    const size_t avail = InPayload()
                             ? static_cast<size_t>(std::min<uint64_t>(chunk.size(), payload_left))
                             : chunk.size();
    if (state == State::kTrailer) {
      Consume(chunk.size());
      chunk = {};
      return OkStatus();
    }
    if (state == State::kV2Skip) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(avail, skip_left));
      Consume(n);
      chunk = chunk.subspan(n);
      skip_left -= n;
      if (skip_left == 0) {
        state = State::kInnerHeaderLen;
        unit_at = pos;
      }
      return OkStatus();
    }
    if (IsVarintState()) {
      if (buf.empty()) unit_at = pos;
      size_t i = 0;
      while (i < avail) {
        const uint8_t b = chunk[i++];
        buf.push_back(b);
        if (!(b & 0x80)) break;
        if (buf.size() >= mf::kMaxVarintBytes) {
          return Corrupt("CAR: length varint longer than 9 bytes" + At(unit_at));
        }
      }
      Consume(i);
      chunk = chunk.subspan(i);
      if (buf.empty() || (buf.back() & 0x80)) return OkStatus();  // need more bytes
      size_t used = 0;
      auto v = mf::DecodeVarint(buf, &used);
      if (!v.ok()) return std::move(v).error().With("CAR length" + At(unit_at));
      buf.clear();
      return OnVarint(*v);
    }
    // Fixed-size unit. Fast path: the whole unit is in this chunk and nothing is buffered.
    if (buf.empty() && avail >= need) {
      ByteView u = chunk.first(static_cast<size_t>(need));
      Consume(u.size());
      chunk = chunk.subspan(u.size());
      return OnUnit(u);
    }
    const size_t n = static_cast<size_t>(std::min<uint64_t>(avail, need - buf.size()));
    if (buf.empty()) buf.reserve(static_cast<size_t>(need));
    buf.insert(buf.end(), chunk.begin(), chunk.begin() + n);
    Consume(n);
    chunk = chunk.subspan(n);
    if (buf.size() < need) return OkStatus();
    Bytes unit = std::move(buf);
    buf = Bytes();
    return OnUnit(unit);
  }

  Status CheckPayloadEnd() {
    if (!InPayload() || payload_left != 0) return OkStatus();
    if (state == State::kSectionLen && buf.empty()) {
      state = State::kTrailer;
      return OkStatus();
    }
    return Corrupt("CARv2: data payload (" + std::to_string(data_size) + " bytes) ends inside " +
                   Where() + At(pos));
  }

  Status Feed(ByteView chunk) {
    for (;;) {
      IPFLY_RETURN_IF_ERROR(CheckPayloadEnd());
      if (chunk.empty()) return OkStatus();
      IPFLY_RETURN_IF_ERROR(Step(chunk));
    }
  }

  Status Finish() {
    IPFLY_RETURN_IF_ERROR(CheckPayloadEnd());
    if (state == State::kTrailer) return OkStatus();
    if (!v2 && state == State::kSectionLen && buf.empty() && header_seen) return OkStatus();
    if (pos == 0) return Corrupt("truncated CAR: empty input");
    return Corrupt("truncated CAR: input ended inside " + Where() + " that started" + At(unit_at) +
                   " (" + std::to_string(pos) + " bytes read)");
  }
};

CarParser::CarParser(HeaderFn on_header, BlockFn on_block) : impl_(std::make_unique<Impl>()) {
  impl_->on_header = std::move(on_header);
  impl_->on_block = std::move(on_block);
}

CarParser::~CarParser() = default;

Status CarParser::Feed(ByteView chunk) {
  if (impl_->failed) return *impl_->failed;
  Status s = impl_->Feed(chunk);
  if (!s.ok()) impl_->failed = s.error();
  return s;
}

Status CarParser::Finish() {
  if (impl_->failed) return *impl_->failed;
  Status s = impl_->Finish();
  if (!s.ok()) impl_->failed = s.error();
  return s;
}

uint64_t CarParser::blocks_seen() const { return impl_->blocks; }

// --- Writing ------------------------------------------------------------------------------------

namespace {

void AppendCborHead(Bytes& out, int major, uint64_t v) {
  const uint8_t m = static_cast<uint8_t>(major << 5);
  if (v < 24) {
    out.push_back(m | static_cast<uint8_t>(v));
    return;
  }
  int n;
  uint8_t ai;
  if (v <= 0xff) {
    n = 1, ai = 24;
  } else if (v <= 0xffff) {
    n = 2, ai = 25;
  } else if (v <= 0xffffffff) {
    n = 4, ai = 26;
  } else {
    n = 8, ai = 27;
  }
  out.push_back(m | ai);
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void AppendCborText(Bytes& out, std::string_view s) {
  AppendCborHead(out, 3, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

Bytes EncodeCarV1Header(const std::vector<mf::Cid>& roots) {
  Bytes cbor;
  // dag-cbor sorts map keys length-first: "roots" (5) before "version" (7).
  AppendCborHead(cbor, 5, 2);
  AppendCborText(cbor, "roots");
  AppendCborHead(cbor, 4, roots.size());
  for (const mf::Cid& c : roots) {
    Bytes b = c.ToBytes();
    AppendCborHead(cbor, 6, kCidTag);
    AppendCborHead(cbor, 2, b.size() + 1);
    cbor.push_back(0x00);  // identity multibase prefix, mandatory in dag-cbor links
    cbor.insert(cbor.end(), b.begin(), b.end());
  }
  AppendCborText(cbor, "version");
  AppendCborHead(cbor, 0, 1);

  Bytes out;
  out.reserve(cbor.size() + mf::kMaxVarintBytes);
  mf::AppendVarint(out, cbor.size());
  out.insert(out.end(), cbor.begin(), cbor.end());
  return out;
}

Bytes EncodeCarSection(const mf::Cid& cid, ByteView data) {
  Bytes c = cid.ToBytes();
  Bytes out;
  out.reserve(mf::kMaxVarintBytes + c.size() + data.size());
  mf::AppendVarint(out, c.size() + data.size());
  out.insert(out.end(), c.begin(), c.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Status CarV1Writer::WriteHeader(const std::vector<mf::Cid>& roots) {
  std::lock_guard<std::mutex> lock(mu_);
  return write_(EncodeCarV1Header(roots));
}

Status CarV1Writer::Put(const Block& block) {
  // Encode outside the lock; the lock only keeps sections from interleaving.
  Bytes section = EncodeCarSection(block.cid(), block.data());
  std::lock_guard<std::mutex> lock(mu_);
  return write_(section);
}

}  // namespace ipfly::codec
