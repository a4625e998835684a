// Random access into compressed layer blobs; see compression.h for the contract.
//
// gzip framing (headers, trailers, member boundaries, padding) is parsed here rather than by zlib
// so that one raw-deflate decoder serves both indexing and range reads, checkpoints can sit at
// member starts, and every error carries the compressed offset where it was found.
//
// Span decoder choice (DecompressRange of 4 MiB spans from a checkpoint, one core, see
// layer/tests/compression_test.cc Bench* and notes/bench-compression.md): ISA-L's isal_inflate
// is markedly faster than zlib's inflate on this hardware, and passes the same tests, so it is
// the default; zlib stays selectable (SetInflateEngine) and does all indexing.
#include "layer/compression.h"

#include <isa-l/igzip_lib.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "core/base/log.h"

namespace ipfly::layer {
namespace {

constexpr size_t kWindowSize = 32 * 1024;  // deflate's maximum match distance
constexpr size_t kIndexOutChunk = 128 * 1024;
constexpr size_t kSkipChunk = 64 * 1024;
constexpr uint32_t kZstdMagic = 0xFD2FB528;
constexpr uint32_t kSkippableMask = 0xFFFFFFF0;
constexpr uint32_t kSkippableMagic = 0x184D2A50;
constexpr int kZstdWindowLogMax = 27;
// zlib/ISA-L take 32-bit lengths; larger buffers are fed in slices of this size.
constexpr size_t kMaxSlice = size_t{1} << 30;

// gzip header flags (RFC 1952 2.3.1).
constexpr uint8_t kFhcrc = 0x02;
constexpr uint8_t kFextra = 0x04;
constexpr uint8_t kFname = 0x08;
constexpr uint8_t kFcomment = 0x10;
constexpr uint8_t kFreserved = 0xE0;

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }

std::string At(uint64_t offset) { return " at compressed offset " + std::to_string(offset); }

uint32_t Crc32(uint32_t crc, const uint8_t* p, size_t n) {
  while (n > 0) {
    const size_t k = std::min(n, kMaxSlice);
    crc = static_cast<uint32_t>(crc32(crc, p, static_cast<uInt>(k)));
    p += k;
    n -= k;
  }
  return crc;
}

// Push parser for one gzip member header. Fed any split of the input; stops exactly at the first
// deflate byte. Bytes are checked as they arrive so garbage fails fast, never buffering a name.
class GzipHeaderParser {
 public:
  void Reset() { *this = GzipHeaderParser(); }
  bool done() const { return stage_ == Stage::kDone; }

  // Consumes header bytes from `in` (whose first byte is at compressed offset `base`); returns
  // the count taken, fewer than in.size() only when the header ended.
  Result<size_t> Consume(ByteView in, uint64_t base) {
    size_t i = 0;
    while (i < in.size() && stage_ != Stage::kDone) {
      const uint8_t* p = in.data() + i;
      const size_t rem = in.size() - i;
      switch (stage_) {
        case Stage::kFixed: {
          const size_t n = std::min(rem, 10 - have_);
          memcpy(fixed_ + have_, p, n);
          // Check the magic as soon as it is here so non-gzip input fails at its first byte.
          for (size_t k = have_; k < have_ + n && k < 4; ++k) {
            static constexpr uint8_t kExpect[3] = {0x1f, 0x8b, 8};
            if (k < 3 && fixed_[k] != kExpect[k]) {
              return Corrupt(std::string(k == 2 ? "gzip: compression method is not deflate"
                                                : "gzip: bad header magic") +
                             At(base + i + (k - have_)));
            }
            if (k == 3 && (fixed_[3] & kFreserved) != 0) {
              return Corrupt("gzip: reserved header flags set" + At(base + i + (k - have_)));
            }
          }
          have_ += n;
          i += n;
          if (have_ == 10) {
            flags_ = fixed_[3];
            Crc(fixed_, 10);
            have_ = 0;
            Advance(Stage::kExtraLen);
          }
          break;
        }
        case Stage::kExtraLen: {
          const size_t n = std::min(rem, 2 - have_);
          memcpy(two_ + have_, p, n);
          Crc(p, n);
          have_ += n;
          i += n;
          if (have_ == 2) {
            have_ = 0;
            extra_left_ = Le16(two_);
            Advance(Stage::kExtra);
          }
          break;
        }
        case Stage::kExtra: {
          const size_t n = std::min<size_t>(rem, extra_left_);
          Crc(p, n);
          extra_left_ -= static_cast<uint32_t>(n);
          i += n;
          if (extra_left_ == 0) Advance(Stage::kName);
          break;
        }
        case Stage::kName:
        case Stage::kComment: {
          const void* nul = memchr(p, 0, rem);
          const size_t n = nul ? static_cast<const uint8_t*>(nul) - p + 1 : rem;
          Crc(p, n);
          i += n;
          if (nul) Advance(stage_ == Stage::kName ? Stage::kComment : Stage::kHcrc);
          break;
        }
        case Stage::kHcrc: {
          const size_t n = std::min(rem, 2 - have_);
          memcpy(two_ + have_, p, n);
          have_ += n;
          i += n;
          if (have_ == 2) {
            if (Le16(two_) != (crc_ & 0xFFFF)) {
              return Corrupt("gzip: header CRC16 mismatch" + At(base + i - 2));
            }
            stage_ = Stage::kDone;
          }
          break;
        }
        case Stage::kDone:
          break;
      }
    }
    return i;
  }

