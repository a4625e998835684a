// TarParser against archives written by the real tools (GNU tar in every format, Python's tarfile,
// busybox tar) and against hand-made malformed headers. Every archive is parsed in several piece
// schedules (whole, 1 byte, odd sizes, random) that must all agree; entries are checked against
// the source tree (lstat, readlink, xattrs, the file's bytes at [data_offset, data_offset + size))
// or against what Python's tarfile was told to write.
#include "layer/tar.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "tests/support/process.h"

namespace ipfly::layer {
namespace {

namespace support = ipfly::testing;
using namespace std::string_literals;

const std::string& FixtureDir() {
  static const std::string dir = [] {
    std::string f = __FILE__;
    return f.substr(0, f.rfind('/')) + "/fixtures";
  }();
  return dir;
}

// Runs a shell script; a failing tool fails the test (never a skip).
std::string MustSh(const std::string& script) {
  auto r = support::Sh(script);
  EXPECT_EQ(r.exit_code, 0) << script << "\nstdout: " << r.out << "\nstderr: " << r.err;
  return r.out;
}

struct Outcome {
  bool ok = false;
  Errc code = Errc::kInternal;
  std::string message;
  std::vector<TarEntry> entries;
  bool at_end = false;
  uint64_t offset = 0;
};

// schedule: 0 = in one piece; > 0 = pieces of that size; < 0 = pseudo-random sizes seeded by it.
Outcome Parse(std::string_view data, int schedule) {
  Outcome o;
  TarParser p([&](TarEntry&& e) {
    o.entries.push_back(std::move(e));
    return OkStatus();
  });
  Status s;
  uint32_t seed = static_cast<uint32_t>(-schedule) * 2654435761u + 1;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t n = data.size() - pos;
    if (schedule > 0) {
      n = std::min<size_t>(n, static_cast<size_t>(schedule));
    } else if (schedule < 0) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (seed >> 8) % 1500);
    }
    s = p.Feed(AsBytes(data.substr(pos, n)));
    if (!s.ok()) break;
    pos += n;
  }
  if (s.ok()) s = p.Finish();
  o.ok = s.ok();
  if (!s.ok()) {
    o.code = s.error().code();
    o.message = s.error().message();
  }
  o.at_end = p.at_end();
  o.offset = p.offset();
  return o;
}

// Parses in every schedule, expects identical outcomes, returns the one-piece outcome. Every
// parser error names a stream offset.
Outcome ParseAllWays(std::string_view data) {
  Outcome whole = Parse(data, 0);
  if (!whole.ok) {
    EXPECT_NE(whole.message.find(" offset "), std::string::npos) << whole.message;
  }
  for (int schedule : {1, 7, 511, 512, 513, 4096, -1, -2, -3}) {
    Outcome o = Parse(data, schedule);
    EXPECT_EQ(o.ok, whole.ok) << "schedule " << schedule << ": " << o.message;
    EXPECT_EQ(o.code, whole.code) << "schedule " << schedule;
    EXPECT_EQ(o.message, whole.message) << "schedule " << schedule;
    EXPECT_TRUE(o.entries == whole.entries) << "schedule " << schedule;
    EXPECT_EQ(o.at_end, whole.at_end) << "schedule " << schedule;
    if (whole.ok) {
      EXPECT_EQ(o.offset, whole.offset) << "schedule " << schedule;
    }
  }
  return whole;
}

std::string Content(const std::string& tar, const TarEntry& e) {
  if (e.data_offset + e.size > tar.size()) return "<out of range>";
  return tar.substr(e.data_offset, e.size);
}

std::map<std::string, std::string> ListXattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  char names[4096];
  ssize_t n = llistxattr(path.c_str(), names, sizeof(names));
  for (ssize_t i = 0; i < n;) {
    std::string name(names + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    char value[4096];
    ssize_t v = lgetxattr(path.c_str(), name.c_str(), value, sizeof(value));
    if (v >= 0) out[name] = std::string(value, static_cast<size_t>(v));
  }
  return out;
}

struct TreeExpect {
  bool nsec = false;    // the format keeps sub-second mtimes
  bool xattrs = false;  // the archive carries xattrs
  bool root = true;     // the archive has an entry for the tree's root
};

