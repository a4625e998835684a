// Streaming tar parser for OCI/Docker image layers (uncompressed tar stream).
//
// Push parser: feed the uncompressed stream in pieces of any size; for every archive member it
// reports a TarEntry with the member's metadata and the offset of its content in the
// uncompressed stream (content bytes themselves are skipped, never buffered), so the index can
// later read a file by (data_offset, size).
//
// Formats: ustar (with the 155-byte prefix; star's 131-byte prefix), pax ('x' per-file headers:
// path, linkpath, size, uid, gid, mtime with fractions, SCHILY.xattr.*, LIBARCHIVE.xattr.*
// (URL-encoded name, base64 value; SCHILY.xattr wins when both name the same attribute),
// SCHILY.devmajor/devminor; uname, gname, atime, ctime and unknown keywords ignored), GNU ('L' long
// name, 'K' long link name, base-256 numeric fields), old v7 headers. Entry kinds: regular ('0',
// '\0', '7'), hard link ('1'), symlink ('2'), char ('3') and block ('4') devices, directory ('5'),
// FIFO ('6'); an old-style '\0' member whose name ends in '/' is a directory.
//
// Where the common readers disagree on what a construct means (GNU tar, and Go's archive/tar that
// Docker and containerd unpack layers with), the parser rejects it rather than pick a meaning, so
// a lazily mounted layer never differs from an unpacked one (the snapshotter falls back instead):
//   kUnsupported: GNU sparse ('S' or GNU.sparse.* pax keys), multi-volume ('M'), any other
//     typeflag (incl. 'V' labels, 'D' dumpdirs); a 'g' global header that sets path, linkpath,
//     size, uid, gid, mtime or xattrs (GNU tar applies it, Go ignores it; 'g' headers with only
//     other keywords, e.g. git's "comment", are validated and skipped); a non-zero size on a
//     hard link, symlink or directory (POSIX and Go disagree on whether content follows; for
//     devices and FIFOs the size is ignored as POSIX says); both a pax path and a GNU long name
//     for one member; uid/gid above 2^32-1.
//   kCorrupt: two 'x' (or two 'L', two 'K') headers for one member; an extended header not
//     followed by a member; a '0'/'7' member whose name ends in '/'; a zero block followed by a
//     non-zero block (a "lone zero block"); an empty pax path; NUL in a pax path or linkpath,
//     or inside a GNU long name (trailing NULs are padding).
//   kTooLarge: a pax or GNU long-name header over 1 MiB (they are buffered).
// Other checks (kCorrupt): header checksum (signed and unsigned sums accepted), octal/base-256
// fields, pax record syntax ("<len> <key>=<value>\n", exact length, no trailing bytes), sizes
// that overflow, members truncated by the end of input. Every error message names the stream
// offset of the offending header (and record, for pax). The archive ends at two zero blocks or at
// a clean end of input after a member or after a single zero block (many tools omit the trailer);
// anything after the end marker is ignored.
//
// Paths are normalised: leading "./" and "/" removed ("/" and "./" themselves are the root and
// reported with path ""), repeated slashes collapsed, trailing slash removed; "." components
// dropped. A ".." component, an embedded NUL, or an empty name give kCorrupt ("unsafe path").
// Hard-link targets are normalised the same way (and must not be empty or the root). Symlink
// targets are kept verbatim (they are resolved by the kernel inside the container's root, never
// by ipfly) but must not be empty.
// Whiteouts (".wh.<name>", ".wh..wh..opq") are reported as ordinary entries; interpreting them is
// the index's job, as is checking that the root entry is a directory.
//
// Memory: O(1) per member except extended headers (<= 1 MiB each) and the reported entry.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::layer {

enum class EntryType : uint8_t {
  kFile = 0,
  kDirectory = 1,
  kSymlink = 2,
  kHardlink = 3,
  kCharDevice = 4,
  kBlockDevice = 5,
  kFifo = 6,
};

struct TarEntry {
  std::string path;  // normalised, relative, no trailing slash ("" = root directory)
  EntryType type = EntryType::kFile;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky (07777)
  uint32_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;        // content size (0 for everything but regular files)
  std::string link_target;  // symlink target (verbatim) or hard-link target (normalised path)
  uint32_t dev_major = 0, dev_minor = 0;
  std::map<std::string, std::string> xattrs;  // name -> raw value
  uint64_t header_offset = 0;  // offset of the member's first header (incl. pax/GNU headers)
  uint64_t data_offset = 0;    // offset of the content in the uncompressed stream
                               // (just after the member's last header, also when size == 0)

  bool operator==(const TarEntry&) const = default;
};

class TarParser {
 public:
  // Called once per member, in archive order, from inside Feed. An error stops parsing and is
  // returned by Feed. Not thread-safe: one parser is driven by one thread at a time.
  using EntryFn = std::function<Status(TarEntry&&)>;
  explicit TarParser(EntryFn on_entry);
  ~TarParser();
  TarParser(const TarParser&) = delete;
  TarParser& operator=(const TarParser&) = delete;

  // Consumes `chunk` (any size, including 0). After an error, Feed and Finish return it again.
  Status Feed(ByteView chunk);
  // End of input: kCorrupt if it ended inside a header, an extended header's data or a member's
  // content (or its padding), or after an extended header without its member. Idempotent; Feed
  // after Finish is kInternal.
  Status Finish();

  uint64_t offset() const;  // bytes consumed so far
  bool at_end() const;      // the end-of-archive marker was seen

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfly::layer