 private:
  enum class Stage : uint8_t { kFixed, kExtraLen, kExtra, kName, kComment, kHcrc, kDone };

  void Crc(const uint8_t* p, size_t n) {
    if (flags_ & kFhcrc) crc_ = Crc32(crc_, p, n);
  }
  // Moves to `s` or the first later stage the flags call for.
  void Advance(Stage s) {
    for (;;) {
      if (s == Stage::kExtraLen && !(flags_ & kFextra)) {
        s = Stage::kName;
      } else if (s == Stage::kExtra && extra_left_ == 0) {
        s = Stage::kName;
      } else if (s == Stage::kName && !(flags_ & kFname)) {
        s = Stage::kComment;
      } else if (s == Stage::kComment && !(flags_ & kFcomment)) {
        s = Stage::kHcrc;
      } else if (s == Stage::kHcrc && !(flags_ & kFhcrc)) {
        s = Stage::kDone;
      } else {
        break;
      }
    }
    stage_ = s;
  }

  Stage stage_ = Stage::kFixed;
  uint8_t flags_ = 0;
  uint8_t fixed_[10] = {};
  uint8_t two_[2] = {};
  size_t have_ = 0;
  uint32_t extra_left_ = 0;
  uint32_t crc_ = 0;
};

// A raw-deflate zlib inflate stream (RAII).
class ZInflate {
 public:
  ZInflate() { ok_ = inflateInit2(&s_, -15) == Z_OK; }
  ~ZInflate() {
    if (ok_) inflateEnd(&s_);
  }
  ZInflate(const ZInflate&) = delete;
  ZInflate& operator=(const ZInflate&) = delete;
  bool ok() const { return ok_; }
  z_stream* get() { return &s_; }

 private:
  z_stream s_{};
  bool ok_ = false;
};

struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
using DctxPtr = std::unique_ptr<ZSTD_DCtx, DctxDeleter>;

DctxPtr NewDctx() {
  DctxPtr d(ZSTD_createDCtx());
  if (d) ZSTD_DCtx_setParameter(d.get(), ZSTD_d_windowLogMax, kZstdWindowLogMax);
  return d;
}

std::atomic<InflateEngine> g_engine{InflateEngine::kIsal};

}  // namespace

std::string_view CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kGzip:
      return "gzip";
    case Compression::kZstd:
      return "zstd";
  }
  return "unknown";
}

Compression DetectCompression(ByteView head) {
  if (head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b) return Compression::kGzip;
  if (head.size() >= 4) {
    const uint32_t m = Le32(head.data());
    if (m == kZstdMagic || (m & kSkippableMask) == kSkippableMagic) return Compression::kZstd;
  }
  return Compression::kNone;
}

void SetInflateEngine(InflateEngine e) { g_engine.store(e, std::memory_order_relaxed); }
InflateEngine GetInflateEngine() { return g_engine.load(std::memory_order_relaxed); }

// ---------------------------------------------------------------------------------------------
// Indexing

struct StreamIndexer::Impl {
  Impl(Compression c, IndexerOptions o, OutputFn fn)
      : comp(c), options(o), on_output(std::move(fn)) {}

  Status Feed(ByteView in);
  Status Finish();

  Status Emit(const uint8_t* p, size_t n) {
    out_total += n;
    return on_output ? on_output(ByteView(p, n)) : OkStatus();
  }
  // True if a point at the current uncompressed offset respects `span` (the first is always due).
  bool PointDue() const {
    if (points.empty()) return true;
    const uint64_t last = points.back().uncompressed_offset;
    return out_total > last && out_total - last >= options.span;
  }

  // gzip
  Status FeedGzip(ByteView in);
  Status InflateSome(ByteView* in);
  Status CheckTrailer();
  void StartMember();
  // zstd
  Status FeedZstd(ByteView in);
  Status DecompressSome(ByteView* in);

  const Compression comp;
  const IndexerOptions options;
  OutputFn on_output;
  uint64_t in_total = 0;   // compressed bytes consumed
  uint64_t out_total = 0;  // uncompressed bytes delivered
  uint64_t frames = 0;
  std::vector<AccessPoint> points;
  std::optional<Error> failed;
  bool finished = false;

  // gzip state
  enum class Gz : uint8_t { kHeader, kDeflate, kTrailer, kBetween, kPadding };
  Gz gz = Gz::kHeader;
  GzipHeaderParser header;
  std::unique_ptr<ZInflate> z;
  // Output area: the last kWindowSize bytes before buf_pos are the history a checkpoint needs.
  Bytes buf;
  size_t buf_pos = 0;
  uint32_t member_crc = 0;
  uint64_t member_out = 0;
  uint64_t member_offset = 0;
  uint8_t trailer[8] = {};
  size_t trailer_have = 0;
  // Sparse windows: checkpoints whose first 32 KiB of output are still being collected.
  struct PendingWindow {
    size_t point = 0;   // index into `points`
    int first_bit = 0;  // bit of in[0] where the deflate data starts
    Bytes in;           // compressed bytes from the checkpoint on
    Bytes out;          // uncompressed bytes after it (up to kWindowSize)
  };
  std::vector<PendingWindow> pending_windows;
  uint8_t last_in_byte = 0;  // the last compressed byte inflate consumed
  std::unique_ptr<ZInflate> verify_z;
  void FeedPendingWindows(ByteView consumed, ByteView produced);
  void FinishWindow(PendingWindow& pw);
  void FinishAllWindows() {
    for (auto& pw : pending_windows) FinishWindow(pw);
    pending_windows.clear();
  }