// Every entry matches the source file it came from; every source file is in the archive once.
void ExpectMatchesTree(const std::string& src, const std::string& tar,
                       const std::vector<TarEntry>& entries, TreeExpect want) {
  std::map<std::string, const TarEntry*> seen;
  for (const TarEntry& e : entries) {
    SCOPED_TRACE("entry '" + e.path + "'");
    EXPECT_TRUE(seen.emplace(e.path, &e).second) << "duplicate";
    const std::string full = e.path.empty() ? src : src + "/" + e.path;
    struct stat st {};
    ASSERT_EQ(lstat(full.c_str(), &st), 0) << full;
    EXPECT_EQ(e.mode, st.st_mode & 07777);
    EXPECT_EQ(e.uid, st.st_uid);
    EXPECT_EQ(e.gid, st.st_gid);
    EXPECT_EQ(e.mtime_sec, st.st_mtim.tv_sec);
    EXPECT_EQ(e.mtime_nsec, want.nsec ? static_cast<uint32_t>(st.st_mtim.tv_nsec) : 0u);
    EXPECT_LT(e.header_offset, e.data_offset);
    EXPECT_EQ(e.data_offset % 512, 0u);
    if (S_ISREG(st.st_mode)) {
      if (e.type == EntryType::kHardlink) {
        // The first path of an inode carries the content, later ones link to it.
        auto target = seen.find(e.link_target);
        ASSERT_NE(target, seen.end()) << "hard link to an earlier member: " << e.link_target;
        EXPECT_EQ(target->second->type, EntryType::kFile);
        struct stat tst {};
        ASSERT_EQ(lstat((src + "/" + e.link_target).c_str(), &tst), 0);
        EXPECT_EQ(tst.st_ino, st.st_ino);
        EXPECT_EQ(e.size, 0u);
      } else {
        EXPECT_EQ(e.type, EntryType::kFile);
        EXPECT_EQ(e.size, static_cast<uint64_t>(st.st_size));
        EXPECT_TRUE(Content(tar, e) == support::ReadFile(full)) << "content differs";
      }
    } else if (S_ISDIR(st.st_mode)) {
      EXPECT_EQ(e.type, EntryType::kDirectory);
    } else if (S_ISLNK(st.st_mode)) {
      EXPECT_EQ(e.type, EntryType::kSymlink);
      EXPECT_EQ(e.link_target, std::filesystem::read_symlink(full).string());
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      EXPECT_EQ(e.type, S_ISCHR(st.st_mode) ? EntryType::kCharDevice : EntryType::kBlockDevice);
      EXPECT_EQ(e.dev_major, major(st.st_rdev));
      EXPECT_EQ(e.dev_minor, minor(st.st_rdev));
    } else if (S_ISFIFO(st.st_mode)) {
      EXPECT_EQ(e.type, EntryType::kFifo);
    } else {
      ADD_FAILURE() << "unexpected file type";
    }
    if (e.type != EntryType::kFile) {
      EXPECT_EQ(e.size, 0u);
    }
    if (e.type != EntryType::kHardlink && e.type != EntryType::kSymlink) {
      EXPECT_EQ(e.link_target, "");
    }
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
      EXPECT_EQ(e.dev_major, 0u);
      EXPECT_EQ(e.dev_minor, 0u);
    }
    if (want.xattrs && e.type != EntryType::kHardlink) {
      EXPECT_EQ(e.xattrs, ListXattrs(full));
    } else {
      EXPECT_TRUE(e.xattrs.empty());
    }
  }
  std::set<std::string> on_disk;
  if (want.root) on_disk.insert("");
  for (const auto& f : std::filesystem::recursive_directory_iterator(src)) {
    on_disk.insert(f.path().lexically_relative(src).string());
  }
  std::set<std::string> in_tar;
  for (const auto& [path, e] : seen) in_tar.insert(path);
  EXPECT_EQ(in_tar, on_disk);
}

// --- Real tools over a real tree ----------------------------------------------------------------

struct ToolCase {
  std::string name;
  std::string features;  // for make_tree.sh
  std::string create;    // shell command; $SRC and $OUT are set
  TreeExpect want;
};

void PrintTo(const ToolCase& c, std::ostream* os) { *os << c.name; }

class ToolArchive : public ::testing::TestWithParam<ToolCase> {};

