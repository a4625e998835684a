// Random access into compressed layer blobs: gzip checkpoints, zstd frame tables, plain tar.
//
// Indexing (one streaming pass): StreamIndexer decompresses the blob as it is fed, hands the
// uncompressed bytes to a consumer (the tar parser), and records access points:
//   gzip   a checkpoint at a deflate block boundary at least `span` uncompressed bytes after the
//          previous one: compressed offset in bits, uncompressed offset, and the (up to) 32 KiB
//          window preceding it within the same member (inflatePrime + a preset dictionary restart
//          decompression there). Multi-member gzip (pigz, concatenated members) is supported; a
//          member start that is at least `span` after the previous point becomes a checkpoint
//          with an empty window. Headers (FEXTRA/FNAME/FCOMMENT/FHCRC) are parsed and checked;
//          trailers (CRC32 + ISIZE) are checked for every member. Zero bytes after the last member
//          (tar-style padding) are tolerated; anything else after it is kCorrupt.
//   zstd   an access point at the start of a data frame at least `span` after the previous point
//          (span 0 = every data frame); skippable frames are skipped and not counted. A blob with a
//          single data frame is "not seekable": Finish still succeeds (the decompressed stream is
//          delivered so the index can be built and the layer fetched whole); callers that need
//          random access check seekable(). Window sizes above 2^27 (zstd --long=28+) are
//          rejected as kCorrupt, which caps decoder memory at 128 MiB per stream.
//   none   plain tar: identity, one access point at 0.
// Corrupt or truncated input gives kCorrupt with the compressed offset in the message.
//
// Reading (random access): DecompressRange returns the uncompressed bytes [start, end) given the
// access point at or before `start` and a way to read compressed bytes (ReadAt over the blob).
// It trusts the blob to be the one that was indexed (blocks are verified by CID, and the indexer
// checked every CRC): it detects malformed data (kCorrupt) but does not re-check CRC32s, since a
// range that starts mid-member cannot. It is thread-safe and reuses per-thread decoder state and
// buffers, so the hot path allocates nothing but its result (DecompressRangeInto: nothing).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::layer {

enum class Compression : uint8_t { kNone = 0, kGzip = 1, kZstd = 2 };
std::string_view CompressionName(Compression c);
// From the first bytes of a blob: 1f 8b = gzip, 28 b5 2f fd (or a skippable frame 5? 2a 4d 18)
// = zstd, otherwise none (plain tar).
Compression DetectCompression(ByteView head);

// A stretch of a sparse window that is stored: bytes [offset, offset + length) of the window.
struct WindowRun {
  uint32_t offset = 0;
  uint32_t length = 0;
  bool operator==(const WindowRun&) const = default;
};

struct AccessPoint {
  uint64_t compressed_bit_offset = 0;  // gzip: bit position in the blob; zstd: 8 × frame offset
  uint64_t uncompressed_offset = 0;
  // gzip: the (up to) 32 KiB of uncompressed data preceding the point, the history that the
  // deflate data after the point may copy from (empty at a member start); zstd/none: empty.
  // Dense (window_size == 0): `window` holds the whole history.
  // Sparse (window_size > 0): the history is window_size bytes long, but only the bytes that the
  // deflate data after the point actually references are kept: `window` holds the bytes of
  // `window_runs` (sorted, disjoint, non-adjacent) concatenated, and every other byte of the
  // history reads as zero. Decompression from the point gives identical bytes either way.
  Bytes window;
  // gzip: true when the point is the start of a gzip member (header follows), false when it is a
  // deflate block boundary inside a member.
  bool member_start = false;
  uint32_t window_size = 0;
  std::vector<WindowRun> window_runs;

  bool sparse() const { return window_size != 0; }
  // Length of the history the point restores (dense: window.size()).
  size_t history_size() const { return sparse() ? window_size : window.size(); }
  // The history as the decoder needs it (sparse: expanded into `scratch`, zeros elsewhere).
  ByteView History(Bytes* scratch) const;
};

struct IndexerOptions {
  uint64_t span = 512ull << 10;  // minimum uncompressed distance between gzip checkpoints
  // gzip: keep only the window bytes that the data after each checkpoint references (found by
  // decoding its first 32 KiB while indexing, then checked by decompressing that stretch with the
  // sparse window through zlib; a window that fails the check stays dense). Spans under 32 KiB
  // keep dense windows.
  bool sparse_windows = true;
};

