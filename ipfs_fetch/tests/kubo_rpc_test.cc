#include "ipfs_fetch/kubo_rpc.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>

#include "core/codec/car.h"
#include "core/unixfs/importer.h"
#include "tests/support/fault_http_server.h"

namespace ipfly::fetch {
namespace {

using std::chrono::milliseconds;
using test::FaultHttpServer;
using test::Responder;
using test::TestRequest;

Block MakeBlock(std::string_view s, uint64_t codec = mf::kCodecRaw) {
  auto b = Block::Make(codec, ToBytes(s));
  EXPECT_TRUE(b.ok());
  return *b;
}

std::string KuboError(std::string_view message, int code = 0) {
  return R"({"Message":")" + std::string(message) + R"(","Code":)" + std::to_string(code) +
         R"(,"Type":"error"})";
}

// A small emulation of the Kubo RPC API (and, with js_mode, of js-ipfs 0.66's quirks) on top of
// FaultHttpServer. Blocks are looked up by multihash, as both implementations do.
class FakeKubo {
 public:
  FakeKubo() : server_([this](const TestRequest& r, Responder& o) { Handle(r, o); }) {}
  Status Start() { return server_.Start(); }
  std::string url() const { return server_.base_url(); }

  void Add(const Block& b) {
    std::lock_guard lock(mu_);
    blocks_[b.cid().multihash().bytes()] = Bytes(b.data().begin(), b.data().end());
  }
  void SetRaw(const mf::Cid& cid, Bytes data) {
    std::lock_guard lock(mu_);
    blocks_[cid.multihash().bytes()] = std::move(data);
  }
  std::vector<TestRequest> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  TestRequest last() {
    std::lock_guard lock(mu_);
    return requests_.back();
  }

  bool js_mode = false;  // missing block → timeout message; block/put ignores cid-codec
  std::function<void(const TestRequest&, Responder&)> override_handler;
  std::function<void(const TestRequest&, Responder&)> cat_handler;  // serves /api/v0/cat

 private:
  void Handle(const TestRequest& req, Responder& out) {
    {
      std::lock_guard lock(mu_);
      requests_.push_back(req);
    }
    if (req.method != "POST") {
      out.Respond(405, {{"Allow", "OPTIONS, POST"}}, KuboError("method not allowed"));
      return;
    }
    if (override_handler) {
      override_handler(req, out);
      return;
    }
    if (cat_handler && req.path == "/api/v0/cat") {
      cat_handler(req, out);
      return;
    }
    const std::string json = "application/json";
    if (req.path == "/api/v0/version") {
      out.Respond(
          200, {{"Content-Type", json}},
          js_mode
              ? R"({"Version":"0.18.1","Commit":"","Repo":"12","ipfs-core":"0.18.1"})"
              : R"({"Version":"0.27.0","Commit":"abc","Repo":"15","System":"amd64/linux","Golang":"go1.21"})");
      return;
    }
    if (req.path == "/api/v0/block/get") {
      auto cid = mf::Cid::Parse(req.Query("arg").value_or(""));
      if (!cid.ok()) {
        out.Respond(400, {{"Content-Type", json}}, KuboError("invalid cid", 1));
        return;
      }
      std::optional<Bytes> data;
      {
        std::lock_guard lock(mu_);
        auto it = blocks_.find(cid->multihash().bytes());
        if (it != blocks_.end()) data = it->second;
      }
      if (!data) {
        if (js_mode) {
          out.SleepFor(milliseconds(50));  // js-ipfs waits for its timeout= first
          out.Respond(500, {{"Content-Type", json}},
                      KuboError("Failed to get block: request timed out"));
        } else {
          out.Respond(500, {{"Content-Type", json}},
                      KuboError("block was not found locally (offline): ipld: could not find " +
                                cid->ToString()));
        }
        return;
      }
      out.Respond(200, {{"Content-Type", "application/vnd.ipld.raw"}}, AsString(*data));
      return;
    }
    if (req.path == "/api/v0/block/put") {
      auto parts = req.MultipartParts();
      if (!parts.ok() || parts->empty()) {
        out.Respond(400, {{"Content-Type", json}},
                    KuboError("file argument 'data' is required", 1));
        return;
      }
      Bytes data = ToBytes((*parts)[0].body);
      std::string codec_name = req.Query("cid-codec").value_or("raw");
      int version = 1;
      if (js_mode) {
        // js-ipfs 0.66 ignores cid-codec; without format= it stores dag-pb v0.
        codec_name = req.Query("format").value_or("dag-pb");
        version = codec_name == "dag-pb" ? 0 : 1;
      } else if (req.Query("format")) {
        codec_name = *req.Query("format");
      }
      auto codec = mf::CodecFromName(codec_name);
      if (!codec.ok()) {
        out.Respond(500, {{"Content-Type", json}}, KuboError("unknown codec", 0));
        return;
      }
      auto block = Block::Make(*codec, data, version);
      SetRaw(block->cid(), data);
      std::string key = block->cid().version() == 1
                            ? block->cid().ToString(mf::Multibase::kBase58btc)
                            : block->cid().ToString();
      out.Respond(200, {{"Content-Type", json}},
                  R"({"Key":")" + key + R"(","Size":)" + std::to_string(data.size()) + "}");
      return;
    }
    out.Respond(404, {{"Content-Type", "text/plain"}}, "404 page not found");
  }