TEST_P(ToolArchive, EntriesMatchTheSourceTree) {
  const ToolCase& c = GetParam();
  support::TempDir tmp;
  const std::string src = tmp / "src", out = tmp / "out.tar";
  MustSh("bash " + FixtureDir() + "/make_tree.sh " + src + " " + c.features);
  MustSh("SRC=" + src + " OUT=" + out + "; " + c.create);
  const std::string tar = support::ReadFile(out);
  ASSERT_GT(tar.size(), 1024u);

  Outcome o = ParseAllWays(tar);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_TRUE(o.at_end);
  EXPECT_EQ(o.offset, tar.size());
  ExpectMatchesTree(src, tar, o.entries, c.want);
  // The parser and GNU tar agree on the member list and order.
  std::string listing = MustSh("tar --quoting-style=literal -tf " + out);
  std::vector<std::string> names;
  for (size_t p = 0; p < listing.size();) {
    size_t nl = listing.find('\n', p);
    std::string n = listing.substr(p, nl - p);
    p = nl + 1;
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    if (n.rfind("./", 0) == 0) n = n.substr(2);
    if (n == "." || n == "./") n = "";
    names.push_back(n);
  }
  ASSERT_EQ(names.size(), o.entries.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(o.entries[i].path, names[i]);
}

INSTANTIATE_TEST_SUITE_P(
    Tools, ToolArchive,
    ::testing::Values(
        ToolCase{"gnu", "devices long bigids", "tar --format=gnu -cf $OUT -C $SRC .", {}},
        ToolCase{"posix",
                 "devices long bigids",
                 "tar --format=posix -cf $OUT -C $SRC .",
                 {.nsec = true}},
        ToolCase{"posix_xattrs",
                 "devices xattrs",
                 "tar --format=posix --xattrs --xattrs-include='*' -cf $OUT -C $SRC .",
                 {.nsec = true, .xattrs = true}},
        ToolCase{"ustar", "devices", "tar --format=ustar -cf $OUT -C $SRC .", {}},
        ToolCase{"v7", "", "tar --format=v7 -cf $OUT -C $SRC .", {}},
        ToolCase{"oldgnu", "devices long", "tar --format=oldgnu -cf $OUT -C $SRC .", {}},
        ToolCase{"no_dot_prefix",
                 "devices long",
                 "cd $SRC && tar --format=gnu -cf $OUT $(ls -A)",
                 {.root = false}},
        ToolCase{"busybox", "devices long", "cd $SRC && busybox tar -cf $OUT .", {}}),
    [](const ::testing::TestParamInfo<ToolCase>& i) { return i.param.name; });

TEST(TarParser, AbsolutePathsAreMadeRelative) {
  support::TempDir tmp;
  const std::string src = tmp / "src";
  MustSh("bash " + FixtureDir() + "/make_tree.sh " + src);
  MustSh("tar -P --format=gnu -cf " + tmp / "abs.tar" + " " + src + "/small.txt " + src + "/dir");
  const std::string tar = support::ReadFile(tmp / "abs.tar");
  Outcome o = ParseAllWays(tar);
  ASSERT_TRUE(o.ok) << o.message;
  const std::string rel = src.substr(1);
  ASSERT_GE(o.entries.size(), 3u);
  EXPECT_EQ(o.entries[0].path, rel + "/small.txt");
  EXPECT_EQ(Content(tar, o.entries[0]), "hello\n");
  EXPECT_EQ(o.entries[1].path, rel + "/dir");
  EXPECT_EQ(o.entries[1].type, EntryType::kDirectory);
}

TEST(TarParser, TrailingGarbageAndMissingTrailer) {
  support::TempDir tmp;
  const std::string src = tmp / "src";
  MustSh("bash " + FixtureDir() + "/make_tree.sh " + src);
  MustSh("tar --format=posix -cf " + tmp / "a.tar" + " -C " + src + " .");
  const std::string tar = support::ReadFile(tmp / "a.tar");
  Outcome base = ParseAllWays(tar);
  ASSERT_TRUE(base.ok) << base.message;
  const TarEntry& last = base.entries.back();
  const uint64_t end = last.data_offset + (last.size + 511) / 512 * 512;

  // Anything after the two zero blocks is ignored, however it looks.
  Outcome garbage = ParseAllWays(tar.substr(0, end + 1024) + "garbage that is no tar header" +
                                 std::string(3000, '\x7f'));
  ASSERT_TRUE(garbage.ok) << garbage.message;
  EXPECT_TRUE(garbage.at_end);
  EXPECT_TRUE(garbage.entries == base.entries);

  // No trailer at all, or a single zero block: a clean end, but no end marker.
  for (uint64_t cut : {end, end + 512}) {
    Outcome o = ParseAllWays(tar.substr(0, cut));
    ASSERT_TRUE(o.ok) << o.message;
    EXPECT_FALSE(o.at_end);
    EXPECT_TRUE(o.entries == base.entries);
  }
  // A lone zero block followed by a header: GNU tar and Go disagree, so it is refused.
  std::string lone = tar.substr(0, end) + std::string(512, '\0') + tar.substr(0, end);
  Outcome o = ParseAllWays(lone);
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.code, Errc::kCorrupt);
  EXPECT_NE(o.message.find("offset " + std::to_string(end)), std::string::npos) << o.message;
}

// Cuts an archive at every position: only member boundaries (and the trailer's) are clean ends;
// everything else is kCorrupt naming the header that was cut.
void ExpectTruncationsDetected(const std::string& tar) {
  Outcome base = Parse(tar, 0);
  ASSERT_TRUE(base.ok) << base.message;
  struct Span {
    uint64_t begin, end;
    std::vector<uint64_t> headers;  // offsets an error message may name
  };
  std::vector<Span> spans;
  for (const TarEntry& e : base.entries) {
    spans.push_back({e.header_offset,
                     e.data_offset + (e.size + 511) / 512 * 512,
                     {e.header_offset, e.data_offset - 512}});
  }
  const uint64_t end = spans.back().end;
  spans.push_back({end, end + 512, {end}});
  spans.push_back({end + 512, end + 1024, {end + 512}});
  for (uint64_t cut = 0; cut <= tar.size(); ++cut) {
    Outcome o =
        Parse(std::string_view(tar).substr(0, cut), cut % 3 == 0 ? 0 : -static_cast<int>(cut));
    const Span* inside = nullptr;
    for (const Span& s : spans) {
      if (cut > s.begin && cut < s.end) inside = &s;
    }
    if (inside == nullptr) {
      EXPECT_TRUE(o.ok) << "cut at " << cut << ": " << o.message;
      continue;
    }
    ASSERT_FALSE(o.ok) << "cut at " << cut;
    EXPECT_EQ(o.code, Errc::kCorrupt) << o.message;
    bool names_header = false;
    for (uint64_t h : inside->headers) {
      names_header |= o.message.find("offset " + std::to_string(h)) != std::string::npos;
    }
    EXPECT_TRUE(names_header) << "cut at " << cut << ": " << o.message;
  }
}

