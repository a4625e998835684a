#include "layer/tar.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

namespace ipfly::layer {
namespace {

constexpr uint64_t kBlockSize = 512;
// Extended headers are buffered; Go's archive/tar uses the same cap, so nothing it accepts is
// refused here.
constexpr uint64_t kMaxExtendedSize = uint64_t{1} << 20;
constexpr int64_t kMaxSize = std::numeric_limits<int64_t>::max();

// ustar header layout (POSIX.1-2017 "pax" ustar interchange format); GNU and v7 share the first
// 257 bytes.
struct Span {
  size_t off, len;
};
constexpr Span kName{0, 100};
constexpr Span kMode{100, 8};
constexpr Span kUid{108, 8};
constexpr Span kGid{116, 8};
constexpr Span kSize{124, 12};
constexpr Span kMtime{136, 12};
constexpr Span kChksum{148, 8};
constexpr size_t kTypeflag = 156;
constexpr Span kLinkname{157, 100};
constexpr Span kMagicVersion{257, 8};
constexpr Span kDevmajor{329, 8};
constexpr Span kDevminor{337, 8};
constexpr Span kPrefix{345, 155};
constexpr Span kStarPrefix{345, 131};
constexpr Span kStarTrailer{508, 4};

using Block = std::array<uint8_t, kBlockSize>;

enum class Format { kV7, kUstar, kGnu };

std::string At(uint64_t off) { return " at offset " + std::to_string(off); }

// Names in error messages: printable ASCII kept, everything else escaped, length capped, so a
// hostile archive cannot inject control characters into logs.
std::string Quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 256; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > 256) out += "...";
  return out + "'";
}

std::string_view Raw(const Block& b, Span f) {
  return {reinterpret_cast<const char*>(b.data()) + f.off, f.len};
}

// A NUL-terminated (or field-filling) string field.
std::string_view CString(const Block& b, Span f) {
  std::string_view s = Raw(b, f);
  return s.substr(0, s.find('\0'));
}

// Numeric header field: octal digits padded with spaces/NULs on either side (all-blank means 0),
// or GNU base-256 (top bit of the first byte set; bit 6 is the sign of a two's complement number).
std::optional<int64_t> ParseNumeric(std::string_view f) {
  if (!f.empty() && (static_cast<uint8_t>(f[0]) & 0x80) != 0) {
    const bool negative = (static_cast<uint8_t>(f[0]) & 0x40) != 0;
    const uint8_t flip = negative ? 0xff : 0x00;
    uint64_t v = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      uint8_t c = static_cast<uint8_t>(f[i]) ^ flip;
      if (i == 0) c &= 0x7f;  // the marker bit is not part of the number
      if ((v >> 56) != 0) return std::nullopt;
      v = (v << 8) | c;
    }
    if ((v >> 63) != 0) return std::nullopt;
    // For a negative number the flipped bits hold -(x)-1.
    return negative ? -static_cast<int64_t>(v) - 1 : static_cast<int64_t>(v);
  }
  size_t b = f.find_first_not_of(std::string_view(" \0", 2));
  if (b == std::string_view::npos) return 0;
  size_t e = f.find_last_not_of(std::string_view(" \0", 2));
  f = f.substr(b, e - b + 1);
  uint64_t v = 0;
  for (char c : f) {
    if (c < '0' || c > '7') return std::nullopt;
    if ((v >> 60) != 0) return std::nullopt;
    v = v * 8 + static_cast<uint64_t>(c - '0');
  }
  if (v > static_cast<uint64_t>(kMaxSize)) return std::nullopt;
  return static_cast<int64_t>(v);
}

// Non-negative decimal as in pax records; no sign, no blanks, at least one digit.
std::optional<uint64_t> ParseDecimal(std::string_view s, uint64_t max) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

struct Timestamp {
  int64_t sec = 0;
  uint32_t nsec = 0;
};