  std::mutex mu_;
  std::map<Bytes, Bytes> blocks_;
  std::vector<TestRequest> requests_;
  FaultHttpServer server_;
};

class KuboRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(kubo_.Start().ok());
    KuboRpcOptions o;
    o.missing_block_timeout = milliseconds(500);
    client_ = std::make_shared<KuboRpcClient>(kubo_.url(), http_, o);
  }
  Deadline Soon() { return Clock::now() + milliseconds(10'000); }

  std::shared_ptr<HttpClient> http_ = std::make_shared<HttpClient>();
  FakeKubo kubo_;
  std::shared_ptr<KuboRpcClient> client_;
};

TEST_F(KuboRpcTest, VersionOfKuboAndJsIpfs) {
  auto v = client_->Version(Soon());
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  EXPECT_EQ(v->version, "0.27.0");
  EXPECT_EQ(v->system, "amd64/linux");
  EXPECT_FALSE(v->js_ipfs);
  kubo_.js_mode = true;
  v = client_->Version(Soon());
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->js_ipfs);
  EXPECT_EQ(kubo_.last().method, "POST");
}

TEST_F(KuboRpcTest, BlockGetSendsOfflineAndTimeoutAndVerifies) {
  Block b = MakeBlock("kubo block");
  kubo_.Add(b);
  auto got = client_->BlockGet(b.cid(), Soon());
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(AsString(got->data()), "kubo block");
  TestRequest req = kubo_.last();
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.path, "/api/v0/block/get");
  EXPECT_EQ(req.Query("arg").value_or(""), b.cid().ToString());
  EXPECT_EQ(req.Query("offline").value_or(""), "true");
  EXPECT_EQ(req.Query("timeout").value_or(""), "500ms");
}

TEST_F(KuboRpcTest, MissingBlockIsNotFoundForKuboAndJsIpfs) {
  Block b = MakeBlock("absent");
  auto got = client_->BlockGet(b.cid(), Soon());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kNotFound) << got.error().ToString();
  EXPECT_NE(got.error().message().find("not found locally"), std::string::npos);
  kubo_.js_mode = true;
  got = client_->BlockGet(b.cid(), Soon());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kNotFound) << got.error().ToString();
}

TEST_F(KuboRpcTest, NodeTimeoutIsBelowTheDeadline) {
  Block b = MakeBlock("x");
  kubo_.Add(b);
  ASSERT_TRUE(client_->BlockGet(b.cid(), Clock::now() + milliseconds(200)).ok());
  int ms = std::stoi(kubo_.last().Query("timeout").value_or("0"));
  EXPECT_GT(ms, 0);
  EXPECT_LE(ms, 180);
}