TEST(TarParser, TruncationAnywhereIsDetected) {
  support::TempDir tmp;
  MustSh("cd " + tmp.path() + " && mkdir s && cd s && printf hello > a && head -c 1300 " +
         "/dev/urandom > b && : > c && ln -s a l && mkdir d && printf x > d/" +
         std::string(120, 'n') + " && touch -d @1700000000.5 a");
  MustSh("tar --format=posix -cf " + tmp / "posix.tar" + " -C " + tmp / "s" + " .");
  MustSh("tar --format=gnu -cf " + tmp / "gnu.tar" + " -C " + tmp / "s" + " .");
  ExpectTruncationsDetected(support::ReadFile(tmp / "posix.tar"));
  ExpectTruncationsDetected(support::ReadFile(tmp / "gnu.tar"));
}

TEST(TarParser, CorruptChecksumNamesTheHeader) {
  support::TempDir tmp;
  const std::string src = tmp / "src";
  MustSh("bash " + FixtureDir() + "/make_tree.sh " + src + " long");
  MustSh("tar --format=gnu -cf " + tmp / "a.tar" + " -C " + src + " .");
  const std::string tar = support::ReadFile(tmp / "a.tar");
  Outcome base = Parse(tar, 0);
  ASSERT_TRUE(base.ok) << base.message;
  for (size_t i = 0; i < base.entries.size(); i += 3) {
    const uint64_t hoff = base.entries[i].data_offset - 512;
    for (size_t field : {0, 100, 124, 150, 156, 200, 300, 511}) {
      std::string bad = tar;
      bad[hoff + field] = static_cast<char>(bad[hoff + field] ^ 0x01);
      Outcome o = Parse(bad, -static_cast<int>(field) - 1);
      ASSERT_FALSE(o.ok);
      EXPECT_EQ(o.code, Errc::kCorrupt);
      EXPECT_NE(o.message.find("offset " + std::to_string(hoff)), std::string::npos) << o.message;
      EXPECT_TRUE(std::equal(o.entries.begin(), o.entries.end(), base.entries.begin()));
      EXPECT_EQ(o.entries.size(), i);
    }
  }
}

TEST(TarParser, GnuSparseIsUnsupported) {
  support::TempDir tmp;
  MustSh("cd " + tmp.path() + " && truncate -s 1M sparse && printf x | dd of=sparse bs=1 " +
         "seek=600000 conv=notrunc status=none && printf a > a");
  for (std::string opts :
       {"--format=gnu", "--format=posix --sparse-version=0.0",
        "--format=posix --sparse-version=0.1", "--format=posix --sparse-version=1.0"}) {
    SCOPED_TRACE(opts);
    MustSh("cd " + tmp.path() + " && tar " + opts + " -S -cf s.tar a sparse");
    Outcome o = ParseAllWays(support::ReadFile(tmp / "s.tar"));
    ASSERT_FALSE(o.ok);
    EXPECT_EQ(o.code, Errc::kUnsupported) << o.message;
    ASSERT_EQ(o.entries.size(), 1u);
    const uint64_t next = o.entries[0].data_offset + 512;
    EXPECT_NE(o.message.find("offset " + std::to_string(next)), std::string::npos) << o.message;
  }
}

TEST(TarParser, GnuVolumeLabelIsUnsupported) {
  support::TempDir tmp;
  MustSh("cd " + tmp.path() + " && printf a > a && tar --format=gnu -V label -cf v.tar a");
  Outcome o = ParseAllWays(support::ReadFile(tmp / "v.tar"));
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.code, Errc::kUnsupported);
  EXPECT_NE(o.message.find("offset 0"), std::string::npos) << o.message;
}

// --- Python's tarfile --------------------------------------------------------------------------

std::string Unhex(const std::string& hex) {
  Bytes b;
  EXPECT_TRUE(HexDecode(hex, &b)) << hex;
  return std::string(b.begin(), b.end());
}

EntryType TypeFromName(const std::string& t) {
  static const std::map<std::string, EntryType> kTypes = {
      {"file", EntryType::kFile},       {"dir", EntryType::kDirectory},
      {"symlink", EntryType::kSymlink}, {"hardlink", EntryType::kHardlink},
      {"char", EntryType::kCharDevice}, {"block", EntryType::kBlockDevice},
      {"fifo", EntryType::kFifo}};
  return kTypes.at(t);
}

// Writes the archive for `case_name`; returns its bytes and fills `expected` from the script.
std::string PythonArchive(const support::TempDir& tmp, const std::string& case_name,
                          nlohmann::json* expected) {
  const std::string out = tmp / (case_name + ".tar");
  auto r = support::RunCmd({"/usr/bin/python3", FixtureDir() + "/make_pytar.py", out, case_name});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  *expected = nlohmann::json::parse(r.out);
  return support::ReadFile(out);
}

class PythonTarfile : public ::testing::TestWithParam<std::string> {};