  // zstd state
  enum class Zs : uint8_t { kMagic, kSkipSize, kSkip, kFrame };
  Zs zs = Zs::kMagic;
  uint8_t magic[8] = {};
  size_t magic_have = 0;
  uint64_t skip_left = 0;
  uint64_t frame_offset = 0;
  DctxPtr dctx;
  Bytes zbuf;
};

void StreamIndexer::Impl::StartMember() {
  member_offset = in_total;
  member_crc = 0;
  member_out = 0;
  header.Reset();
  gz = Gz::kHeader;
  if (PointDue()) {
    AccessPoint p;
    p.compressed_bit_offset = in_total * 8;
    p.uncompressed_offset = out_total;
    p.member_start = true;
    points.push_back(std::move(p));
  }
}

Status StreamIndexer::Impl::InflateSome(ByteView* in) {
  z_stream* s = z->get();
  int stalls = 0;
  while (!in->empty()) {
    if (buf_pos == buf.size()) {
      // Keep exactly one window of history so checkpoints can copy it.
      memmove(buf.data(), buf.data() + buf_pos - kWindowSize, kWindowSize);
      buf_pos = kWindowSize;
    }
    const size_t in_n = std::min(in->size(), kMaxSlice);
    const size_t out_n = buf.size() - buf_pos;
    s->next_in = const_cast<Bytef*>(in->data());
    s->avail_in = static_cast<uInt>(in_n);
    s->next_out = buf.data() + buf_pos;
    s->avail_out = static_cast<uInt>(out_n);
    // Z_BLOCK returns at every deflate block boundary, where data_type tells whether a
    // checkpoint can go there and how many bits of the last byte are still unused.
    const uint8_t* in_ptr = in->data();
    const int r = inflate(s, Z_BLOCK);
    const size_t consumed = in_n - s->avail_in;
    const size_t produced = out_n - s->avail_out;
    if (!pending_windows.empty()) {
      FeedPendingWindows(ByteView(in_ptr, consumed), ByteView(buf.data() + buf_pos, produced));
    }
    if (consumed > 0) last_in_byte = in_ptr[consumed - 1];
    in_total += consumed;
    *in = in->subspan(consumed);
    if (produced > 0) {
      member_crc = Crc32(member_crc, buf.data() + buf_pos, produced);
      member_out += produced;
      const uint8_t* p = buf.data() + buf_pos;
      buf_pos += produced;
      IPFLY_RETURN_IF_ERROR(Emit(p, produced));
    }
    if (r == Z_STREAM_END) {
      FinishAllWindows();  // the member ended: nothing after it can reference these windows
      gz = Gz::kTrailer;
      trailer_have = 0;
      return OkStatus();
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      return Corrupt(std::string("gzip: ") + (s->msg ? s->msg : "inflate failed") + At(in_total));
    }
    // Bit 7: stopped at a block boundary; bit 6: in the last block (no boundary follows).
    if ((s->data_type & 0xC0) == 0x80 && PointDue()) {
      AccessPoint p;
      p.compressed_bit_offset = in_total * 8 - (s->data_type & 7);
      p.uncompressed_offset = out_total;
      const size_t w = static_cast<size_t>(std::min<uint64_t>(kWindowSize, member_out));
      p.window.assign(buf.data() + buf_pos - w, buf.data() + buf_pos);
      points.push_back(std::move(p));
      // Spans under 32 KiB would keep several windows collecting input at once (and a stream
      // of tiny deflate blocks would make that quadratic): such indexes keep dense windows.
      if (options.sparse_windows && options.span >= kWindowSize && w > 0) {
        PendingWindow pw;
        pw.point = points.size() - 1;
        const int unused = s->data_type & 7;
        if (unused != 0) {
          pw.first_bit = 8 - unused;
          pw.in.push_back(last_in_byte);
        }
        pending_windows.push_back(std::move(pw));
      }
    }
    if (consumed == 0 && produced == 0 && ++stalls > 2) {
      return Internal("gzip: inflate made no progress" + At(in_total));
    }
    if (consumed || produced) stalls = 0;
  }
  return OkStatus();
}

void StreamIndexer::Impl::FeedPendingWindows(ByteView consumed, ByteView produced) {
  for (size_t i = 0; i < pending_windows.size();) {
    PendingWindow& pw = pending_windows[i];
    pw.in.insert(pw.in.end(), consumed.begin(), consumed.end());
    const size_t take = std::min(produced.size(), kWindowSize - pw.out.size());
    pw.out.insert(pw.out.end(), produced.begin(), produced.begin() + take);
    if (pw.out.size() < kWindowSize) {
      ++i;
      continue;
    }
    FinishWindow(pw);
    pending_windows.erase(pending_windows.begin() + static_cast<ptrdiff_t>(i));
  }
}

