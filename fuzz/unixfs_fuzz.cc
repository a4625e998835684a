// Fuzzes the UnixFS Data decoder: accepted input must re-encode (proto2, canonical field order)
// into bytes that decode to the same message and re-encode to themselves.
#include <cstdint>

#include "core/codec/unixfs_pb.h"

namespace {

bool Same(const ipfly::codec::UnixfsData& a, const ipfly::codec::UnixfsData& b) {
  auto same_time = [](const auto& x, const auto& y) {
    if (x.has_value() != y.has_value()) return false;
    return !x || (x->seconds == y->seconds && x->nanos == y->nanos);
  };
  return a.type == b.type && a.data == b.data && a.filesize == b.filesize &&
         a.blocksizes == b.blocksizes && a.hash_type == b.hash_type && a.fanout == b.fanout &&
         a.mode == b.mode && same_time(a.mtime, b.mtime);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ipfly::codec;
  auto d = DecodeUnixfs(ipfly::ByteView(data, size));
  if (!d.ok()) return 0;
  ipfly::Bytes enc = EncodeUnixfs(*d);
  auto again = DecodeUnixfs(enc);
  if (!again.ok() || !Same(*d, *again)) __builtin_trap();
  if (EncodeUnixfs(*again) != enc) __builtin_trap();
  return 0;
}
