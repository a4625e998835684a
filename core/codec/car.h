// CAR (content-addressable archives). CARv1 read/write; CARv2 read (header, payload, index).
//
// CarParser is a push parser so that it works the same on files and on HTTP bodies that arrive in
// pieces (and may be truncated: a trustless gateway commits to 200 before streaming):
//   CarParser p(on_header, on_block);
//   while (more) RETURN_IF_ERROR(p.Feed(chunk));
//   RETURN_IF_ERROR(p.Finish());   // kCorrupt "truncated CAR ..." if it stopped mid-section
// It accepts CARv1, and CARv2 (it reads the pragma+header, skips padding, parses exactly the data
// payload and ignores the index). on_block receives *unverified* (cid, bytes): callers turn them
// into Blocks with Block::Verify before use. Sections over kMaxBlockSize + CID size are rejected.
// Limits: header length <= 1 MiB.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/block.h"
#include "core/multiformats/cid.h"

namespace ipfly::codec {

struct CarHeader {
  uint64_t version = 1;        // version of the outer container (1 or 2)
  std::vector<mf::Cid> roots;  // roots of the (inner) CARv1 header
};

class CarParser {
 public:
  using HeaderFn = std::function<Status(const CarHeader&)>;
  using BlockFn = std::function<Status(mf::Cid cid, Bytes data)>;
  CarParser(HeaderFn on_header, BlockFn on_block);
  ~CarParser();

  // Consumes more bytes. An error from a callback stops parsing and is returned.
  Status Feed(ByteView chunk);
  // Signals end of input: kCorrupt if the input ended inside the header or a section, or if no
  // header was seen at all.
  Status Finish();

  uint64_t blocks_seen() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Encodes a CARv1 header {roots, version: 1} as length-prefixed dag-cbor.
Bytes EncodeCarV1Header(const std::vector<mf::Cid>& roots);
// Encodes one CARv1 section: varint(len(cid)+len(data)) cid data.
Bytes EncodeCarSection(const mf::Cid& cid, ByteView data);

// Streams a CARv1 to a writer function; implements BlockSink so importers can write into it.
class CarV1Writer : public BlockSink {
 public:
  using WriteFn = std::function<Status(ByteView)>;
  explicit CarV1Writer(WriteFn write) : write_(std::move(write)) {}
  // Writes the header; call once, before any Put.
  Status WriteHeader(const std::vector<mf::Cid>& roots);
  Status Put(const Block& block) override;  // thread-safe

 private:
  WriteFn write_;
  std::mutex mu_;
};

}  // namespace ipfly::codec