TEST_P(PythonTarfile, EntriesMatchWhatTarfileWasGiven) {
  support::TempDir tmp;
  nlohmann::json expected;
  const std::string tar = PythonArchive(tmp, GetParam(), &expected);
  Outcome o = ParseAllWays(tar);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_TRUE(o.at_end);
  ASSERT_EQ(o.entries.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& x = expected[i];
    const TarEntry& e = o.entries[i];
    SCOPED_TRACE("entry " + std::to_string(i) + " '" + e.path + "'");
    EXPECT_EQ(e.path, Unhex(x["path"]));
    EXPECT_EQ(e.type, TypeFromName(x["type"]));
    EXPECT_EQ(e.mode, x["mode"].get<uint32_t>());
    EXPECT_EQ(e.uid, x["uid"].get<uint32_t>());
    EXPECT_EQ(e.gid, x["gid"].get<uint32_t>());
    EXPECT_EQ(e.mtime_sec, x["mtime_sec"].get<int64_t>());
    EXPECT_EQ(e.mtime_nsec, x["mtime_nsec"].get<uint32_t>());
    EXPECT_EQ(e.size, x["size"].get<uint64_t>());
    EXPECT_EQ(e.link_target, Unhex(x["link"]));
    EXPECT_EQ(e.dev_major, x["dev_major"].get<uint32_t>());
    EXPECT_EQ(e.dev_minor, x["dev_minor"].get<uint32_t>());
    EXPECT_EQ(Content(tar, e), Unhex(x["content"]));
    std::map<std::string, std::string> xattrs;
    for (const auto& [k, v] : x["xattrs"].items()) xattrs[Unhex(k)] = Unhex(v);
    EXPECT_EQ(e.xattrs, xattrs);
    if (i > 0) {
      EXPECT_GE(e.header_offset, o.entries[i - 1].data_offset + o.entries[i - 1].size);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, PythonTarfile,
                         ::testing::Values("pax", "gnu", "ustar", "global-comment"));

struct RejectCase {
  std::string name;
  Errc code;
};
void PrintTo(const RejectCase& c, std::ostream* os) { *os << c.name; }

class PythonRejects : public ::testing::TestWithParam<RejectCase> {};

TEST_P(PythonRejects, BadMemberIsRefusedWithItsOffset) {
  support::TempDir tmp;
  nlohmann::json expected;
  const std::string tar = PythonArchive(tmp, GetParam().name, &expected);
  Outcome o = ParseAllWays(tar);
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.code, GetParam().code) << o.message;
  // Every case but the global header has one good member ("before", 1 block of content) first.
  const uint64_t bad_at = GetParam().name == "global-uid" ? 0 : 1024;
  EXPECT_EQ(o.entries.size(), bad_at == 0 ? 0u : 1u);
  EXPECT_NE(o.message.find("offset " + std::to_string(bad_at)), std::string::npos) << o.message;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PythonRejects,
    ::testing::Values(
        RejectCase{"dotdot", Errc::kCorrupt}, RejectCase{"dotdot-inner", Errc::kCorrupt},
        RejectCase{"dotdot-last", Errc::kCorrupt}, RejectCase{"hard-dotdot", Errc::kCorrupt},
        RejectCase{"hard-root", Errc::kCorrupt}, RejectCase{"pax-nul-path", Errc::kCorrupt},
        RejectCase{"pax-nul-link", Errc::kCorrupt}, RejectCase{"gnu-nul-name", Errc::kCorrupt},
        RejectCase{"huge-pax", Errc::kTooLarge}, RejectCase{"bad-mtime", Errc::kCorrupt},
        RejectCase{"bad-uid", Errc::kCorrupt}, RejectCase{"uid-too-big", Errc::kUnsupported},
        RejectCase{"empty-path", Errc::kCorrupt}, RejectCase{"sparse-key", Errc::kUnsupported},
        RejectCase{"global-uid", Errc::kUnsupported}),
    [](const ::testing::TestParamInfo<RejectCase>& i) {
      std::string n = i.param.name;
      for (char& c : n) {
        if (c == '-') c = '_';
      }
      return n;
    });

// --- Hand-made headers -------------------------------------------------------------------------

struct Hdr {
  std::string name = "file";
  char type = '0';
  uint64_t size = 0;
  std::string linkname;
  std::string magic = std::string("ustar\00000", 8);
  std::string prefix;
  std::map<size_t, std::string> raw;  // bytes written last, at these offsets
  bool signed_checksum = false;
};

std::string Octal(uint64_t v, int digits) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%0*llo", digits, static_cast<unsigned long long>(v));
  return buf;
}

std::string HeaderBlock(const Hdr& h) {
  std::string b(512, '\0');
  auto put = [&](size_t off, const std::string& s) { b.replace(off, s.size(), s); };
  put(0, h.name.substr(0, 100));
  put(100, "0000644");
  put(108, "0001750");
  put(116, "0001750");
  put(124, Octal(h.size, 11));
  put(136, Octal(1700000000, 11));
  b[156] = h.type;
  put(157, h.linkname);
  put(257, h.magic);
  put(345, h.prefix);
  for (const auto& [off, s] : h.raw) put(off, s);
  b.replace(148, 8, 8, ' ');
  int64_t sum = 0;
  for (char c : b) {
    sum += h.signed_checksum ? static_cast<int64_t>(static_cast<signed char>(c))
                             : static_cast<int64_t>(static_cast<unsigned char>(c));
  }
  put(148, Octal(static_cast<uint64_t>(sum), 6));
  b[154] = '\0';
  return b;
}

std::string Member(const Hdr& h, const std::string& content = "") {
  std::string m = HeaderBlock(h) + content;
  m.resize((m.size() + 511) / 512 * 512, '\0');
  return m;
}

std::string File(const std::string& name, const std::string& content) {
  Hdr h;
  h.name = name;
  h.size = content.size();
  return Member(h, content);
}