// Replaces the point's dense window by a sparse one if, and only if, zlib decompresses the
// collected stretch with the sparse window to exactly the bytes the indexer saw. Any doubt
// (a trace error, a mismatch) keeps the dense window: a bigger index, never a wrong byte.
void StreamIndexer::Impl::FinishWindow(PendingWindow& pw) {
  AccessPoint& point = points[pw.point];
  std::vector<uint8_t> used;
  auto traced = TraceWindowUse(pw.in, pw.first_bit, point.window, pw.out.size(), &used);
  if (!traced.ok() || *traced != pw.out) {
    IPFLY_LOG_DEBUG("gzip index: checkpoint at {} keeps its dense window ({})",
                    point.uncompressed_offset,
                    traced.ok() ? std::string("trace differs") : traced.error().ToString());
    return;
  }
  AccessPoint sparse = point;
  MakeSparseWindow(&sparse, used);
  if (!verify_z) verify_z = std::make_unique<ZInflate>();
  z_stream* s = verify_z->get();
  bool ok = verify_z->ok() && inflateReset(s) == Z_OK;
  ByteView in(pw.in);
  if (ok && pw.first_bit != 0) {
    ok = inflatePrime(s, 8 - pw.first_bit, in[0] >> pw.first_bit) == Z_OK;
    in = in.subspan(1);
  }
  Bytes scratch;
  const ByteView hist = sparse.History(&scratch);
  if (ok && !hist.empty()) {
    ok = inflateSetDictionary(s, hist.data(), static_cast<uInt>(hist.size())) == Z_OK;
  }
  if (ok && !pw.out.empty()) {
    Bytes got(pw.out.size());
    s->next_in = const_cast<Bytef*>(in.data());
    s->avail_in = static_cast<uInt>(in.size());
    s->next_out = got.data();
    s->avail_out = static_cast<uInt>(got.size());
    const int r = inflate(s, Z_SYNC_FLUSH);
    ok = (r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR) && s->avail_out == 0 && got == pw.out;
  }
  if (!ok) {
    IPFLY_LOG_WARN("gzip index: sparse window at {} failed its zlib check; kept dense",
                   point.uncompressed_offset);
    return;
  }
  point = std::move(sparse);
}

Status StreamIndexer::Impl::CheckTrailer() {
  const uint64_t at = in_total - 8;
  if (Le32(trailer) != member_crc) {
    return Corrupt("gzip: CRC32 mismatch in trailer" + At(at) + " (member" + At(member_offset) +
                   ")");
  }
  if (Le32(trailer + 4) != static_cast<uint32_t>(member_out)) {
    return Corrupt("gzip: ISIZE mismatch in trailer" + At(at + 4) + " (member" + At(member_offset) +
                   ")");
  }
  ++frames;
  return OkStatus();
}

Status StreamIndexer::Impl::FeedGzip(ByteView in) {
  if (!z) {
    z = std::make_unique<ZInflate>();
    if (!z->ok()) return Internal("gzip: inflateInit2 failed");
    buf.resize(kWindowSize + kIndexOutChunk);
  }
  while (!in.empty()) {
    switch (gz) {
      case Gz::kHeader: {
        const size_t n = IPFLY_TRY(header.Consume(in, in_total));
        in_total += n;
        in = in.subspan(n);
        if (header.done()) {
          if (inflateReset(z->get()) != Z_OK) return Internal("gzip: inflateReset failed");
          gz = Gz::kDeflate;
        }
        break;
      }
      case Gz::kDeflate:
        IPFLY_RETURN_IF_ERROR(InflateSome(&in));
        break;
      case Gz::kTrailer: {
        const size_t n = std::min(in.size(), 8 - trailer_have);
        memcpy(trailer + trailer_have, in.data(), n);
        trailer_have += n;
        in_total += n;
        in = in.subspan(n);
        if (trailer_have == 8) {
          IPFLY_RETURN_IF_ERROR(CheckTrailer());
          gz = Gz::kBetween;
        }
        break;
      }
      case Gz::kBetween:
        if (in[0] == 0x1f) {
          StartMember();
        } else if (in[0] == 0) {
          gz = Gz::kPadding;
        } else {
          return Corrupt("gzip: trailing garbage after the last member" + At(in_total));
        }
        break;
      case Gz::kPadding: {
        const auto it = std::find_if(in.begin(), in.end(), [](uint8_t b) { return b != 0; });
        if (it != in.end()) {
          return Corrupt("gzip: non-zero byte in the padding after the last member" +
                         At(in_total + (it - in.begin())));
        }
        in_total += in.size();
        in = {};
        break;
      }
    }
  }
  return OkStatus();
}

Status StreamIndexer::Impl::DecompressSome(ByteView* in) {
  for (;;) {
    ZSTD_inBuffer ib{in->data(), in->size(), 0};
    ZSTD_outBuffer ob{zbuf.data(), zbuf.size(), 0};
    const size_t r = ZSTD_decompressStream(dctx.get(), &ob, &ib);
    if (ZSTD_isError(r)) {
      return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(r) + " (frame" + At(frame_offset) +
                     ", input consumed up to offset " + std::to_string(in_total + ib.pos) + ")");
    }
    in_total += ib.pos;
    *in = in->subspan(ib.pos);
    if (ob.pos > 0) IPFLY_RETURN_IF_ERROR(Emit(zbuf.data(), ob.pos));
    if (r == 0) {  // frame complete and flushed; libzstd stops exactly at the frame's end
      zs = Zs::kMagic;
      magic_have = 0;
      return OkStatus();
    }
    if (in->empty() && ob.pos < ob.size) return OkStatus();  // needs more input
  }
}

