// Fuzzes the streaming tar parser. The first input byte seeds the piece sizes: feeding the rest in
// pseudo-random pieces must give exactly what feeding it whole gives (entries, error code and
// message, end marker, bytes consumed). Every reported entry must satisfy the parser's contract
// (normalised relative path, offsets inside the input, size only on regular files).
// If the first byte's top bit is set, every non-zero 512-byte block gets a valid header checksum
// first, so that mutations reach the field parsers instead of dying at the checksum.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "layer/tar.h"

namespace {

using ipfly::ByteView;
using ipfly::Status;
using ipfly::layer::EntryType;
using ipfly::layer::TarEntry;
using ipfly::layer::TarParser;

struct Outcome {
  bool ok = false;
  ipfly::Errc code = ipfly::Errc::kInternal;
  std::string message;
  std::vector<TarEntry> entries;
  bool at_end = false;
  uint64_t offset = 0;
};

void CheckEntry(const TarEntry& e, uint64_t input_size) {
  const std::string& p = e.path;
  if (!p.empty() && (p.front() == '/' || p.back() == '/')) __builtin_trap();
  if (p.find('\0') != std::string::npos || p.find("//") != std::string::npos) __builtin_trap();
  for (size_t b = 0; b <= p.size();) {
    size_t s = std::min(p.find('/', b), p.size());
    std::string_view c(p.data() + b, s - b);
    if (c == "." || c == "..") __builtin_trap();
    b = s + 1;
  }
  if (e.type != EntryType::kFile && e.size != 0) __builtin_trap();
  if (e.header_offset >= e.data_offset || e.data_offset % 512 != 0) __builtin_trap();
  if (e.data_offset > input_size || e.data_offset + e.size < e.data_offset) __builtin_trap();
  if (e.mode > 07777 || e.mtime_nsec >= 1000000000u) __builtin_trap();
  if ((e.type == EntryType::kSymlink || e.type == EntryType::kHardlink) && e.link_target.empty()) {
    __builtin_trap();
  }
}

Outcome Run(ByteView in, uint32_t seed) {
  Outcome o;
  TarParser p([&](TarEntry&& e) {
    CheckEntry(e, in.size());
    o.entries.push_back(std::move(e));
    return ipfly::OkStatus();
  });
  size_t off = 0;
  Status s;
  while (off < in.size()) {
    size_t n = in.size() - off;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      // Mostly small pieces, sometimes a block or more, to cross every state boundary.
      n = std::min<size_t>(n, (seed >> 28) < 12 ? 1 + (seed >> 16) % 37 : 1 + (seed >> 12) % 1100);
    }
    s = p.Feed(in.subspan(off, n));
    if (!s.ok()) break;
    off += n;
  }
  if (s.ok()) s = p.Finish();
  o.ok = s.ok();
  if (!s.ok()) {
    o.code = s.error().code();
    o.message = s.error().message();
    // Errors are sticky.
    if (p.Feed(in.first(0)).ok() || p.Finish().ok()) __builtin_trap();
  } else if (p.offset() != in.size()) {
    __builtin_trap();
  }
  o.at_end = p.at_end();
  o.offset = p.offset();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint32_t seed = data[0] | 1u;
  std::vector<uint8_t> buf(data + 1, data + size);
  if ((data[0] & 0x80) != 0) {
    for (size_t b = 0; b + 512 <= buf.size(); b += 512) {
      uint8_t* h = buf.data() + b;
      if (std::all_of(h, h + 512, [](uint8_t c) { return c == 0; })) continue;
      std::fill(h + 148, h + 156, ' ');
      unsigned sum = 0;
      for (size_t i = 0; i < 512; ++i) sum += h[i];
      char field[8];
      std::snprintf(field, sizeof(field), "%06o", sum & 0777777);
      std::copy(field, field + 7, h + 148);  // six digits and a NUL; the space stays
    }
  }
  ByteView in(buf.data(), buf.size());
  Outcome whole = Run(in, 0);
  Outcome pieces = Run(in, seed);
  if (whole.ok != pieces.ok || whole.code != pieces.code || whole.message != pieces.message ||
      whole.entries != pieces.entries || whole.at_end != pieces.at_end) {
    __builtin_trap();
  }
  return 0;
}