std::string PaxRecord(const std::string& key, const std::string& value) {
  const std::string body = " " + key + "=" + value + "\n";
  size_t len = body.size() + 1;
  while (std::to_string(len).size() + body.size() != len) ++len;
  return std::to_string(len) + body;
}

std::string Extended(char type, const std::string& data) {
  Hdr h;
  h.name = "././@Extended";
  h.type = type;
  h.size = data.size();
  return Member(h, data);
}

const std::string kTrailer(1024, '\0');

Outcome ExpectFails(const std::string& tar, Errc code, uint64_t header_offset) {
  Outcome o = ParseAllWays(tar);
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.code, code) << o.message;
  EXPECT_NE(o.message.find("offset " + std::to_string(header_offset)), std::string::npos)
      << o.message;
  return o;
}

TEST(TarParser, EmptyInputIsAnEmptyArchive) {
  Outcome o = ParseAllWays("");
  EXPECT_TRUE(o.ok);
  EXPECT_TRUE(o.entries.empty());
  o = ParseAllWays(kTrailer);
  EXPECT_TRUE(o.ok);
  EXPECT_TRUE(o.at_end);
}

TEST(TarParser, NumericFieldVariants) {
  Hdr h;
  h.size = 3;
  h.raw[100] = "   644 ";                                            // blank padded on both sides
  h.raw[108] = std::string(8, '\0');                                 // all NUL: 0
  h.raw[116] = "\x80\0\0\0\0\x2d\xc6\xc0"s;                          // base-256: 3000000
  h.raw[136] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe"s;  // base-256: -2
  Outcome o = ParseAllWays(Member(h, "abc") + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  ASSERT_EQ(o.entries.size(), 1u);
  EXPECT_EQ(o.entries[0].mode, 0644u);
  EXPECT_EQ(o.entries[0].uid, 0u);
  EXPECT_EQ(o.entries[0].gid, 3000000u);
  EXPECT_EQ(o.entries[0].mtime_sec, -2);
  EXPECT_EQ(o.entries[0].size, 3u);
}

TEST(TarParser, BadNumericFieldsAreCorrupt) {
  const std::string first = File("first", "1");
  const uint64_t at = first.size();
  for (auto [off, value] : std::vector<std::pair<size_t, std::string>>{
           {100, "0000x44"},                        // mode
           {108, "00 1750"},                        // uid with an inner blank
           {116, "9"},                              // gid
           {124, "0000000001 9"},                   // size
           {136, "-1700000000"},                    // mtime
           {329, "0000008"},                        // devmajor
           {124, "\xc0\0\0\0\0\0\0\0\0\0\0\x01"s},  // base-256 negative size
           {124, "\x80\x80\0\0\0\0\0\0\0\0\0\0"s},  // base-256 size over 2^63
           {108, "\x80\0\0\x01\0\0\0\0"s},          // uid over 32 bits: unsupported
           {148, "12345x"}}) {                      // checksum field itself
    SCOPED_TRACE(off);
    Hdr h;
    h.raw[off] = value;
    std::string tar = first + Member(h) + kTrailer;
    if (off == 148) tar[at + 148] = 'x';
    Outcome o = ExpectFails(
        tar, off == 108 && value[0] == '\x80' ? Errc::kUnsupported : Errc::kCorrupt, at);
    EXPECT_EQ(o.entries.size(), 1u);
  }
}

TEST(TarParser, SignedChecksumIsAccepted) {
  Hdr h;
  h.name = "caf\xc3\xa9";  // bytes >= 0x80 make the signed and unsigned sums differ
  h.signed_checksum = true;
  Outcome o = ParseAllWays(Member(h) + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_EQ(o.entries.at(0).path, "caf\xc3\xa9");
}

TEST(TarParser, PathNormalisation) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"/etc/x", "etc/x"},
                                                                  {"./a", "a"},
                                                                  {"//a//b/", "a/b"},
                                                                  {"a/./b/.", "a/b"},
                                                                  {"/", ""},
                                                                  {"./", ""},
                                                                  {".", ""},
                                                                  {"./././", ""},
                                                                  {".wh..wh..opq", ".wh..wh..opq"},
                                                                  {"..a/b..", "..a/b.."}};
  for (const auto& [in, want] : cases) {
    SCOPED_TRACE(in);
    Hdr h;
    h.name = in;
    h.type = '5';
    Outcome o = ParseAllWays(Member(h) + kTrailer);
    ASSERT_TRUE(o.ok) << o.message;
    EXPECT_EQ(o.entries.at(0).path, want);
  }
  for (std::string bad : {"..", "../a", "a/../b", "a/..", ""}) {
    SCOPED_TRACE(bad);
    Hdr h;
    h.name = bad;
    ExpectFails(File("ok", "") + Member(h) + kTrailer, Errc::kCorrupt, 512);
  }
}