Status StreamIndexer::Impl::FeedZstd(ByteView in) {
  if (!dctx) {
    dctx = NewDctx();
    if (!dctx) return Internal("zstd: ZSTD_createDCtx failed");
    zbuf.resize(ZSTD_DStreamOutSize());
  }
  while (!in.empty()) {
    switch (zs) {
      case Zs::kMagic: {
        if (magic_have == 0) frame_offset = in_total;
        const size_t n = std::min(in.size(), 4 - magic_have);
        memcpy(magic + magic_have, in.data(), n);
        magic_have += n;
        in_total += n;
        in = in.subspan(n);
        if (magic_have < 4) break;
        const uint32_t m = Le32(magic);
        if ((m & kSkippableMask) == kSkippableMagic) {
          zs = Zs::kSkipSize;
        } else if (m == kZstdMagic) {
          if (PointDue()) {
            AccessPoint p;
            p.compressed_bit_offset = frame_offset * 8;
            p.uncompressed_offset = out_total;
            points.push_back(std::move(p));
          }
          ++frames;
          ZSTD_DCtx_reset(dctx.get(), ZSTD_reset_session_only);
          ByteView mv(magic, 4);
          const uint64_t saved = in_total;
          zs = Zs::kFrame;
          IPFLY_RETURN_IF_ERROR(DecompressSome(&mv));
          in_total = saved;  // the magic was already counted
        } else {
          char hex[16];
          snprintf(hex, sizeof(hex), "%08x", m);
          return Corrupt(std::string("zstd: not a zstd frame (magic 0x") + hex + ")" +
                         At(frame_offset));
        }
        break;
      }
      case Zs::kSkipSize: {
        const size_t n = std::min(in.size(), 8 - magic_have);
        memcpy(magic + magic_have, in.data(), n);
        magic_have += n;
        in_total += n;
        in = in.subspan(n);
        if (magic_have == 8) {
          skip_left = Le32(magic + 4);
          zs = skip_left ? Zs::kSkip : Zs::kMagic;
          magic_have = 0;
        }
        break;
      }
      case Zs::kSkip: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(in.size(), skip_left));
        skip_left -= n;
        in_total += n;
        in = in.subspan(n);
        if (skip_left == 0) zs = Zs::kMagic;
        break;
      }
      case Zs::kFrame:
        IPFLY_RETURN_IF_ERROR(DecompressSome(&in));
        break;
    }
  }
  return OkStatus();
}

Status StreamIndexer::Impl::Feed(ByteView in) {
  if (failed) return *failed;
  if (finished) return InvalidArgument("StreamIndexer: Feed after Finish");
  Status s;
  switch (comp) {
    case Compression::kNone:
      in_total += in.size();
      s = in.empty() ? OkStatus() : Emit(in.data(), in.size());
      break;
    case Compression::kGzip:
      s = FeedGzip(in);
      break;
    case Compression::kZstd:
      s = FeedZstd(in);
      break;
    default:
      s = InvalidArgument("unknown compression");
  }
  if (!s.ok()) failed = s.error();
  return s;
}

Status StreamIndexer::Impl::Finish() {
  if (failed) return *failed;
  if (finished) return OkStatus();
  Status s;
  switch (comp) {
    case Compression::kNone:
      break;
    case Compression::kGzip:
      if (gz == Gz::kBetween || gz == Gz::kPadding) break;
      if (in_total == 0) {
        s = Corrupt("gzip: empty stream");
      } else if (gz == Gz::kHeader) {
        s = Corrupt("gzip: truncated member header" + At(in_total));
      } else {
        s = Corrupt("gzip: stream truncated" + At(in_total) + " (member" + At(member_offset) + ")");
      }
      break;
    case Compression::kZstd:
      if (in_total == 0) {
        s = Corrupt("zstd: empty stream");
      } else if (zs != Zs::kMagic || magic_have != 0) {
        s = Corrupt("zstd: stream truncated" + At(in_total) + " (frame" + At(frame_offset) + ")");
      }
      break;
  }
  if (!s.ok()) {
    failed = s.error();
    return s;
  }
  FinishAllWindows();
  if (points.empty()) points.push_back(AccessPoint{});  // zstd with no data frame
  finished = true;
  return OkStatus();
}

StreamIndexer::StreamIndexer(Compression c, IndexerOptions options, OutputFn on_output)
    : impl_(std::make_unique<Impl>(c, options, std::move(on_output))) {
  // gzip and none start with a point at 0; zstd adds it at its first data frame, whose
  // compressed offset is only known then (skippable frames may come first).
  if (c == Compression::kGzip) {
    impl_->StartMember();
  } else if (c == Compression::kNone) {
    impl_->points.push_back(AccessPoint{});
  }
}
StreamIndexer::~StreamIndexer() = default;
Status StreamIndexer::Feed(ByteView compressed) { return impl_->Feed(compressed); }
Status StreamIndexer::Finish() { return impl_->Finish(); }
uint64_t StreamIndexer::compressed_size() const { return impl_->in_total; }
uint64_t StreamIndexer::uncompressed_size() const { return impl_->out_total; }
const std::vector<AccessPoint>& StreamIndexer::points() const { return impl_->points; }
uint64_t StreamIndexer::frames() const { return impl_->frames; }
bool StreamIndexer::seekable() const {
  return impl_->comp != Compression::kZstd || impl_->frames > 1;
}

// ---------------------------------------------------------------------------------------------
// Random access

