// UnixFS importer: Kubo CID vectors, balanced-layout shape (checked against an independent
// recursive model of boxo's builder), streaming, sinks, files, directories, symlinks.
#include "core/unixfs/importer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"

namespace ipfly::unixfs {
namespace {

namespace fs = std::filesystem;

ImportProfile Profile(std::string_view name) {
  auto p = ImportProfile::ByName(name);
  EXPECT_TRUE(p.ok());
  return *p;
}

ImportProfile Small(int cid_version, bool raw_leaves, size_t chunk, size_t links) {
  ImportProfile p;
  p.name = "test";
  p.cid_version = cid_version;
  p.raw_leaves = raw_leaves;
  p.chunk_size = chunk;
  p.max_links = links;
  return p;
}

Bytes Pattern(size_t n, uint32_t seed = 1) {
  Bytes b(n);
  std::mt19937 rng(seed);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

class MapSink : public BlockSink {
 public:
  Status Put(const Block& b) override {
    // Every block handed out must verify against its own CID.
    EXPECT_TRUE(Block::Verify(b.cid(), Bytes(b.data().begin(), b.data().end())).ok());
    blocks[b.cid().ToString()] = Bytes(b.data().begin(), b.data().end());
    ++puts;
    return OkStatus();
  }
  std::map<std::string, Bytes> blocks;
  size_t puts = 0;
};

// --- An independent model of boxo's balanced builder (recursive, depth-driven). -----------------

struct RefNode {
  mf::Cid cid;
  uint64_t tsize;
  uint64_t fsize;
};

class RefBuilder {
 public:
  RefBuilder(ByteView data, const ImportProfile& p) : data_(data), p_(p) {}

  RefNode Build() {
    if (Done()) return Leaf({});
    RefNode root = NextLeaf();
    for (int depth = 1; !Done(); ++depth) {
      std::vector<RefNode> kids{root};
      Fill(kids, depth);
      root = Close(kids);
    }
    return root;
  }

 private:
  bool Done() const { return pos_ >= data_.size(); }
  RefNode NextLeaf() {
    size_t n = std::min(p_.chunk_size, data_.size() - pos_);
    ByteView c = data_.subspan(pos_, n);
    pos_ += n;
    return Leaf(c);
  }
  RefNode Leaf(ByteView c) {
    if (p_.raw_leaves) {
      Block b = *Block::Make(mf::kCodecRaw, Bytes(c.begin(), c.end()), 1);
      return {b.cid(), c.size(), c.size()};
    }
    codec::UnixfsData d;
    d.type = codec::UnixfsType::kFile;
    if (!c.empty()) d.data = Bytes(c.begin(), c.end());
    d.filesize = c.size();
    codec::PbNode n;
    n.data = codec::EncodeUnixfs(d);
    Bytes enc = codec::EncodeDagPb(n);
    Block b = *Block::Make(mf::kCodecDagPb, enc, p_.cid_version);
    return {b.cid(), enc.size(), c.size()};
  }
  void Fill(std::vector<RefNode>& kids, int depth) {
    while (kids.size() < p_.max_links && !Done()) {
      if (depth == 1) {
        kids.push_back(NextLeaf());
      } else {
        std::vector<RefNode> sub;
        Fill(sub, depth - 1);
        kids.push_back(Close(sub));
      }
    }
  }
  RefNode Close(const std::vector<RefNode>& kids) {
    codec::UnixfsData d;
    d.type = codec::UnixfsType::kFile;
    codec::PbNode n;
    uint64_t fsize = 0, tsize = 0;
    for (const RefNode& k : kids) {
      d.blocksizes.push_back(k.fsize);
      fsize += k.fsize;
      tsize += k.tsize;
      n.links.push_back({k.cid, std::string(), k.tsize});
    }
    d.filesize = fsize;
    n.data = codec::EncodeUnixfs(d);
    Bytes enc = codec::EncodeDagPb(n);
    Block b = *Block::Make(mf::kCodecDagPb, enc, p_.cid_version);
    return {b.cid(), tsize + enc.size(), fsize};
  }

  ByteView data_;
  const ImportProfile& p_;
  size_t pos_ = 0;
};

// Reassembles file bytes from a sink, checking UnixFS invariants; returns the leaf depth.
int Walk(const MapSink& s, const mf::Cid& cid, Bytes* out, uint64_t* tsize) {
  auto it = s.blocks.find(cid.ToString());
  EXPECT_NE(it, s.blocks.end()) << cid.ToString();
  if (it == s.blocks.end()) return -1;
  const Bytes& blk = it->second;
  if (cid.codec() == mf::kCodecRaw) {
    out->insert(out->end(), blk.begin(), blk.end());
    *tsize = blk.size();
    return 0;
  }
  auto node = codec::DecodeDagPb(blk);
  EXPECT_TRUE(node.ok());
  EXPECT_EQ(codec::EncodeDagPb(*node), blk) << "non-canonical block";
  auto d = codec::DecodeUnixfs(*node->data);
  EXPECT_TRUE(d.ok());
  EXPECT_EQ(d->type, codec::UnixfsType::kFile);
  if (node->links.empty()) {
    if (d->data) out->insert(out->end(), d->data->begin(), d->data->end());
    *tsize = blk.size();
    return 0;
  }
  EXPECT_FALSE(d->data.has_value()) << "internal nodes carry no Data";
  EXPECT_EQ(node->links.size(), d->blocksizes.size());
  uint64_t sum_t = blk.size(), sum_f = 0;
  int depth = -1;
  for (size_t i = 0; i < node->links.size(); ++i) {
    const auto& l = node->links[i];
    EXPECT_EQ(l.name, std::string()) << "chunk links carry an empty Name";
    size_t before = out->size();
    uint64_t child_t = 0;
    int dd = Walk(s, l.hash, out, &child_t);
    EXPECT_EQ(*l.tsize, child_t);
    EXPECT_EQ(d->blocksizes[i], out->size() - before);
    if (depth >= 0) {
      EXPECT_EQ(dd, depth) << "balanced: all leaves at the same depth";
    }
    depth = dd;
    sum_t += child_t;
    sum_f += d->blocksizes[i];
  }
  EXPECT_EQ(*d->filesize, sum_f);
  *tsize = sum_t;
  return depth + 1;
}

// --- Kubo vectors
// ---------------------------------------------------------------------------------

TEST(Importer, Profiles) {
  auto v1 = Profile("kubo-v1");
  EXPECT_EQ(v1.cid_version, 1);
  EXPECT_TRUE(v1.raw_leaves);
  EXPECT_EQ(v1.chunk_size, 262144u);
  EXPECT_EQ(v1.max_links, 174u);
  auto v0 = Profile("kubo-v0");
  EXPECT_EQ(v0.cid_version, 0);
  EXPECT_FALSE(v0.raw_leaves);
  EXPECT_EQ(Profile("unixfs-v0-2015").name, "kubo-v0");
  auto m = Profile("unixfs-v1-2025");
  EXPECT_EQ(m.chunk_size, 1048576u);
  EXPECT_EQ(m.max_links, 1024u);
  EXPECT_EQ(m.hamt_estimate, HamtEstimate::kBlockBytes);
  EXPECT_EQ(ImportProfile::ByName("nope").error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(ImportBytes({}, Small(1, true, 0, 174), nullptr).error().code(),
            Errc::kInvalidArgument);
  EXPECT_EQ(ImportBytes({}, Small(1, true, 10, 1), nullptr).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(ImportBytes({}, Small(2, true, 10, 5), nullptr).error().code(), Errc::kInvalidArgument);
}

TEST(Importer, EmptyFile) {
  auto v1 = ImportBytes({}, Profile("kubo-v1"), nullptr);
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->cid.ToString(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
  EXPECT_EQ(v1->tsize, 0u);
  EXPECT_EQ(v1->filesize, 0u);
  MapSink sink;
  auto v0 = ImportBytes({}, Profile("kubo-v0"), &sink);
  ASSERT_TRUE(v0.ok());
  EXPECT_EQ(v0->cid.ToString(), "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
  EXPECT_EQ(v0->tsize, 6u);
  EXPECT_EQ(HexEncode(sink.blocks.at(v0->cid.ToString())), "0a0408021800");
}

TEST(Importer, HelloWorld) {
  auto v0 = ImportBytes(AsBytes("hello world"), Profile("kubo-v0"), nullptr);
  ASSERT_TRUE(v0.ok());
  EXPECT_EQ(v0->cid.ToString(), "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
  EXPECT_EQ(v0->tsize, 19u);
  EXPECT_EQ(v0->filesize, 11u);
  for (const char* p : {"kubo-v1", "unixfs-v1-2025"}) {
    auto v1 = ImportBytes(AsBytes("hello world"), Profile(p), nullptr);
    ASSERT_TRUE(v1.ok());
    EXPECT_EQ(v1->cid.ToString(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    EXPECT_EQ(v1->tsize, 11u);
  }
  auto nl = ImportBytes(AsBytes("hello world\n"), Profile("kubo-v1"), nullptr);
  EXPECT_EQ(nl->cid.ToString(), "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4");
}

TEST(Importer, SingleFullChunkIsTheLeafItself) {
  Bytes data = Pattern(262144);
  auto r = ImportBytes(data, Profile("kubo-v1"), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->cid, Block::Make(mf::kCodecRaw, data, 1)->cid());
  EXPECT_EQ(r->tsize, 262144u);
  // One more byte makes a root with two links.
  data.push_back(7);
  MapSink sink;
  auto two = ImportBytes(data, Profile("kubo-v1"), &sink);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->cid.codec(), mf::kCodecDagPb);
  EXPECT_EQ(two->cid.version(), 1);
  auto node = codec::DecodeDagPb(sink.blocks.at(two->cid.ToString()));
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->links.size(), 2u);
  EXPECT_EQ(sink.puts, 3u);
}

// --- Shape: exact vs model, depth transitions ---------------------------------------------------

TEST(Importer, MatchesBoxoModelForAllSmallShapes) {
  for (bool raw : {true, false}) {
    for (int ver : {0, 1}) {
      for (size_t links : {2, 3, 4}) {
        ImportProfile p = Small(ver, raw, 3, links);
        const size_t max_chunks = links * links * links + 2;
        Bytes data = Pattern(max_chunks * 3 + 2, static_cast<uint32_t>(links));
        for (size_t n = 0; n <= data.size(); ++n) {
          ByteView d(data.data(), n);
          auto got = ImportBytes(d, p, nullptr);
          ASSERT_TRUE(got.ok());
          RefNode want = RefBuilder(d, p).Build();
          ASSERT_EQ(got->cid, want.cid)
              << "raw=" << raw << " v" << ver << " links=" << links << " size=" << n;
          EXPECT_EQ(got->tsize, want.tsize);
          EXPECT_EQ(got->filesize, n);
        }
      }
    }
  }
}

TEST(Importer, DepthTransitions) {
  const size_t kLinks = 5, kChunk = 16;
  ImportProfile p = Small(1, true, kChunk, kLinks);
  struct Case {
    size_t chunks;
    size_t extra;
    int depth;
    size_t root_links;
  } cases[] = {
      {1, 0, 0, 0},                     // leaf only
      {kLinks, 0, 1, kLinks},           // exactly max_links chunks: one level
      {kLinks, 1, 2, 2},                // max_links chunks + 1 byte: two levels
      {kLinks + 1, 0, 2, 2},            // max_links + 1 chunks
      {kLinks * kLinks, 0, 2, kLinks},  // full two levels
      {kLinks * kLinks + 1, 0, 3, 2},   // one more: three levels
  };
  for (const Case& c : cases) {
    Bytes data = Pattern(c.chunks * kChunk + c.extra, 9);
    MapSink sink;
    auto r = ImportBytes(data, p, &sink);
    ASSERT_TRUE(r.ok());
    Bytes back;
    uint64_t tsize = 0;
    int depth = Walk(sink, r->cid, &back, &tsize);
    EXPECT_EQ(depth, c.depth) << c.chunks << "+" << c.extra;
    EXPECT_EQ(back, data);
    EXPECT_EQ(tsize, r->tsize);
    if (c.root_links) {
      auto root = codec::DecodeDagPb(sink.blocks.at(r->cid.ToString()));
      EXPECT_EQ(root->links.size(), c.root_links);
    } else {
      EXPECT_EQ(r->cid.codec(), mf::kCodecRaw);
    }
  }
}

TEST(Importer, V0DagPbLeavesRoundTrip) {
  ImportProfile p = Small(0, false, 10, 3);
  Bytes data = Pattern(10 * 10 + 3, 5);
  MapSink sink;
  auto r = ImportBytes(data, p, &sink);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->cid.version(), 0);
  Bytes back;
  uint64_t tsize = 0;
  EXPECT_EQ(Walk(sink, r->cid, &back, &tsize), 3);
  EXPECT_EQ(back, data);
  EXPECT_EQ(tsize, r->tsize);
}

// --- Streaming
// ------------------------------------------------------------------------------------

TEST(Importer, StreamingEqualsOneShot) {
  for (const char* name : {"kubo-v1", "kubo-v0"}) {
    ImportProfile p = Profile(name);
    Bytes data = Pattern(3 * 262144 + 12345, 3);
    auto one = ImportBytes(data, p, nullptr);
    ASSERT_TRUE(one.ok());
    std::mt19937 rng(11);
    FileImporter imp(p, nullptr);
    size_t off = 0;
    while (off < data.size()) {
      size_t n = std::min<size_t>(1 + rng() % 100000, data.size() - off);
      if (rng() % 4 == 0) n = 1;
      ASSERT_TRUE(imp.Write(ByteView(data.data() + off, n)).ok());
      off += n;
    }
    EXPECT_EQ(imp.bytes_written(), data.size());
    auto streamed = imp.Finish();
    ASSERT_TRUE(streamed.ok());
    EXPECT_EQ(streamed->cid, one->cid) << name;
    EXPECT_EQ(streamed->tsize, one->tsize);
    // Zero-copy path.
    FileImporter zc(p, nullptr);
    off = 0;
    while (off < data.size()) {
      MutableByteView space = zc.WritableSpace();
      ASSERT_FALSE(space.empty());
      size_t n = std::min<size_t>({space.size(), data.size() - off, 70000});
      std::memcpy(space.data(), data.data() + off, n);
      ASSERT_TRUE(zc.Commit(n).ok());
      off += n;
    }
    EXPECT_EQ(zc.Finish()->cid, one->cid);
    // Using the importer after Finish fails cleanly.
    EXPECT_FALSE(zc.Write(AsBytes("x")).ok());
    EXPECT_FALSE(zc.Finish().ok());
  }
}

TEST(Importer, SinkGetsEveryBlockAndSinkErrorsPropagate) {
  ImportProfile p = Small(1, true, 8, 4);
  Bytes data = Pattern(8 * 20, 4);  // 20 leaves -> 5 level-1 nodes -> 2 level-2 -> root
  MapSink sink;
  auto r = ImportBytes(data, p, &sink);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(sink.puts, 20u + 5u + 2u + 1u);

  struct FailSink : BlockSink {
    int left = 3;
    Status Put(const Block&) override {
      return --left > 0 ? OkStatus() : Status(IoError("disk full"));
    }
  } fail;
  auto e = ImportBytes(data, p, &fail);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code(), Errc::kIo);
}

// --- Files on disk ------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ipfly-importer-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, ByteView data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

TEST(Importer, ImportFileEqualsImportBytes) {
  TempDir t;
  Bytes data = Pattern(2 * 262144 + 99, 8);
  const std::string f = t.path() + "/blob";
  WriteFile(f, data);
  for (const char* name : {"kubo-v1", "kubo-v0", "unixfs-v1-2025"}) {
    auto a = ImportFile(f, Profile(name), nullptr);
    auto b = ImportBytes(data, Profile(name), nullptr);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->cid, b->cid) << name;
    EXPECT_EQ(a->tsize, b->tsize);
  }
  EXPECT_EQ(ImportFile(t.path() + "/missing", Profile("kubo-v1"), nullptr).error().code(),
            Errc::kNotFound);
  EXPECT_EQ(ImportFile(t.path(), Profile("kubo-v1"), nullptr).error().code(),
            Errc::kInvalidArgument);
}

// --- Directories and symlinks
// ----------------------------------------------------------------------

TEST(Importer, EmptyDirectory) {
  TempDir t;
  auto v0 = ImportTree(t.path(), Profile("kubo-v0"), nullptr);
  ASSERT_TRUE(v0.ok());
  EXPECT_EQ(v0->cid.ToString(), "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
  EXPECT_EQ(v0->tsize, 4u);
  auto v1 = ImportTree(t.path(), Profile("kubo-v1"), nullptr);
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->cid.ToString(), "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354");
}

// gateway-conformance symlink.car (quoted in the UnixFS spec): a directory with file foo
// ("content\n", QmTB8… would not match any other content) and symlink bar -> foo.
TEST(Importer, SymlinkFixtureDirectory) {
  TempDir t;
  const std::string root = t.path() + "/symlink";
  fs::create_directory(root);
  WriteFile(root + "/foo", AsBytes("content\n"));
  ASSERT_EQ(::symlink("foo", (root + "/bar").c_str()), 0);
  std::vector<std::pair<std::string, std::string>> seen;
  MapSink sink;
  auto r = ImportTree(root, Profile("kubo-v0"), &sink,
                      [&](const std::string& rel, const ImportedNode& n) {
                        seen.emplace_back(rel, n.cid.ToString());
                        return OkStatus();
                      });
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->cid.ToString(), "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt");
  const std::vector<std::pair<std::string, std::string>> want = {
      {"symlink/bar", "QmTB8BaCJdCH5H3k7GrxJsxgDNmNYGGR71C58ERkivXoj5"},
      {"symlink/foo", "Qme2y5HA5kvo2jAx13UsnV5bQJVijiAJCPvaW3JGQWhvJZ"},
      {"symlink", "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt"},
  };
  EXPECT_EQ(seen, want);
  EXPECT_EQ(sink.blocks.at("QmTB8BaCJdCH5H3k7GrxJsxgDNmNYGGR71C58ERkivXoj5").size(), 9u);
  EXPECT_EQ(sink.blocks.at("Qme2y5HA5kvo2jAx13UsnV5bQJVijiAJCPvaW3JGQWhvJZ").size(), 16u);
}

TEST(Importer, TreeOrderLinksAndHiddenFiles) {
  TempDir t;
  const std::string root = t.path() + "/top";
  fs::create_directories(root + "/sub/deeper");
  fs::create_directories(root + "/empty");
  WriteFile(root + "/b.txt", AsBytes("bee"));
  WriteFile(root + "/a.txt", AsBytes("ay"));
  WriteFile(root + "/.hidden", AsBytes("h"));
  WriteFile(root + "/Z", AsBytes("upper sorts first"));
  WriteFile(root + "/sub/x", Pattern(600000, 2));
  WriteFile(root + "/sub/deeper/y", AsBytes(""));
  std::vector<std::string> order;
  std::map<std::string, ImportedNode> nodes;
  MapSink sink;
  auto r = ImportTree(root, Profile("kubo-v1"), &sink,
                      [&](const std::string& rel, const ImportedNode& n) {
                        order.push_back(rel);
                        nodes.emplace(rel, n);
                        return OkStatus();
                      });
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  // Files as added (depth-first, bytewise), then directories post-order, root last.
  const std::vector<std::string> want = {
      "top/.hidden", "top/Z",     "top/a.txt",      "top/b.txt", "top/sub/deeper/y",
      "top/sub/x",   "top/empty", "top/sub/deeper", "top/sub",   "top"};
  EXPECT_EQ(order, want);
  EXPECT_EQ(nodes.at("top").cid, r->cid);
  EXPECT_EQ(nodes.at("top/empty").cid.ToString(),
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354");
  EXPECT_EQ(nodes.at("top/sub/deeper/y").cid.ToString(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");

  auto dir = codec::DecodeDagPb(sink.blocks.at(r->cid.ToString()));
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(HexEncode(*dir->data), "0801");
  std::vector<std::string> names;
  uint64_t tsum = 0;
  for (const auto& l : dir->links) {
    names.push_back(*l.name);
    EXPECT_EQ(*l.tsize, nodes.at("top/" + *l.name).tsize);
    EXPECT_EQ(l.hash, nodes.at("top/" + *l.name).cid);
    tsum += *l.tsize;
  }
  EXPECT_EQ(names, (std::vector<std::string>{".hidden", "Z", "a.txt", "b.txt", "empty", "sub"}));
  EXPECT_EQ(r->tsize, tsum + sink.blocks.at(r->cid.ToString()).size());
}

TEST(Importer, DirectoryBuilderRulesAndHamtThreshold) {
  ImportProfile p = Profile("kubo-v0");
  ImportedNode leaf = *ImportBytes(AsBytes("x"), p, nullptr);  // a 34-byte v0 CID
  DirectoryBuilder rules(p);
  EXPECT_TRUE(rules.Add("a", leaf).ok());
  for (const char* bad : {"a", "", ".", "..", "x/y"}) {
    Status s = rules.Add(bad, leaf);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.error().code(), Errc::kInvalidArgument) << bad;
  }

  // links-bytes (Kubo default): 4096 names of 30 bytes + 34-byte CIDs = 262144 exactly: a basic
  // directory (the comparison is >); one more entry would be a HAMT shard.
  auto name = [](size_t i) {
    std::string s = std::to_string(i);
    return std::string(30 - s.size(), '0') + s;
  };
  DirectoryBuilder at(p);
  for (size_t i = 0; i < 4096; ++i) ASSERT_TRUE(at.Add(name(i), leaf).ok());
  EXPECT_TRUE(at.Finish(nullptr).ok());
  ASSERT_TRUE(at.Add(name(4096), leaf).ok());
  auto over = at.Finish(nullptr);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code(), Errc::kUnsupported);

  // block-bytes (unixfs-v1-2025): the serialized node size is compared.
  ImportProfile m = Profile("unixfs-v1-2025");
  ImportedNode raw = *ImportBytes(AsBytes("x"), m, nullptr);
  m.hamt_threshold = 1 << 30;
  DirectoryBuilder probe(m);
  for (size_t i = 0; i < 10; ++i) ASSERT_TRUE(probe.Add(name(i), raw).ok());
  MapSink sink;
  auto big = probe.Finish(&sink);
  ASSERT_TRUE(big.ok());
  const size_t enc = sink.blocks.at(big->cid.ToString()).size();
  m.hamt_threshold = enc;
  DirectoryBuilder exact(m);
  for (size_t i = 0; i < 10; ++i) ASSERT_TRUE(exact.Add(name(i), raw).ok());
  EXPECT_TRUE(exact.Finish(nullptr).ok());
  m.hamt_threshold = enc - 1;
  DirectoryBuilder one_less(m);
  for (size_t i = 0; i < 10; ++i) ASSERT_TRUE(one_less.Add(name(i), raw).ok());
  EXPECT_EQ(one_less.Finish(nullptr).error().code(), Errc::kUnsupported);
}

TEST(Importer, SymlinkNodeBytes) {
  MapSink sink;
  auto s = MakeSymlink("foo", Profile("kubo-v0"), &sink);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->cid.ToString(), "QmTB8BaCJdCH5H3k7GrxJsxgDNmNYGGR71C58ERkivXoj5");
  EXPECT_EQ(HexEncode(sink.blocks.at(s->cid.ToString())), "0a0708041203666f6f");
  auto v1 = MakeSymlink("foo", Profile("kubo-v1"), nullptr);
  EXPECT_EQ(v1->cid.version(), 1);
  EXPECT_EQ(v1->cid.codec(), mf::kCodecDagPb);
}

}  // namespace
}  // namespace ipfly::unixfs