TEST(TarParser, UstarAndStarPrefixes) {
  Hdr h;
  h.name = "name";
  h.prefix = "some/prefix";
  Hdr star = h;
  star.prefix = std::string(131, 'p');
  star.raw[345 + 131] = "12345670123";  // star's atime, after its shorter prefix
  star.raw[508] = std::string("tar\0", 4);
  Hdr gnu = h;
  gnu.magic = std::string("ustar  \0", 8);  // GNU: those bytes are atime/ctime, not a prefix
  Hdr v7 = h;
  v7.magic = std::string(8, '\0');
  Outcome o = ParseAllWays(Member(h) + Member(star) + Member(gnu) + Member(v7) + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  ASSERT_EQ(o.entries.size(), 4u);
  EXPECT_EQ(o.entries[0].path, "some/prefix/name");
  EXPECT_EQ(o.entries[1].path, std::string(131, 'p') + "/name");
  EXPECT_EQ(o.entries[2].path, "name");
  EXPECT_EQ(o.entries[3].path, "name");
}

TEST(TarParser, TypeflagSemantics) {
  Hdr v7dir;
  v7dir.type = '\0';
  v7dir.name = "olddir/";
  Hdr fifo;  // devices and FIFOs never have content, whatever the size field says
  fifo.type = '6';
  fifo.name = "fifo";
  fifo.size = 700;
  Hdr chr = fifo;
  chr.type = '3';
  chr.name = "chr";
  chr.raw[329] = "0000004";
  chr.raw[337] = "0000100";
  Hdr cont;
  cont.type = '7';
  cont.name = "contiguous";
  cont.size = 2;
  Outcome o = ParseAllWays(Member(v7dir) + HeaderBlock(fifo) + HeaderBlock(chr) +
                           Member(cont, "ok") + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  ASSERT_EQ(o.entries.size(), 4u);
  EXPECT_EQ(o.entries[0].type, EntryType::kDirectory);
  EXPECT_EQ(o.entries[0].path, "olddir");
  EXPECT_EQ(o.entries[1].type, EntryType::kFifo);
  EXPECT_EQ(o.entries[1].size, 0u);
  EXPECT_EQ(o.entries[2].type, EntryType::kCharDevice);
  EXPECT_EQ(o.entries[2].dev_major, 4u);
  EXPECT_EQ(o.entries[2].dev_minor, 64u);
  EXPECT_EQ(o.entries[3].type, EntryType::kFile);
  EXPECT_EQ(o.entries[3].data_offset, 2048u);

  Hdr slash_file;
  slash_file.name = "notadir/";
  ExpectFails(Member(slash_file) + kTrailer, Errc::kCorrupt, 0);
  for (char t : {'1', '2', '5'}) {
    Hdr h;
    h.type = t;
    h.linkname = "target";
    h.size = 10;
    ExpectFails(Member(h, "0123456789") + kTrailer, Errc::kUnsupported, 0);
  }
  for (char t : {'S', 'M', 'V', 'D', 'N', 'A', 'z'}) {
    Hdr h;
    h.type = t;
    ExpectFails(File("a", "a") + Member(h) + kTrailer, Errc::kUnsupported, 1024);
  }
  Hdr empty_symlink;
  empty_symlink.type = '2';
  ExpectFails(Member(empty_symlink) + kTrailer, Errc::kCorrupt, 0);
}

TEST(TarParser, PaxRecordSyntax) {
  // A good header for reference: the file gets the pax path and mtime.
  const std::string good = PaxRecord("path", "from/pax") + PaxRecord("mtime", "5.000000001");
  Outcome o = ParseAllWays(Extended('x', good) + File("short", "data") + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_EQ(o.entries.at(0).path, "from/pax");
  EXPECT_EQ(o.entries[0].mtime_sec, 5);
  EXPECT_EQ(o.entries[0].mtime_nsec, 1u);
  EXPECT_EQ(o.entries[0].header_offset, 0u);
  EXPECT_EQ(o.entries[0].data_offset, 1536u);
  EXPECT_EQ(Content(Extended('x', good) + File("short", "data"), o.entries[0]), "data");

  for (std::string bad : {
           "12 path=ab\n"s,                             // length one too long
           "10 path=ab\n"s,                             // one too short
           "x1 path=ab\n"s,                             // not a number
           "11path=ab\n\n"s,                            // no space
           " 11 path=ab\n"s,                            // leading space
           "11 pathxab\n"s,                             // no '='
           "7 =ab\n\n"s,                                // empty keyword
           "11 path=ab "s,                              // no newline
           good + "\0\0\0"s,                            // padding after the records
           good + "99999999999999999999999 a=b\n",      // absurd length
           PaxRecord("mtime", "1.x"),                   // bad time
           PaxRecord("mtime", ".5"),                    // no seconds
           PaxRecord("size", "-5000"),                  // negative size
           PaxRecord("uid", "0x10"),                    // not decimal
           PaxRecord("gid", ""),                        // empty number
           PaxRecord("SCHILY.xattr.", "v"),             // empty xattr name
           PaxRecord("LIBARCHIVE.xattr.user.a", "**"),  // bad base64
           PaxRecord("LIBARCHIVE.xattr.user%4", "YQ"),  // bad %-escape
       }) {
    SCOPED_TRACE(bad);
    ExpectFails(File("first", "") + Extended('x', bad) + File("f", "") + kTrailer, Errc::kCorrupt,
                512);
  }
}

TEST(TarParser, ExtendedHeaderSequencing) {
  const std::string x = Extended('x', PaxRecord("mtime", "1"));
  const std::string l = Extended('L', "long/name");
  const std::string k = Extended('K', "long/target");
  const std::string f = File("f", "");
  // Not followed by a member: end of input, or the end marker.
  ExpectFails(f + x, Errc::kCorrupt, 512);
  ExpectFails(f + x + kTrailer, Errc::kCorrupt, 512);
  ExpectFails(f + l, Errc::kCorrupt, 512);
  // Two of a kind for one member.
  ExpectFails(f + x + x + f + kTrailer, Errc::kCorrupt, 512 + 1024);
  ExpectFails(f + l + l + f + kTrailer, Errc::kCorrupt, 512 + 1024);
  // A pax path and a GNU long name both naming one member.
  ExpectFails(f + Extended('x', PaxRecord("path", "p")) + l + f + kTrailer, Errc::kUnsupported,
              512 + 2048);
  // A global header between an extended header and its member.
  ExpectFails(f + x + Extended('g', PaxRecord("comment", "c")) + f + kTrailer, Errc::kCorrupt,
              512 + 1024);
  // Mixed GNU and pax headers otherwise combine; header_offset is the first of them.
  Hdr link;
  link.type = '2';
  link.name = "short";
  link.linkname = "short-target";
  Outcome o = ParseAllWays(f + l + x + k + Member(link) + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  ASSERT_EQ(o.entries.size(), 2u);
  EXPECT_EQ(o.entries[1].path, "long/name");
  EXPECT_EQ(o.entries[1].link_target, "long/target");
  EXPECT_EQ(o.entries[1].mtime_sec, 1);
  EXPECT_EQ(o.entries[1].header_offset, 512u);
  EXPECT_EQ(o.entries[1].data_offset, 512u + 7 * 512);
  // A GNU long name keeps its bytes; trailing NULs are padding.
  o = ParseAllWays(Extended('L', std::string("x/y\0\0\0", 6)) + f + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_EQ(o.entries.at(0).path, "x/y");
  ExpectFails(Extended('L', std::string("\0\0", 2)) + f + kTrailer, Errc::kCorrupt, 0);
}

TEST(TarParser, PaxValuesAndOverrides) {
  std::string recs = PaxRecord("size", "3") + PaxRecord("uid", "4294967295") +
                     PaxRecord("gid", "77") + PaxRecord("mtime", "-0.5") +
                     PaxRecord("SCHILY.devmajor", "3000000") + PaxRecord("SCHILY.devminor", "5") +
                     PaxRecord("hdrcharset", "BINARY") +
                     PaxRecord("SCHILY.xattr.user.x", std::string("\0\xff", 2)) +
                     PaxRecord("mtime", "10.25");  // the last record of a key wins
  Hdr h;
  h.name = "f";
  h.size = 999999;  // pax size overrides
  Outcome o = ParseAllWays(Extended('x', recs) + Member(h, "abc") + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  const TarEntry& e = o.entries.at(0);
  EXPECT_EQ(e.size, 3u);
  EXPECT_EQ(e.uid, 4294967295u);
  EXPECT_EQ(e.gid, 77u);
  EXPECT_EQ(e.mtime_sec, 10);
  EXPECT_EQ(e.mtime_nsec, 250000000u);
  EXPECT_EQ(e.dev_major, 0u);  // only devices keep device numbers
  EXPECT_EQ(e.xattrs.at("user.x"), std::string("\0\xff", 2));

  h.type = '4';
  h.size = 0;
  o = ParseAllWays(
      Extended('x', PaxRecord("SCHILY.devmajor", "3000000") + PaxRecord("mtime", "-0.5")) +
      Member(h) + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_EQ(o.entries.at(0).dev_major, 3000000u);
  EXPECT_EQ(o.entries[0].mtime_sec, -1);
  EXPECT_EQ(o.entries[0].mtime_nsec, 500000000u);

  // Global headers: harmless keywords are skipped, member-changing ones refused.
  o = ParseAllWays(Extended('g', PaxRecord("comment", "git sha")) + File("a", "a") + kTrailer);
  ASSERT_TRUE(o.ok) << o.message;
  EXPECT_EQ(o.entries.at(0).header_offset, 1024u);
  for (std::string key : {"path", "mtime", "SCHILY.xattr.user.a", "LIBARCHIVE.xattr.user.a"}) {
    ExpectFails(File("a", "") + Extended('g', PaxRecord(key, "1")) + kTrailer, Errc::kUnsupported,
                512);
  }
}

TEST(TarParser, CallbackErrorStopsParsing) {
  int calls = 0;
  TarParser p([&](TarEntry&&) -> Status {
    if (++calls == 2) return Internal("stop here");
    return OkStatus();
  });
  const std::string tar = File("a", "a") + File("b", "b") + File("c", "c") + kTrailer;
  Status s = p.Feed(AsBytes(tar));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "stop here");
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(p.Feed(AsBytes(tar)).ok());
  EXPECT_FALSE(p.Finish().ok());
  EXPECT_EQ(calls, 2);
}

TEST(TarParser, FeedAfterFinishIsAnError) {
  TarParser p([](TarEntry&&) { return OkStatus(); });
  ASSERT_TRUE(p.Finish().ok());
  ASSERT_TRUE(p.Finish().ok());
  Status s = p.Feed(AsBytes(File("a", "a")));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kInternal);
}

}  // namespace
}  // namespace ipfly::layer