namespace {

// Buffered reader over a BlobReadFn that never reads across the caller's hint unless it must.
class BlobReader {
 public:
  BlobReader(const BlobReadFn& read, uint64_t offset, uint64_t hint, Bytes* buf, size_t chunk)
      : read_(read),
        buf_(buf),
        chunk_(std::max<size_t>(chunk, 1)),
        hint_(hint),
        buf_off_(offset),
        next_(offset) {
    if (buf_->size() < chunk_) buf_->resize(chunk_);
  }

  // The unconsumed buffered bytes, reading more if there are none; empty at the end of the blob.
  Result<ByteView> Peek() {
    if (pos_ < len_) return ByteView(buf_->data() + pos_, len_ - pos_);
    size_t want = chunk_;
    if (hint_ > next_) {
      want = static_cast<size_t>(std::min<uint64_t>(want, hint_ - next_));
    } else if (hint_ != 0) {
      // Past the hint: only decoder look-ahead should be wanted (ISA-L decodes the last symbols
      // before a block boundary only once it sees a few bytes beyond it), so step up gently
      // from a few bytes instead of fetching a whole chunk the caller did not plan for.
      want = std::min(chunk_, past_hint_step_);
      past_hint_step_ *= 4;
    }
    const size_t n = IPFLY_TRY(read_(next_, MutableByteView(buf_->data(), want)));
    if (n > want) return Internal("BlobReadFn returned more bytes than asked for");
    buf_off_ = next_;
    next_ += n;
    pos_ = 0;
    len_ = n;
    return ByteView(buf_->data(), n);
  }
  void Consume(size_t n) { pos_ += n; }
  // Gives back the last `n` consumed bytes (re-reading them if they are no longer buffered).
  void Unread(size_t n) {
    n = static_cast<size_t>(std::min<uint64_t>(n, offset()));
    if (n <= pos_) {
      pos_ -= n;
      return;
    }
    next_ = offset() - n;
    buf_off_ = next_;
    pos_ = len_ = 0;
  }
  uint64_t offset() const { return buf_off_ + pos_; }

 private:
  const BlobReadFn& read_;
  Bytes* buf_;
  const size_t chunk_;
  const uint64_t hint_;
  uint64_t buf_off_;  // blob offset of (*buf_)[0]
  uint64_t next_;     // blob offset of the next read
  size_t pos_ = 0;
  size_t len_ = 0;
  size_t past_hint_step_ = 16;
};

struct InflateStep {
  size_t consumed = 0;
  size_t produced = 0;
  bool ended = false;  // the deflate stream's last block is done and flushed
};

class ZlibEngine {
 public:
  bool ok() const { return z_.ok(); }
  Status Begin(int prime_bits, int prime_value, ByteView dict) {
    z_stream* s = z_.get();
    if (inflateReset(s) != Z_OK) return Internal("inflateReset failed");
    if (prime_bits > 0 && inflatePrime(s, prime_bits, prime_value) != Z_OK) {
      return Internal("inflatePrime failed");
    }
    if (!dict.empty() &&
        inflateSetDictionary(s, dict.data(), static_cast<uInt>(dict.size())) != Z_OK) {
      return Internal("inflateSetDictionary failed");
    }
    return OkStatus();
  }
  Result<InflateStep> Run(ByteView in, uint8_t* out, size_t out_n) {
    z_stream* s = z_.get();
    const size_t in_n = std::min(in.size(), kMaxSlice);
    out_n = std::min(out_n, kMaxSlice);
    s->next_in = const_cast<Bytef*>(in.data());
    s->avail_in = static_cast<uInt>(in_n);
    s->next_out = out;
    s->avail_out = static_cast<uInt>(out_n);
    const int r = inflate(s, Z_NO_FLUSH);
    InflateStep step{in_n - s->avail_in, out_n - s->avail_out, r == Z_STREAM_END};
    if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) {
      return Corrupt(std::string("gzip: ") + (s->msg ? s->msg : "inflate failed"));
    }
    return step;
  }
  // zlib stops exactly after the last deflate byte.
  size_t OverRead() const { return 0; }

 private:
  ZInflate z_;
};

class IsalEngine {
 public:
  IsalEngine() : s_(std::make_unique<inflate_state>()) {}
  bool ok() const { return true; }
  Status Begin(int prime_bits, int prime_value, ByteView dict) {
    isal_inflate_init(s_.get());
    rejected_ = false;
    s_->crc_flag = ISAL_DEFLATE;
    // ISA-L has no inflatePrime; its bit buffer is public state, and a partial first byte is
    // exactly "bits already read ahead".
    s_->read_in = static_cast<uint64_t>(prime_value);
    s_->read_in_length = prime_bits;
    if (!dict.empty() && isal_inflate_set_dict(s_.get(), const_cast<uint8_t*>(dict.data()),
                                               static_cast<uint32_t>(dict.size())) != COMP_OK) {
      return Internal("isal_inflate_set_dict failed");
    }
    return OkStatus();
  }
  Result<InflateStep> Run(ByteView in, uint8_t* out, size_t out_n) {
    const size_t in_n = std::min(in.size(), kMaxSlice);
    out_n = std::min(out_n, kMaxSlice);
    s_->next_in = const_cast<uint8_t*>(in.data());
    s_->avail_in = static_cast<uint32_t>(in_n);
    s_->next_out = out;
    s_->avail_out = static_cast<uint32_t>(out_n);
    const int r = isal_inflate(s_.get());
    InflateStep step{in_n - s_->avail_in, out_n - s_->avail_out,
                     s_->block_state == ISAL_BLOCK_FINISH};
    if (r < 0) {
      rejected_ = true;
      return Corrupt("gzip: invalid deflate data (isal_inflate error " + std::to_string(r) + ")");
    }
    return step;
  }
  // Whether the last range failed because isal_inflate rejected the deflate data itself.
  bool rejected() const { return rejected_; }
  // ISA-L reads ahead whole bytes into its bit buffer (and may park a short input tail in its
  // own buffer); after the final block those bytes belong to the trailer.
  size_t OverRead() const {
    return static_cast<size_t>(s_->read_in_length / 8) + static_cast<size_t>(s_->tmp_in_size);
  }