// pax time: [-]digits[.digits]; fraction digits past nanoseconds are dropped (truncation toward
// the stored sign, like the writers that produce them). Stored normalised as a timespec
// (nsec in [0, 1e9)), so -1.5 becomes {-2, 500000000}.
std::optional<Timestamp> ParsePaxTime(std::string_view s) {
  bool negative = false;
  if (!s.empty() && s[0] == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  std::string_view whole = s, frac;
  if (size_t dot = s.find('.'); dot != std::string_view::npos) {
    whole = s.substr(0, dot);
    frac = s.substr(dot + 1);
  }
  auto sec = ParseDecimal(whole, static_cast<uint64_t>(kMaxSize));
  if (!sec) return std::nullopt;
  uint32_t nsec = 0;
  for (size_t i = 0; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') return std::nullopt;
    if (i < 9) nsec = nsec * 10 + static_cast<uint32_t>(frac[i] - '0');
  }
  for (size_t i = frac.size(); i < 9; ++i) nsec *= 10;
  Timestamp t;
  t.sec = static_cast<int64_t>(*sec);
  t.nsec = nsec;
  if (negative) {
    t.sec = -t.sec;
    if (t.nsec != 0) {
      t.sec -= 1;
      t.nsec = 1000000000u - t.nsec;
    }
  }
  return t;
}

// Normalises a member name or hard-link target (see tar.h); nullopt if unsafe.
std::optional<std::string> NormalizePath(std::string_view p) {
  if (p.empty() || p.find('\0') != std::string_view::npos) return std::nullopt;
  std::string out;
  out.reserve(p.size());
  while (!p.empty()) {
    size_t slash = p.find('/');
    std::string_view comp = p.substr(0, slash);
    p = slash == std::string_view::npos ? std::string_view() : p.substr(slash + 1);
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") return std::nullopt;
    if (!out.empty()) out += '/';
    out += comp;
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// libarchive escapes xattr names in pax keywords with %XX (the keyword may not hold '=', '%' or
// non-printables).
std::optional<std::string> UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = HexDigit(s[i + 1]), lo = HexDigit(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// Standard base64 alphabet; libarchive omits the '=' padding, other writers keep it.
std::optional<std::string> Base64Decode(std::string_view s) {
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  if (s.size() % 4 == 1) return std::nullopt;
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// What one 'x' header says about its member.
struct PaxOverrides {
  std::optional<std::string> path, linkpath;
  std::optional<uint64_t> size;
  std::optional<uint32_t> uid, gid, devmajor, devminor;
  std::optional<Timestamp> mtime;
  std::map<std::string, std::string> schily_xattrs, libarchive_xattrs;
};

constexpr std::string_view kSchilyXattr = "SCHILY.xattr.";
constexpr std::string_view kLibarchiveXattr = "LIBARCHIVE.xattr.";

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Keywords whose global ('g') value would change member metadata.
bool AffectsMembers(std::string_view key) {
  return key == "path" || key == "linkpath" || key == "size" || key == "uid" || key == "gid" ||
         key == "mtime" || key == "SCHILY.devmajor" || key == "SCHILY.devminor" ||
         StartsWith(key, kSchilyXattr) || StartsWith(key, kLibarchiveXattr);
}

}  // namespace

struct TarParser::Impl {
  enum class State {
    kHeader,    // filling `block`
    kExtended,  // filling `ext_data` with an extended header's content
    kSkip,      // skipping member content and block padding
    kEnd,       // after the end-of-archive marker: everything ignored
    kFailed,
  };

  EntryFn on_entry;
  State state = State::kHeader;
  uint64_t offset = 0;
  bool finished = false;
  bool end_marker = false;
  std::optional<Error> error;

  Block block{};
  size_t block_fill = 0;
  std::optional<uint64_t> zero_block_at;  // a first zero block was just seen here

  // Extended header being read.
  char ext_type = 0;
  uint64_t ext_header_offset = 0;
  uint64_t ext_size = 0;
  std::string ext_data;

  // Content being skipped, for truncation messages.
  uint64_t skip_left = 0;
  uint64_t skip_content_end = 0;
  uint64_t skip_header_offset = 0;
  std::string skip_what;

  // Extended headers seen for the next member.
  std::optional<uint64_t> member_start;
  std::optional<PaxOverrides> pax;
  std::optional<std::string> long_name, long_link;

  Status Fail(Error e) {
    state = State::kFailed;
    error = e;
    return e;
  }

  Status Feed(ByteView in) {
    if (state == State::kFailed) return *error;
    if (finished) return Internal("tar: Feed after Finish" + At(offset));
    while (!in.empty()) {
      switch (state) {
        case State::kEnd:
          offset += in.size();
          return OkStatus();
        case State::kFailed:
          return *error;
        case State::kSkip: {
          const uint64_t n = std::min<uint64_t>(skip_left, in.size());
          skip_left -= n;
          offset += n;
          in = in.subspan(static_cast<size_t>(n));
          if (skip_left == 0) state = State::kHeader;
          break;
        }
        case State::kHeader: {
          const size_t n = std::min<size_t>(kBlockSize - block_fill, in.size());
          std::memcpy(block.data() + block_fill, in.data(), n);
          block_fill += n;
          offset += n;
          in = in.subspan(n);
          if (block_fill == kBlockSize) {
            block_fill = 0;
            Status s = OnHeader(offset - kBlockSize);
            if (!s.ok()) return Fail(std::move(s).error());
          }
          break;
        }
        case State::kExtended: {
          const size_t n =
              static_cast<size_t>(std::min<uint64_t>(ext_size - ext_data.size(), in.size()));
          ext_data.append(reinterpret_cast<const char*>(in.data()), n);
          offset += n;
          in = in.subspan(n);
          if (ext_data.size() == ext_size) {
            Status s = OnExtendedData();
            if (!s.ok()) return Fail(std::move(s).error());
          }
          break;
        }
      }
    }
    return OkStatus();
  }

  Status Finish() {
    if (state == State::kFailed) return *error;
    finished = true;
    Status s = CheckComplete();
    if (!s.ok()) return Fail(std::move(s).error());
    return s;
  }

  Status CheckComplete() const {
    switch (state) {
      case State::kEnd:
      case State::kFailed:
        return OkStatus();
      case State::kHeader:
        if (block_fill != 0) {
          return Corrupt("tar: input ends inside the header" + At(offset - block_fill) + " (" +
                         std::to_string(block_fill) + " of 512 bytes)");
        }
        if (member_start) {
          return Corrupt("tar: extended header" + At(*member_start) +
                         " is not followed by a member (input ends" + At(offset) + ")");
        }
        return OkStatus();
      case State::kExtended:
        return Corrupt("tar: input ends" + At(offset) + " inside the extended header" +
                       At(ext_header_offset));
      case State::kSkip:
        return Corrupt("tar: member " + skip_what + " (header" + At(skip_header_offset) +
                       ") is truncated: input ends" + At(offset) + " inside its " +
                       (offset < skip_content_end ? "content" : "block padding"));
    }
    return OkStatus();
  }

  // Skips what follows the header at `header_offset`: `size` content bytes of which `consumed`
  // were already read (an extended header's data), then the padding to a block boundary.
  void SkipContent(uint64_t header_offset, uint64_t size, uint64_t consumed, std::string what) {
    skip_header_offset = header_offset;
    skip_content_end = header_offset + kBlockSize + size;
    skip_left = size - consumed + (kBlockSize - size % kBlockSize) % kBlockSize;
    skip_what = std::move(what);
    state = skip_left != 0 ? State::kSkip : State::kHeader;
  }

  Status OnHeader(uint64_t hoff) {
    const bool zero = std::all_of(block.begin(), block.end(), [](uint8_t b) { return b == 0; });
    if (zero) {
      if (member_start) {
        return Corrupt("tar: end-of-archive zero block" + At(hoff) +
                       " right after the extended header" + At(*member_start));
      }
      if (zero_block_at) {
        state = State::kEnd;
        end_marker = true;
      } else {
        zero_block_at = hoff;
      }
      return OkStatus();
    }
    if (zero_block_at) {
      // GNU tar stops at a lone zero block, Go's reader fails: refuse to guess.
      return Corrupt("tar: lone zero block" + At(*zero_block_at) + " followed by a non-zero block" +
                     At(hoff));
    }

    // Checksum: sum of all header bytes with the checksum field taken as eight spaces. Some old
    // writers summed signed chars; accept either.
    auto stored = ParseNumeric(Raw(block, kChksum));
    if (!stored || (static_cast<uint8_t>(Raw(block, kChksum)[0]) & 0x80) != 0) {
      return Corrupt("tar: bad checksum field in header" + At(hoff));
    }
    int64_t unsigned_sum = 0, signed_sum = 0;
    for (size_t i = 0; i < kBlockSize; ++i) {
      const bool in_field = i >= kChksum.off && i < kChksum.off + kChksum.len;
      const uint8_t b = in_field ? uint8_t{' '} : block[i];
      unsigned_sum += b;
      signed_sum += static_cast<int8_t>(b);
    }
    if (*stored != unsigned_sum && *stored != signed_sum) {
      return Corrupt("tar: header checksum mismatch" + At(hoff) + " (stored " +
                     std::to_string(*stored) + ", computed " + std::to_string(unsigned_sum) + ")");
    }

    const std::string_view magic = Raw(block, kMagicVersion);
    Format format = Format::kV7;
    if (magic == std::string_view("ustar\00000", 8)) {  // "ustar", NUL, version "00"
      format = Format::kUstar;
    } else if (magic == std::string_view("ustar  \0", 8)) {
      format = Format::kGnu;
    }

    const char type = static_cast<char>(block[kTypeflag]);
    if (!member_start) member_start = hoff;
    switch (type) {
      case 'x':
      case 'g':
      case 'L':
      case 'K':
        return BeginExtended(type, hoff);
      case '0':
      case '\0':
      case '7':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
        return OnMember(type, format, hoff);
      case 'S':
        return Unsupported("tar: GNU sparse member" + At(hoff));
      case 'M':
        return Unsupported("tar: GNU multi-volume continuation member" + At(hoff));
      default:
        return Unsupported("tar: unsupported member type " + Quote(std::string(1, type)) +
                           " in header" + At(hoff));
    }
  }

  Result<int64_t> Numeric(Span f, const char* what, uint64_t hoff) const {
    auto v = ParseNumeric(Raw(block, f));
    if (!v) {
      return Corrupt(std::string("tar: bad ") + what + " field " + Quote(Raw(block, f)) +
                     " in header" + At(hoff));
    }
    return *v;
  }

  Result<uint64_t> HeaderSize(uint64_t hoff) const {
    int64_t size = IPFLY_TRY(Numeric(kSize, "size", hoff));
    if (size < 0) return Corrupt("tar: negative size in header" + At(hoff));
    return static_cast<uint64_t>(size);
  }

  Status BeginExtended(char type, uint64_t hoff) {
    const bool pending = pax || long_name || long_link;
    if (type == 'g' && pending) {
      return Corrupt("tar: global pax header" + At(hoff) +
                     " between an extended header and its member" + At(*member_start));
    }
    if ((type == 'x' && pax) || (type == 'L' && long_name) || (type == 'K' && long_link)) {
      return Corrupt(std::string("tar: second '") + type + "' header" + At(hoff) +
                     " for the member starting" + At(*member_start));
    }
    const uint64_t size = IPFLY_TRY(HeaderSize(hoff));
    if (size > kMaxExtendedSize) {
      return TooLarge(std::string("tar: '") + type + "' header" + At(hoff) + " holds " +
                      std::to_string(size) + " bytes (limit " + std::to_string(kMaxExtendedSize) +
                      ")");
    }
    ext_type = type;
    ext_header_offset = hoff;
    ext_size = size;
    ext_data.clear();
    state = State::kExtended;
    if (size == 0) return OnExtendedData();
    return OkStatus();
  }

  Status OnExtendedData() {
    const uint64_t hoff = ext_header_offset;
    SkipContent(hoff, ext_size, ext_size, "extended header");
    std::string data = std::move(ext_data);
    ext_data.clear();
    switch (ext_type) {
      case 'g':
        IPFLY_RETURN_IF_ERROR(ParsePax(data, /*global=*/true, hoff, nullptr));
        // A global header is not part of the next member.
        member_start.reset();
        return OkStatus();
      case 'x': {
        PaxOverrides p;
        IPFLY_RETURN_IF_ERROR(ParsePax(data, /*global=*/false, hoff, &p));
        pax = std::move(p);
        return OkStatus();
      }
      default: {  // 'L' / 'K'
        // The name is NUL-terminated and the block may be NUL-padded; a NUL inside the name
        // would be read differently by different tools.
        size_t end = data.find_last_not_of('\0');
        data.resize(end == std::string::npos ? 0 : end + 1);
        if (data.find('\0') != std::string::npos) {
          return Corrupt(std::string("tar: NUL inside the GNU long ") +
                         (ext_type == 'L' ? "name" : "link name") + " in header" + At(hoff));
        }
        if (data.empty()) {
          return Corrupt(std::string("tar: empty GNU long ") +
                         (ext_type == 'L' ? "name" : "link name") + " in header" + At(hoff));
        }
        (ext_type == 'L' ? long_name : long_link) = std::move(data);
        return OkStatus();
      }
    }
  }

  // Parses pax records "<len> <key>=<value>\n"; `out` null for a global header.
  Status ParsePax(std::string_view data, bool global, uint64_t hoff, PaxOverrides* out) const {
    const uint64_t base = hoff + kBlockSize;
    size_t pos = 0;
    while (pos < data.size()) {
      const std::string_view rest = data.substr(pos);
      const std::string where = " in pax record" + At(base + pos) + " of the header" + At(hoff);
      const size_t sp = rest.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp > 19) {
        return Corrupt("tar: bad length" + where);
      }
      auto len = ParseDecimal(rest.substr(0, sp), rest.size());
      if (!len || *len < sp + 3 || rest[*len - 1] != '\n') {
        return Corrupt("tar: bad length" + where);
      }
      const std::string_view kv = rest.substr(sp + 1, *len - sp - 2);
      const size_t eq = kv.find('=');
      if (eq == std::string_view::npos || eq == 0) return Corrupt("tar: no keyword" + where);
      const std::string_view key = kv.substr(0, eq), value = kv.substr(eq + 1);
      if (key.find('\0') != std::string_view::npos) return Corrupt("tar: NUL in keyword" + where);
      pos += *len;

      if (StartsWith(key, "GNU.sparse.")) {
        return Unsupported("tar: GNU sparse member (pax keyword " + Quote(key) + ")" + where);
      }
      if (global) {
        if (AffectsMembers(key)) {
          return Unsupported("tar: global pax keyword " + Quote(key) + where +
                             " (readers disagree on global headers)");
        }
        continue;
      }
      IPFLY_RETURN_IF_ERROR(ApplyPax(key, value, where, out));
    }
    return OkStatus();
  }

  static Status ApplyPax(std::string_view key, std::string_view value, const std::string& where,
                         PaxOverrides* p) {
    auto bad_value = [&] { return Corrupt("tar: bad value for " + Quote(key) + where); };
    auto id = [&](std::optional<uint32_t>* dst) -> Status {
      auto v = ParseDecimal(value, static_cast<uint64_t>(kMaxSize));
      if (!v) return bad_value();
      if (*v > std::numeric_limits<uint32_t>::max()) {
        return Unsupported("tar: " + Quote(key) + " " + std::to_string(*v) +
                           " does not fit 32 bits" + where);
      }
      *dst = static_cast<uint32_t>(*v);
      return OkStatus();
    };
    if (key == "path" || key == "linkpath") {
      if (value.find('\0') != std::string_view::npos) {
        return Corrupt("tar: NUL inside " + Quote(key) + where);
      }
      if (key == "path" && value.empty()) return Corrupt("tar: empty 'path'" + where);
      (key == "path" ? p->path : p->linkpath) = std::string(value);
    } else if (key == "size") {
      auto v = ParseDecimal(value, static_cast<uint64_t>(kMaxSize));
      if (!v) return bad_value();
      p->size = *v;
    } else if (key == "uid") {
      return id(&p->uid);
    } else if (key == "gid") {
      return id(&p->gid);
    } else if (key == "SCHILY.devmajor") {
      return id(&p->devmajor);
    } else if (key == "SCHILY.devminor") {
      return id(&p->devminor);
    } else if (key == "mtime") {
      auto t = ParsePaxTime(value);
      if (!t) return bad_value();
      p->mtime = *t;
    } else if (StartsWith(key, kSchilyXattr)) {
      std::string_view name = key.substr(kSchilyXattr.size());
      if (name.empty()) return Corrupt("tar: empty xattr name" + where);
      p->schily_xattrs[std::string(name)] = std::string(value);
    } else if (StartsWith(key, kLibarchiveXattr)) {
      auto name = UrlDecode(key.substr(kLibarchiveXattr.size()));
      if (!name || name->empty() || name->find('\0') != std::string::npos) {
        return Corrupt("tar: bad xattr name in " + Quote(key) + where);
      }
      auto v = Base64Decode(value);
      if (!v) return bad_value();
      p->libarchive_xattrs[*name] = std::move(*v);
    }
    // Everything else (uname, gname, atime, ctime, comment, charset, vendor keywords) does not
    // change what the member is.
    return OkStatus();
  }

  Status OnMember(char type, Format format, uint64_t hoff) {
    TarEntry e;
    e.header_offset = *member_start;
    e.data_offset = hoff + kBlockSize;

    // Name: GNU long name, pax path, or the header's (prefix/)name.
    std::string name;
    if (long_name && pax && pax->path) {
      return Unsupported("tar: member" + At(hoff) + " has both a GNU long name and a pax path");
    }
    if (long_name) {
      name = std::move(*long_name);
    } else if (pax && pax->path) {
      name = std::move(*pax->path);
    } else {
      name = std::string(CString(block, kName));
      if (format == Format::kUstar) {
        // star puts atime/ctime after a shorter prefix and marks it with "tar\0" at the end.
        const bool star = Raw(block, kStarTrailer) == std::string_view("tar\0", 4);
        std::string_view prefix = CString(block, star ? kStarPrefix : kPrefix);
        if (!prefix.empty()) name = std::string(prefix) + "/" + name;
      }
    }
    std::string link;
    if (long_link) {
      link = std::move(*long_link);
    } else if (pax && pax->linkpath) {
      link = std::move(*pax->linkpath);
    } else {
      link = std::string(CString(block, kLinkname));
    }

    const bool trailing_slash = !name.empty() && name.back() == '/';
    switch (type) {
      case '\0':
        e.type = trailing_slash ? EntryType::kDirectory : EntryType::kFile;
        break;
      case '0':
      case '7':
        if (trailing_slash) {
          return Corrupt("tar: regular file " + Quote(name) + " in header" + At(hoff) +
                         " has a directory name");
        }
        e.type = EntryType::kFile;
        break;
      case '1':
        e.type = EntryType::kHardlink;
        break;
      case '2':
        e.type = EntryType::kSymlink;
        break;
      case '3':
        e.type = EntryType::kCharDevice;
        break;
      case '4':
        e.type = EntryType::kBlockDevice;
        break;
      case '5':
        e.type = EntryType::kDirectory;
        break;
      default:
        e.type = EntryType::kFifo;
        break;
    }

    auto path = NormalizePath(name);
    if (!path) return Corrupt("tar: unsafe path " + Quote(name) + " in header" + At(hoff));
    e.path = std::move(*path);

    if (e.type == EntryType::kHardlink) {
      auto target = NormalizePath(link);
      if (!target || target->empty()) {
        return Corrupt("tar: unsafe hard-link target " + Quote(link) + " in header" + At(hoff));
      }
      e.link_target = std::move(*target);
    } else if (e.type == EntryType::kSymlink) {
      if (link.empty()) return Corrupt("tar: empty symlink target in header" + At(hoff));
      e.link_target = std::move(link);
    }

    const int64_t mode = IPFLY_TRY(Numeric(kMode, "mode", hoff));
    if (mode < 0) return Corrupt("tar: negative mode in header" + At(hoff));
    e.mode = static_cast<uint32_t>(mode & 07777);

    auto id = [&](Span f, const char* what,
                  const std::optional<uint32_t>& over) -> Result<uint32_t> {
      // The header field is validated even when pax overrides it, as Go's reader does.
      const int64_t v = IPFLY_TRY(Numeric(f, what, hoff));
      if (over) return *over;
      if (v < 0) return Corrupt(std::string("tar: negative ") + what + " in header" + At(hoff));
      if (v > std::numeric_limits<uint32_t>::max()) {
        return Unsupported(std::string("tar: ") + what + " " + std::to_string(v) +
                           " does not fit 32 bits in header" + At(hoff));
      }
      return static_cast<uint32_t>(v);
    };
    const std::optional<uint32_t> none;
    e.uid = IPFLY_TRY(id(kUid, "uid", pax ? pax->uid : none));
    e.gid = IPFLY_TRY(id(kGid, "gid", pax ? pax->gid : none));

    const int64_t mtime = IPFLY_TRY(Numeric(kMtime, "mtime", hoff));
    if (pax && pax->mtime) {
      e.mtime_sec = pax->mtime->sec;
      e.mtime_nsec = pax->mtime->nsec;
    } else {
      e.mtime_sec = mtime;
    }

    if (format != Format::kV7) {
      e.dev_major = IPFLY_TRY(id(kDevmajor, "devmajor", pax ? pax->devmajor : none));
      e.dev_minor = IPFLY_TRY(id(kDevminor, "devminor", pax ? pax->devminor : none));
    } else if (pax) {
      e.dev_major = pax->devmajor.value_or(0);
      e.dev_minor = pax->devminor.value_or(0);
    }
    if (e.type != EntryType::kCharDevice && e.type != EntryType::kBlockDevice) {
      e.dev_major = e.dev_minor = 0;
    }

    uint64_t size = IPFLY_TRY(HeaderSize(hoff));
    if (pax && pax->size) size = *pax->size;
    switch (e.type) {
      case EntryType::kFile:
        e.size = size;
        break;
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
      case EntryType::kFifo:
        size = 0;  // POSIX: no data records follow, whatever the field says.
        break;
      default:
        if (size != 0) {
          return Unsupported("tar: " + Quote(e.path) + " in header" + At(hoff) +
                             " is a link or directory with size " + std::to_string(size));
        }
        break;
    }
    if (size > static_cast<uint64_t>(kMaxSize) - e.data_offset - kBlockSize) {
      return Corrupt("tar: size " + std::to_string(size) + " in header" + At(hoff) +
                     " overflows the stream offset");
    }

    if (pax) {
      e.xattrs = std::move(pax->libarchive_xattrs);
      for (auto& [k, v] : pax->schily_xattrs) e.xattrs[k] = std::move(v);
    }

    member_start.reset();
    pax.reset();
    long_name.reset();
    long_link.reset();
    SkipContent(hoff, size, 0, Quote(e.path));
    return on_entry(std::move(e));
  }
};

TarParser::TarParser(EntryFn on_entry) : impl_(std::make_unique<Impl>()) {
  impl_->on_entry = std::move(on_entry);
}
TarParser::~TarParser() = default;

Status TarParser::Feed(ByteView chunk) { return impl_->Feed(chunk); }
Status TarParser::Finish() { return impl_->Finish(); }
uint64_t TarParser::offset() const { return impl_->offset; }
bool TarParser::at_end() const { return impl_->end_marker; }

}  // namespace ipfly::layer