TEST_F(KuboRpcTest, CorruptBlockFromTheNodeIsRejected) {
  Block b = MakeBlock("genuine");
  kubo_.SetRaw(b.cid(), ToBytes("tampered"));
  auto got = client_->BlockGet(b.cid(), Soon());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kCorrupt);
}

TEST_F(KuboRpcTest, ErrorBodiesAreMappedPrecisely) {
  struct Case {
    int status;
    std::string body;
    Errc want;
  };
  std::vector<Case> cases = {
      {500, KuboError("invalid path \"x\": selected encoding not supported", 1),
       Errc::kInvalidArgument},
      {400, KuboError("Invalid request query input", 1), Errc::kInvalidArgument},
      {500, KuboError("merkledag: not found"), Errc::kNotFound},
      {500, KuboError("some internal failure"), Errc::kUnavailable},
      {403, "forbidden", Errc::kPermissionDenied},
      {404, "404 page not found", Errc::kUnsupported},
      {503, "busy", Errc::kUnavailable},
  };
  Block b = MakeBlock("whatever");
  for (const Case& c : cases) {
    kubo_.override_handler = [&](const TestRequest&, Responder& out) {
      out.Respond(c.status, {{"Content-Type", "application/json"}}, c.body);
    };
    auto got = client_->BlockGet(b.cid(), Soon());
    ASSERT_FALSE(got.ok()) << c.body;
    EXPECT_EQ(got.error().code(), c.want) << c.body << " → " << got.error().ToString();
  }
}

TEST_F(KuboRpcTest, BlockPutChecksTheReturnedKey) {
  Block raw = MakeBlock("put me");
  ASSERT_TRUE(client_->BlockPut(raw, Soon()).ok());
  TestRequest req = kubo_.last();
  EXPECT_EQ(req.path, "/api/v0/block/put");
  EXPECT_EQ(req.Query("cid-codec").value_or(""), "raw");
  EXPECT_EQ(req.Query("mhtype").value_or(""), "sha2-256");
  auto parts = req.MultipartParts();
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].body, "put me");
  EXPECT_TRUE(client_->BlockGet(raw.cid(), Soon()).ok());

  // A node that hashes something else is caught.
  kubo_.override_handler = [](const TestRequest&, Responder& out) {
    Block other = MakeBlock("something else");
    out.Respond(200, {{"Content-Type", "application/json"}},
                R"({"Key":")" + other.cid().ToString() + R"(","Size":14})");
  };
  Status s = client_->BlockPut(raw, Soon());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kCorrupt);
}

TEST_F(KuboRpcTest, BlockPutFallsBackToLegacyFormatForJsIpfs) {
  kubo_.js_mode = true;
  Block raw = MakeBlock("js block");
  Status s = client_->BlockPut(raw, Soon());
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  auto reqs = kubo_.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].Query("format").value_or(""), "raw");
  // Remembered: the next put goes straight to format=.
  Block raw2 = MakeBlock("js block 2");
  ASSERT_TRUE(client_->BlockPut(raw2, Soon()).ok());
  EXPECT_EQ(kubo_.requests().size(), 3u);
  // dag-pb blocks come back as CIDv0 from js-ipfs: same multihash and codec, accepted.
  Block pb = MakeBlock(std::string("\x0a\x02\x08\x01", 4), mf::kCodecDagPb);
  ASSERT_TRUE(client_->BlockPut(pb, Soon()).ok());
}