 private:
  std::unique_ptr<inflate_state> s_;
  bool rejected_ = false;
};

// Per-thread decoder state and buffers, reused across calls (the read path is hot).
struct RangeContext {
  Bytes in_buf;
  Bytes skip_buf;
  Bytes history;  // a sparse window, expanded
  std::unique_ptr<ZlibEngine> zlib;
  std::unique_ptr<IsalEngine> isal;
  DctxPtr dctx;
  bool busy = false;
};

template <typename Engine>
Status GzipRange(Engine& eng, Bytes& skip, Bytes& history, const AccessPoint& point, uint64_t start,
                 MutableByteView out, BlobReader& rd) {
  const uint64_t end = start + out.size();
  uint64_t pos = point.uncompressed_offset;
  enum class St : uint8_t { kHeader, kDeflate, kTrailer, kBetween };
  St st = St::kDeflate;
  GzipHeaderParser header;
  uint8_t trailer[8];
  size_t trailer_have = 0;
  bool whole_member = point.member_start;  // started at its header, so ISIZE can be checked
  uint64_t member_out = 0;
  if (point.member_start) {
    if (point.compressed_bit_offset % 8 != 0) {
      return InvalidArgument("gzip: member-start access point is not byte aligned");
    }
    st = St::kHeader;
  } else {
    if (point.history_size() > kWindowSize) {
      return InvalidArgument("gzip: access point window larger than 32 KiB");
    }
    const int skip_bits = static_cast<int>(point.compressed_bit_offset % 8);
    int prime_bits = 0;
    int prime_value = 0;
    if (skip_bits) {
      const ByteView b = IPFLY_TRY(rd.Peek());
      if (b.empty()) return Corrupt("gzip: blob ends" + At(rd.offset()));
      prime_bits = 8 - skip_bits;
      prime_value = b[0] >> skip_bits;
      rd.Consume(1);
    }
    IPFLY_RETURN_IF_ERROR(eng.Begin(prime_bits, prime_value, point.History(&history)));
  }
  int stalls = 0;
  while (pos < end) {
    const ByteView in = IPFLY_TRY(rd.Peek());
    switch (st) {
      case St::kBetween:
        if (in.empty() || in[0] != 0x1f) {
          return Corrupt("gzip: stream ends at uncompressed offset " + std::to_string(pos) +
                         ", before the requested end " + std::to_string(end) + At(rd.offset()));
        }
        header.Reset();
        st = St::kHeader;
        break;
      case St::kHeader: {
        if (in.empty()) return Corrupt("gzip: truncated member header" + At(rd.offset()));
        const size_t n = IPFLY_TRY(header.Consume(in, rd.offset()));
        rd.Consume(n);
        if (header.done()) {
          IPFLY_RETURN_IF_ERROR(eng.Begin(0, 0, {}));
          member_out = 0;
          st = St::kDeflate;
        }
        break;
      }
      case St::kDeflate: {
        // Bytes before `start` go to a scratch buffer; the rest straight into the caller's.
        uint8_t* dst;
        size_t cap;
        if (pos < start) {
          dst = skip.data();
          cap = static_cast<size_t>(std::min<uint64_t>(skip.size(), start - pos));
        } else {
          dst = out.data() + (pos - start);
          cap = static_cast<size_t>(end - pos);
        }
        auto step = eng.Run(in, dst, cap);
        if (!step.ok()) return std::move(step).error().With("near" + At(rd.offset()));
        rd.Consume(step->consumed);
        pos += step->produced;
        member_out += step->produced;
        if (step->ended) {
          rd.Unread(eng.OverRead());
          trailer_have = 0;
          st = St::kTrailer;
        } else if (step->consumed == 0 && step->produced == 0) {
          if (in.empty()) return Corrupt("gzip: blob ends inside deflate data" + At(rd.offset()));
          if (++stalls > 2) return Corrupt("gzip: inflate made no progress" + At(rd.offset()));
        } else {
          stalls = 0;
        }
        break;
      }
      case St::kTrailer: {
        if (in.empty()) return Corrupt("gzip: truncated member trailer" + At(rd.offset()));
        const size_t n = std::min(in.size(), 8 - trailer_have);
        memcpy(trailer + trailer_have, in.data(), n);
        trailer_have += n;
        rd.Consume(n);
        if (trailer_have == 8) {
          if (whole_member && Le32(trailer + 4) != static_cast<uint32_t>(member_out)) {
            return Corrupt("gzip: ISIZE mismatch in trailer" + At(rd.offset() - 4));
          }
          whole_member = true;
          st = St::kBetween;
        }
        break;
      }
    }
  }
  return OkStatus();
}