// Decodes raw deflate from bit `first_bit` (0..7) of `in`, with `window` as the history before
// it, until `limit` bytes are produced or the final block ends, and sets used[i] = 1 for every
// byte window[i] that a back-reference copies (used.size() == window.size()). Returns the bytes
// produced. kCorrupt on invalid deflate data, a reference beyond the window, or input that ends
// first. Used while indexing; exposed for tests.
Result<Bytes> TraceWindowUse(ByteView in, int first_bit, ByteView window, size_t limit,
                             std::vector<uint8_t>* used);

// Turns a dense point's window into a sparse one given the bytes the data after it references;
// runs closer than a few bytes are merged (storing a few real bytes is cheaper than a run).
void MakeSparseWindow(AccessPoint* point, const std::vector<uint8_t>& used);

// Streams a blob through decompression and records access points.
class StreamIndexer {
 public:
  using OutputFn = std::function<Status(ByteView uncompressed)>;
  StreamIndexer(Compression c, IndexerOptions options, OutputFn on_output);
  ~StreamIndexer();
  StreamIndexer(const StreamIndexer&) = delete;
  StreamIndexer& operator=(const StreamIndexer&) = delete;

  // Errors are sticky: after one, every later Feed/Finish returns it. An error returned by the
  // OutputFn is passed through unchanged (and stops indexing).
  Status Feed(ByteView compressed);
  // kCorrupt if the stream ended early or had trailing garbage (gzip: bytes after the last member
  // that are not another member; zero padding after the last member is tolerated).
  Status Finish();

  uint64_t compressed_size() const;
  uint64_t uncompressed_size() const;
  // Access points in increasing order; the first one is always at uncompressed offset 0.
  const std::vector<AccessPoint>& points() const;
  // zstd: number of data frames (1 = not seekable); gzip: members; none: 0.
  uint64_t frames() const;
  bool seekable() const;  // gzip/none: always; zstd: frames() > 1

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads compressed bytes [offset, offset + out.size()) of the blob; returns the count read
// (short only at the end of the blob).
using BlobReadFn = std::function<Result<size_t>(uint64_t offset, MutableByteView out)>;

// Decompresses from `point` and returns the uncompressed bytes [start, end), where
// point.uncompressed_offset <= start <= end (else kInvalidArgument). Reads compressed input in
// chunks of `chunk` bytes via `read`; stops as soon as `end` is reached (an empty range reads
// nothing). kCorrupt on bad data or if the blob ends before `end` (which includes `end` beyond
// the uncompressed size); errors from `read` are passed through.
// `compressed_end_hint`, when non-zero, is the compressed offset beyond which no input is needed
// (the next access point's offset, rounded up; for end <= that point's uncompressed offset this
// is exact). Reads stop at it, so the caller can fetch one range, except for a few bytes of
// decoder look-ahead: ISA-L decodes the last symbols before a block boundary only once it sees
// bytes beyond it, so the first read past the hint asks for 16 bytes (enough in every test),
// later ones 4x more each. If more input turns out to be needed (a wrong hint), reading simply
// continues rather than failing.
Result<Bytes> DecompressRange(Compression c, const AccessPoint& point, uint64_t start, uint64_t end,
                              const BlobReadFn& read, uint64_t compressed_end_hint = 0,
                              size_t chunk = 256 * 1024);
// The same, decompressing [start, start + out.size()) straight into `out` (e.g. a span-cache
// mapping or a FUSE reply buffer), with no allocation on the hot path.
Status DecompressRangeInto(Compression c, const AccessPoint& point, uint64_t start,
                           MutableByteView out, const BlobReadFn& read,
                           uint64_t compressed_end_hint = 0, size_t chunk = 256 * 1024);

// The raw-deflate decoder DecompressRange uses for gzip spans (indexing always uses zlib, whose
// Z_BLOCK stops give the checkpoint bit offsets). Both produce identical bytes; the default is
// the faster one (see docs in compression.cc). Exposed for tests and benchmarks; process-wide.
enum class InflateEngine : uint8_t { kZlib = 0, kIsal = 1 };
void SetInflateEngine(InflateEngine e);
InflateEngine GetInflateEngine();

}  // namespace ipfly::layer