TEST_F(KuboRpcTest, AddParsesNdjsonAndAnyMultibase) {
  Block b = MakeBlock("file content");
  std::string reply_cid = b.cid().ToString(mf::Multibase::kBase58btc);  // js-ipfs style
  kubo_.override_handler = [&](const TestRequest& req, Responder& out) {
    auto parts = req.MultipartParts();
    ASSERT_TRUE(parts.ok());
    EXPECT_EQ((*parts)[0].body, "file content");
    EXPECT_EQ((*parts)[0].filename, "my%20file.bin");
    out.StartChunked(200, {{"Content-Type", "application/json"}, {"X-Chunked-Output", "1"}},
                     {"X-Stream-Error"});
    out.WriteChunk(R"({"Name":"my file.bin","Hash":")" + reply_cid +
                   R"(","Size":12,"Mode":"0644"})" + "\n");
    out.FinishChunked();
  };
  std::string path = "/tmp/my file.bin";
  {
    std::ofstream f(path);
    f << "file content";
  }
  KuboAddParams p;
  p.cid_version = 1;
  p.raw_leaves = true;
  p.chunker = "size-262144";
  auto cid = client_->Add(path, p, Soon());
  unlink(path.c_str());
  ASSERT_TRUE(cid.ok()) << cid.error().ToString();
  EXPECT_EQ(*cid, b.cid());
  TestRequest req = kubo_.last();
  EXPECT_EQ(req.Query("cid-version").value_or(""), "1");
  EXPECT_EQ(req.Query("raw-leaves").value_or(""), "true");
  EXPECT_EQ(req.Query("chunker").value_or(""), "size-262144");
  EXPECT_EQ(req.Query("pin").value_or(""), "true");
}

TEST_F(KuboRpcTest, StreamErrorTrailerFailsAnAdd) {
  kubo_.override_handler = [&](const TestRequest&, Responder& out) {
    out.StartChunked(200, {{"Content-Type", "application/json"}}, {"X-Stream-Error"});
    out.FinishChunked({{"X-Stream-Error", "unexpected EOF"}});
  };
  std::string path = "/tmp/ipfly-kubo-add-test";
  {
    std::ofstream f(path);
    f << "x";
  }
  auto cid = client_->Add(path, {}, Soon());
  unlink(path.c_str());
  ASSERT_FALSE(cid.ok());
  EXPECT_NE(cid.error().message().find("unexpected EOF"), std::string::npos);
}

TEST_F(KuboRpcTest, DagImportReturnsRootsAndReportsPinErrors) {
  Block root = MakeBlock("root");
  std::string path = "/tmp/ipfly-kubo-import.car";
  {
    std::ofstream f(path, std::ios::binary);
    Bytes h = codec::EncodeCarV1Header({root.cid()});
    Bytes s = codec::EncodeCarSection(root.cid(), root.data());
    f.write(reinterpret_cast<const char*>(h.data()), static_cast<std::streamsize>(h.size()));
    f.write(reinterpret_cast<const char*>(s.data()), static_cast<std::streamsize>(s.size()));
  }
  std::string pin_error;
  kubo_.override_handler = [&](const TestRequest& req, Responder& out) {
    EXPECT_EQ(req.path, "/api/v0/dag/import");
    EXPECT_EQ(req.Query("pin-roots").value_or(""), "true");
    auto parts = req.MultipartParts();
    ASSERT_TRUE(parts.ok());
    EXPECT_GT((*parts)[0].body.size(), 40u);
    out.StartChunked(200, {{"Content-Type", "application/json"}}, {"X-Stream-Error"});
    out.WriteChunk(R"({"Root":{"Cid":{"/":")" + root.cid().ToString(mf::Multibase::kBase58btc) +
                   R"("},"PinErrorMsg":")" + pin_error + "\"}}\n");
    out.WriteChunk(R"({"Stats":{"BlockCount":1,"BlockBytesCount":4}})"
                   "\n");
    out.FinishChunked();
  };
  auto roots = client_->DagImport(path, Soon());
  ASSERT_TRUE(roots.ok()) << roots.error().ToString();
  ASSERT_EQ(roots->size(), 1u);
  EXPECT_EQ((*roots)[0], root.cid());
  pin_error = "merkledag: not found";
  roots = client_->DagImport(path, Soon());
  unlink(path.c_str());
  ASSERT_FALSE(roots.ok());
  EXPECT_EQ(roots.error().code(), Errc::kNotFound);
}