Status ZstdRange(ZSTD_DCtx* dctx, Bytes& skip, const AccessPoint& point, uint64_t start,
                 MutableByteView out, BlobReader& rd) {
  (void)point;
  const uint64_t end = start + out.size();
  uint64_t pos = point.uncompressed_offset;
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
  while (pos < end) {
    const ByteView in = IPFLY_TRY(rd.Peek());
    uint8_t* dst;
    size_t cap;
    if (pos < start) {
      dst = skip.data();
      cap = static_cast<size_t>(std::min<uint64_t>(skip.size(), start - pos));
    } else {
      dst = out.data() + (pos - start);
      cap = static_cast<size_t>(end - pos);
    }
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{dst, cap, 0};
    const size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
    if (ZSTD_isError(r)) {
      return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(r) + At(rd.offset() + ib.pos));
    }
    rd.Consume(ib.pos);
    pos += ob.pos;
    if (in.empty() && ob.pos == 0) {
      return Corrupt("zstd: blob ends at uncompressed offset " + std::to_string(pos) +
                     ", before the requested end " + std::to_string(end) + At(rd.offset()));
    }
  }
  return OkStatus();
}

Status NoneRange(const AccessPoint& point, uint64_t start, MutableByteView out,
                 const BlobReadFn& read) {
  (void)point;
  size_t done = 0;
  while (done < out.size()) {
    const size_t n = IPFLY_TRY(read(start + done, out.subspan(done)));
    if (n > out.size() - done) return Internal("BlobReadFn returned more bytes than asked for");
    if (n == 0) return Corrupt("blob ends" + At(start + done) + " before the requested range");
    done += n;
  }
  return OkStatus();
}

Status RangeWith(RangeContext& ctx, Compression c, const AccessPoint& point, uint64_t start,
                 MutableByteView out, const BlobReadFn& read, uint64_t hint, size_t chunk) {
  if (c == Compression::kNone) return NoneRange(point, start, out, read);
  if (ctx.skip_buf.size() < kSkipChunk) ctx.skip_buf.resize(kSkipChunk);
  BlobReader rd(read, point.compressed_bit_offset / 8, hint, &ctx.in_buf, chunk);
  if (c == Compression::kZstd) {
    if (!ctx.dctx) ctx.dctx = NewDctx();
    if (!ctx.dctx) return Internal("zstd: ZSTD_createDCtx failed");
    return ZstdRange(ctx.dctx.get(), ctx.skip_buf, point, start, out, rd);
  }
  if (c != Compression::kGzip) return InvalidArgument("unknown compression");
  if (GetInflateEngine() == InflateEngine::kIsal) {
    if (!ctx.isal) ctx.isal = std::make_unique<IsalEngine>();
    Status s = GzipRange(*ctx.isal, ctx.skip_buf, ctx.history, point, start, out, rd);
    // zlib did the indexing, so it is the reference for what is valid deflate: should ISA-L ever
    // be stricter about some corner (e.g. incomplete Huffman codes), zlib gets the final say.
    // Framing errors (header, trailer) are not retried. Costs nothing on the normal path.
    if (s.ok() || !ctx.isal->rejected()) return s;
  }
  if (!ctx.zlib) ctx.zlib = std::make_unique<ZlibEngine>();
  if (!ctx.zlib->ok()) {
    ctx.zlib.reset();
    return Internal("gzip: inflateInit2 failed");
  }
  BlobReader zrd(read, point.compressed_bit_offset / 8, hint, &ctx.in_buf, chunk);
  return GzipRange(*ctx.zlib, ctx.skip_buf, ctx.history, point, start, out, zrd);
}

}  // namespace

Status DecompressRangeInto(Compression c, const AccessPoint& point, uint64_t start,
                           MutableByteView out, const BlobReadFn& read,
                           uint64_t compressed_end_hint, size_t chunk) {
  if (start < point.uncompressed_offset) {
    return InvalidArgument("DecompressRange: start " + std::to_string(start) +
                           " precedes the access point at " +
                           std::to_string(point.uncompressed_offset));
  }
  if (out.empty()) return OkStatus();
  if (start + out.size() < start) return InvalidArgument("DecompressRange: range overflows");
  thread_local RangeContext tls;
  if (tls.busy) {  // re-entered from a BlobReadFn: use fresh state rather than clobber ours
    RangeContext local;
    return RangeWith(local, c, point, start, out, read, compressed_end_hint, chunk);
  }
  struct BusyGuard {
    bool& busy;
    explicit BusyGuard(bool& b) : busy(b) { busy = true; }
    ~BusyGuard() { busy = false; }
  } guard(tls.busy);
  return RangeWith(tls, c, point, start, out, read, compressed_end_hint, chunk);
}

Result<Bytes> DecompressRange(Compression c, const AccessPoint& point, uint64_t start, uint64_t end,
                              const BlobReadFn& read, uint64_t compressed_end_hint, size_t chunk) {
  if (end < start) {
    return InvalidArgument("DecompressRange: end " + std::to_string(end) + " < start " +
                           std::to_string(start));
  }
  Bytes out(static_cast<size_t>(end - start));
  IPFLY_RETURN_IF_ERROR(
      DecompressRangeInto(c, point, start, out, read, compressed_end_hint, chunk));
  return out;
}

}  // namespace ipfly::layer