class KuboStreamTest : public KuboRpcTest {
 protected:
  void ServeCar(std::vector<Block> blocks, std::string trailer, bool json_trailer) {
    kubo_.override_handler = [=](const TestRequest& req, Responder& out) {
      if (req.path == "/api/v0/block/get") {  // the root probe
        out.Respond(200, AsString(blocks[0].data()));
        return;
      }
      EXPECT_EQ(req.path, "/api/v0/dag/export");
      EXPECT_EQ(req.Query("offline").value_or(""), "true");
      out.StartChunked(200, {{"Content-Type", "application/json"}, {"X-Chunked-Output", "1"}},
                       {"X-Stream-Error"});
      out.WriteChunk(codec::EncodeCarV1Header({blocks[0].cid()}));
      for (const Block& b : blocks) out.WriteChunk(codec::EncodeCarSection(b.cid(), b.data()));
      if (trailer.empty()) {
        out.FinishChunked();
      } else if (json_trailer) {
        out.FinishChunked({{"X-Stream-Error", R"({"Message":")" + trailer + R"(","Code":0})"}});
      } else {
        out.FinishChunked({{"X-Stream-Error", trailer}});
      }
    };
  }
};

// CIDv0 (dag-pb leaves) DAGs go through dag/export; raw-leaf v1 DAGs through verified cat below.
Block V0Block(std::string_view s) {
  auto b = Block::Make(mf::kCodecDagPb, ToBytes(s), 0);
  EXPECT_TRUE(b.ok());
  return *b;
}

TEST_F(KuboStreamTest, SourceStreamsAWholeDagVerified) {
  std::vector<Block> blocks = {V0Block("a"), MakeBlock("b"), MakeBlock("c")};
  ServeCar(blocks, "", false);
  KuboRpcSource src(client_);
  std::vector<mf::Cid> got;
  Status s = src.StreamDag(blocks[0].cid(), EntityRange{}, Soon(), [&](const Block& b) {
    got.push_back(b.cid());
    return OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2], blocks[2].cid());
}

TEST_F(KuboStreamTest, TrailerErrorComesAfterTheDeliveredBlocks) {
  std::vector<Block> blocks = {V0Block("a"), MakeBlock("b")};
  for (bool json : {false, true}) {
    ServeCar(blocks,
             json ? "Failed to export DAG: request timed out"
                  : "block was not found locally (offline): ipld: could not find x",
             json);
    KuboRpcSource src(client_);
    int n = 0;
    Status s = src.StreamDag(blocks[0].cid(), EntityRange{}, Soon(), [&](const Block&) {
      ++n;
      return OkStatus();
    });
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), Errc::kNotFound) << s.error().ToString();
    EXPECT_EQ(n, 2);
  }
}

TEST_F(KuboStreamTest, MissingRootIsNotFoundWithoutAnExport) {
  kubo_.js_mode = true;  // js-ipfs would hold a dag/export until its timeout
  KuboRpcSource src(client_);
  auto start = Clock::now();
  Status s = src.StreamDag(MakeBlock("nowhere").cid(), EntityRange{}, Soon(),
                           [](const Block&) { return OkStatus(); });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kNotFound);
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  for (const auto& r : kubo_.requests()) EXPECT_NE(r.path, "/api/v0/dag/export");
}

TEST_F(KuboStreamTest, PartialRangesAreUnsupported) {
  KuboRpcSource src(client_);
  Status s = src.StreamDag(V0Block("a").cid(), EntityRange{10, 20}, Soon(),
                           [](const Block&) { return OkStatus(); });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnsupported);
}

// A raw-leaf DAG served by block/get (nodes) and cat (bytes); `corrupt_at` flips a cat byte.
class KuboCatStreamTest : public KuboRpcTest {
 protected:
  struct Dag {
    Bytes data;
    mf::Cid root = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Sha256Of({}));
    std::vector<Block> blocks;
  };
  class Collect : public BlockSink {
   public:
    Status Put(const Block& b) override {
      blocks.push_back(b);
      return OkStatus();
    }
    std::vector<Block> blocks;
  };
  Dag MakeDag() {
    Dag d;
    d.data.resize(100'000);
    for (size_t i = 0; i < d.data.size(); ++i) d.data[i] = static_cast<uint8_t>(i * 7 + i / 300);
    auto p = unixfs::ImportProfile::ByName("kubo-v1").value();
    p.chunk_size = 4096;
    p.max_links = 5;  // three levels
    Collect c;
    d.root = unixfs::ImportBytes(d.data, p, &c).value().cid;
    d.blocks = c.blocks;
    for (const auto& b : d.blocks) kubo_.Add(b);
    return d;
  }
  void ServeCat(const Dag& d, std::optional<size_t> corrupt_at) {
    kubo_.cat_handler = [=](const TestRequest& req, Responder& out) {
      uint64_t off = std::stoull(req.Query("offset").value_or("0"));
      uint64_t len = std::stoull(req.Query("length").value_or("0"));
      std::string body(reinterpret_cast<const char*>(d.data.data()) + off, len);
      if (corrupt_at && *corrupt_at >= off && *corrupt_at < off + len) body[*corrupt_at - off] ^= 1;
      out.Respond(200, {{"Content-Type", "application/octet-stream"}}, body);
    };
  }
};

TEST_F(KuboCatStreamTest, RangesComeVerifiedThroughOneCat) {
  Dag d = MakeDag();
  ServeCat(d, std::nullopt);
  KuboRpcSource src(client_);
  for (EntityRange r : {EntityRange{}, EntityRange{5000, 20000}, EntityRange{99'999, 99'999}}) {
    std::map<mf::Cid, Block> got;
    Status s = src.StreamDag(d.root, r, Soon(), [&](const Block& b) {
      got.emplace(b.cid(), b);
      return OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    // Every leaf overlapping the range arrived (verified: Blocks only exist verified).
    uint64_t leaf_bytes = 0;
    for (const auto& [cid, b] : got) {
      if (cid.codec() == mf::kCodecRaw) leaf_bytes += b.size();
    }
    uint64_t to = r.to == EntityRange::kToEnd ? d.data.size() - 1 : r.to;
    EXPECT_GE(leaf_bytes, to - r.from + 1);
  }
  size_t cats = 0;
  for (const auto& q : kubo_.requests()) cats += q.path == "/api/v0/cat";
  EXPECT_EQ(cats, 3u);  // one cat per stream, never one request per leaf
}

TEST_F(KuboCatStreamTest, WrongCatBytesStopTheStreamAndAreNeverDelivered) {
  Dag d = MakeDag();
  ServeCat(d, 50'000);
  KuboRpcSource src(client_);
  std::vector<Block> got;
  Status s = src.StreamDag(d.root, EntityRange{}, Soon(), [&](const Block& b) {
    got.push_back(b);
    return OkStatus();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kCorrupt) << s.error().ToString();
  for (const auto& b : got) {
    if (b.cid().codec() != mf::kCodecRaw) continue;
    // Every delivered leaf is a real leaf of the DAG.
    bool known = false;
    for (const auto& real : d.blocks) known |= real.cid() == b.cid();
    EXPECT_TRUE(known);
  }
}

TEST_F(KuboStreamTest, CatStreamsBytesWithOffsetAndLength) {
  kubo_.override_handler = [](const TestRequest& req, Responder& out) {
    EXPECT_EQ(req.Query("offset").value_or(""), "5");
    EXPECT_EQ(req.Query("length").value_or(""), "3");
    out.StartChunked(200, {{"X-Stream-Output", "1"}}, {"X-Stream-Error"});
    out.WriteChunk("fgh");
    out.FinishChunked();
  };
  std::string got;
  Status s = client_->Cat(MakeBlock("abcdefghij").cid(), 5, 3, Soon(), [&](ByteView b) {
    got += AsString(b);
    return OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_EQ(got, "fgh");
}

TEST(MapKuboErrorTest, Messages) {
  EXPECT_EQ(MapKuboError(500, "ipld: could not find bafy", "x").code(), Errc::kNotFound);
  EXPECT_EQ(MapKuboError(500, "no link named \"a\" under Qm", "x").code(), Errc::kNotFound);
  EXPECT_EQ(MapKuboError(500, "context deadline exceeded", "x").code(), Errc::kNotFound);
  EXPECT_EQ(MapKuboError(405, "", "x").code(), Errc::kUnsupported);
  EXPECT_EQ(MapKuboError(0, "connection lost", "x").code(), Errc::kUnavailable);
}

}  // namespace
}  // namespace ipfly::fetch
