// registry_tests: the ipfly-registry binary against real clients (an HTTP client, skopeo, ipfly's
// own GatewaySource) on free loopback ports. Every test starts from the shared registry unless it
// needs its own (crash safety, corruption).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/base/digest.h"
#include "core/base/sha256.h"
#include "core/block.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/fs_block_store.h"
#include "ipfs_fetch/gateway_source.h"
#include "ipfs_fetch/unixfs_reader.h"
#include "registry_shim/tests/registry_harness.h"
#include "tests/support/process.h"

namespace ipfly::registry::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
constexpr char kOciLayerGzip[] = "application/vnd.oci.image.layer.v1.tar+gzip";
constexpr char kOciConfig[] = "application/vnd.oci.image.config.v1+json";

Registry* g_reg = nullptr;

class RegistryEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    reg_ = std::make_unique<Registry>();
    reg_->Start();
    g_reg = reg_.get();
  }
  void TearDown() override {
    // The shared registry must have survived every test.
    int status = 0;
    EXPECT_EQ(::waitpid(reg_->pid(), &status, WNOHANG), 0)
        << "the shared ipfly-registry died (status " << status << "):\n"
        << reg_->log();
    g_reg = nullptr;
    reg_.reset();
  }

 private:
  std::unique_ptr<Registry> reg_;
};

const ::testing::Environment* const kEnv = ::testing::AddGlobalTestEnvironment(new RegistryEnv);

std::string ErrorCode(const httplib::Result& r) {
  if (!r) return "<no response>";
  auto j = json::parse(Body(r), nullptr, false);
  if (j.is_discarded() || !j.contains("errors") || j["errors"].empty()) return "<no error body>";
  return j["errors"][0]["code"].get<std::string>();
}

// Builds the busybox test image as an OCI archive at `tar` (tests/make-busybox-image).
CommandResult MakeBusyboxImage(const std::string& tar,
                               std::chrono::seconds timeout = std::chrono::seconds(300)) {
  return RunCmd({std::string(IPFLY_REGISTRY_TEST_DIR) + "/make-busybox-image", tar}, timeout);
}

// skopeo copy of the OCI archive `tar` to docker://<host>/<ref> over plain HTTP.
CommandResult SkopeoPush(const std::string& tar, const std::string& host, const std::string& ref) {
  return RunCmd({"skopeo", "copy", "--dest-tls-verify=false", "oci-archive:" + tar,
                 "docker://" + host + "/" + ref});
}

// Monolithic upload; returns the digest.
std::string PushBlob(httplib::Client& c, const std::string& repo, const std::string& data) {
  std::string d = DigestOf(data);
  auto r = c.Post("/v2/" + repo + "/blobs/uploads/?digest=" + d, data, "application/octet-stream");
  EXPECT_TRUE(r) << httplib::to_string(r.error());
  if (r) {
    EXPECT_EQ(St(r), 201) << Body(r);
  }
  return d;
}

// POST + PATCH (in `chunk`-byte pieces, with Content-Range) + PUT.
std::string PushBlobChunked(httplib::Client& c, const std::string& repo, const std::string& data,
                            size_t chunk) {
  std::string d = DigestOf(data);
  auto r = c.Post("/v2/" + repo + "/blobs/uploads/", "", "application/octet-stream");
  EXPECT_TRUE(r && St(r) == 202);
  if (!r) return d;
  std::string loc = r->get_header_value("Location");
  EXPECT_FALSE(r->get_header_value("Docker-Upload-UUID").empty());
  for (size_t off = 0; off < data.size(); off += chunk) {
    size_t n = std::min(chunk, data.size() - off);
    httplib::Headers h = {
        {"Content-Range", std::to_string(off) + "-" + std::to_string(off + n - 1)}};
    auto p = c.Patch(loc.c_str(), h, data.data() + off, n, "application/octet-stream");
    EXPECT_TRUE(p && St(p) == 202) << (p ? p->body : "no response");
    if (!p) return d;
    EXPECT_EQ(p->get_header_value("Range"), "0-" + std::to_string(off + n - 1));
    loc = p->get_header_value("Location");
  }
  auto put = c.Put((loc + "?digest=" + d).c_str(), "", "application/octet-stream");
  EXPECT_TRUE(put && St(put) == 201) << (put ? put->body : "no response");
  if (put) {
    EXPECT_EQ(put->get_header_value("Docker-Content-Digest"), d);
  }
  return d;
}

std::string PushManifest(httplib::Client& c, const std::string& repo, const std::string& ref,
                         const std::string& body, const std::string& mt = kOciManifest,
                         int want = 201) {
  auto r = c.Put(("/v2/" + repo + "/manifests/" + ref).c_str(), body, mt.c_str());
  EXPECT_TRUE(r);
  if (r) {
    EXPECT_EQ(St(r), want) << Body(r);
  }
  return DigestOf(body);
}

json Descriptor(const std::string& mt, const std::string& data) {
  return {{"mediaType", mt}, {"digest", DigestOf(data)}, {"size", data.size()}};
}

std::string MakeManifest(const std::string& config, const std::vector<std::string>& layers,
                         const json& subject = nullptr) {
  json m = {{"schemaVersion", 2}, {"mediaType", kOciManifest}};
  m["config"] = Descriptor(kOciConfig, config);
  m["layers"] = json::array();
  for (const auto& l : layers) m["layers"].push_back(Descriptor(kOciLayerGzip, l));
  if (!subject.is_null()) m["subject"] = subject;
  return m.dump();
}

// A small gzip'd tar layer made with tar(1).
std::string MakeLayer(const std::string& marker) {
  TempDir d;
  fs::create_directories(d / "src/etc");
  {
    std::ofstream(d / "src/etc/hello.txt") << "hello " << marker << "\n";
    std::ofstream f(d / "src/big.bin", std::ios::binary);
    f << RandomBytes(600 * 1024, marker.size() + 7);
  }
  auto r = Sh("tar --sort=name --mtime=@0 --owner=0 --group=0 -C " + d / "src" +
              " -cf - . | gzip -n > " + d / "layer.tgz");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return ReadFile(d / "layer.tgz");
}

// ---------------------------------------------------------------------------------------------

TEST(RegistryProtocol, BaseEndpointAndTlsHello) {
  auto c = g_reg->Client();
  auto r = c->Get("/v2/");
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 200);
  EXPECT_EQ(r->get_header_value("Docker-Distribution-API-Version"), "registry/2.0");

  // A TLS ClientHello on the plain port: a 400 and a close, at once.
  auto out =
      Sh("printf '\\x16\\x03\\x01\\x00\\x05\\x01\\x00\\x00\\x01\\x00' | timeout 5 "
         "bash -c 'exec 3<>/dev/tcp/127.0.0.1/" +
         std::to_string(g_reg->port()) + "; cat >&3; cat <&3'");
  EXPECT_NE(out.out.find("HTTP/1.1 400"), std::string::npos) << out.out << out.err;
}

TEST(RegistryProtocol, ValidationErrors) {
  auto c = g_reg->Client();
  auto r = c->Get("/v2/UPPER/manifests/latest");
  EXPECT_EQ(St(r), 400);
  EXPECT_EQ(ErrorCode(r), "NAME_INVALID");
  r = c->Get("/v2/a..b/manifests/latest");
  EXPECT_EQ(ErrorCode(r), "NAME_INVALID");
  r = c->Get("/v2/ok/manifests/-badtag");
  EXPECT_EQ(St(r), 400);
  EXPECT_EQ(ErrorCode(r), "TAG_INVALID");
  r = c->Get("/v2/ok/manifests/sha256:1234");
  EXPECT_EQ(St(r), 400);
  EXPECT_EQ(ErrorCode(r), "DIGEST_INVALID");
  r = c->Get("/v2/ok/blobs/sha256:" + std::string(64, 'A'));
  EXPECT_EQ(ErrorCode(r), "DIGEST_INVALID");
  r = c->Get("/v2/nothere/manifests/latest");
  EXPECT_EQ(St(r), 404);
  EXPECT_EQ(ErrorCode(r), "MANIFEST_UNKNOWN");
  r = c->Get("/v2/nothere/blobs/" + DigestOf("x"));
  EXPECT_EQ(St(r), 404);
  EXPECT_EQ(ErrorCode(r), "BLOB_UNKNOWN");
  r = c->Get("/v2/nothere/tags/list");
  EXPECT_EQ(St(r), 404);
  EXPECT_EQ(ErrorCode(r), "NAME_UNKNOWN");

  // Bad manifests.
  PushManifest(*c, "val/m", "t", "{not json", kOciManifest, 400);
  r = c->Put("/v2/val/m/manifests/t", "[1,2]", kOciManifest);
  EXPECT_EQ(ErrorCode(r), "MANIFEST_INVALID");
  std::string cfg = "{\"os\":\"linux\"}";
  std::string unknown_layer = "never pushed";
  r = c->Put("/v2/val/m/manifests/t", MakeManifest(cfg, {unknown_layer}), kOciManifest);
  EXPECT_EQ(St(r), 400);
  EXPECT_EQ(ErrorCode(r), "MANIFEST_BLOB_UNKNOWN");
  std::string huge = "{\"schemaVersion\":2,\"x\":\"" + std::string(5 << 20, 'a') + "\"}";
  r = c->Put("/v2/val/m/manifests/t", huge, kOciManifest);
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 413);
  // Manifest body digest must match a digest reference.
  PushBlob(*c, "val/m", cfg);
  std::string m = MakeManifest(cfg, {});
  r = c->Put(("/v2/val/m/manifests/" + DigestOf("other")).c_str(), m, kOciManifest);
  EXPECT_EQ(ErrorCode(r), "DIGEST_INVALID");
  // mediaType must agree with Content-Type.
  r = c->Put("/v2/val/m/manifests/t", m, "application/vnd.docker.distribution.manifest.v2+json");
  EXPECT_EQ(ErrorCode(r), "MANIFEST_INVALID");
  // Nothing of the above became visible.
  r = c->Get("/v2/val/m/manifests/t");
  EXPECT_EQ(St(r), 404);
  // Pagination number.
  r = c->Get("/v2/_catalog?n=abc");
  EXPECT_EQ(St(r), 400);
  // Unknown endpoint and method.
  r = c->Get("/v2/x/whatever");
  EXPECT_EQ(St(r), 404);
  r = c->Post("/v2/x/manifests/t", "", "text/plain");
  EXPECT_EQ(St(r), 405);
}

TEST(RegistryProtocol, MonolithicBlobGetHeadRange) {
  auto c = g_reg->Client();
  std::string data = RandomBytes(3 * 1024 * 1024 + 17, 1);
  std::string d = PushBlob(*c, "mono/repo", data);

  auto r = c->Get("/v2/mono/repo/blobs/" + d);
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 200);
  EXPECT_EQ(Body(r), data);
  EXPECT_EQ(r->get_header_value("Docker-Content-Digest"), d);

  r = c->Head("/v2/mono/repo/blobs/" + d);
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 200);
  EXPECT_EQ(r->get_header_value("Content-Length"), std::to_string(data.size()));
  EXPECT_TRUE(Body(r).empty());

  r = c->Get("/v2/mono/repo/blobs/" + d, {{"Range", "bytes=1000000-2000000"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 206);
  EXPECT_EQ(Body(r), data.substr(1000000, 1000001));
  EXPECT_EQ(r->get_header_value("Content-Range"),
            "bytes 1000000-2000000/" + std::to_string(data.size()));
  r = c->Get("/v2/mono/repo/blobs/" + d, {{"Range", "bytes=3145000-"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 206);
  EXPECT_EQ(Body(r), data.substr(3145000));
  r = c->Get("/v2/mono/repo/blobs/" + d, {{"Range", "bytes=99999999-"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 416);

  // Blobs are per repository.
  r = c->Get("/v2/mono/other/blobs/" + d);
  EXPECT_EQ(St(r), 404);

  // A wrong digest is refused and nothing becomes visible.
  std::string wrong = DigestOf("something else");
  r = c->Post("/v2/mono/repo/blobs/uploads/?digest=" + wrong, "payload",
              "application/octet-stream");
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 400);
  EXPECT_EQ(ErrorCode(r), "DIGEST_INVALID");
  r = c->Head("/v2/mono/repo/blobs/" + wrong);
  EXPECT_EQ(St(r), 404);
  r = c->Head("/v2/mono/repo/blobs/" + DigestOf("payload"));
  EXPECT_EQ(St(r), 404);

  // Delete unlinks.
  r = c->Delete("/v2/mono/repo/blobs/" + d);
  EXPECT_EQ(St(r), 202);
  r = c->Head("/v2/mono/repo/blobs/" + d);
  EXPECT_EQ(St(r), 404);
}

TEST(RegistryProtocol, ChunkedUploadStatusCancelAndMount) {
  auto c = g_reg->Client();
  std::string data = RandomBytes(1 << 20, 2);
  std::string d = PushBlobChunked(*c, "chunk/a", data, 300 * 1024);
  auto r = c->Get("/v2/chunk/a/blobs/" + d);
  ASSERT_TRUE(r);
  EXPECT_EQ(Body(r), data);

  // Status, out-of-order chunk (416), cancel.
  r = c->Post("/v2/chunk/a/blobs/uploads/", "", "application/octet-stream");
  ASSERT_EQ(St(r), 202);
  std::string loc = r->get_header_value("Location");
  auto p = c->Patch(loc.c_str(), {{"Content-Range", "0-9"}}, "0123456789", 10,
                    "application/octet-stream");
  ASSERT_EQ(St(p), 202);
  auto st = c->Get(loc.c_str());
  ASSERT_TRUE(st);
  EXPECT_EQ(St(st), 204);
  EXPECT_EQ(st->get_header_value("Range"), "0-9");
  p = c->Patch(loc.c_str(), {{"Content-Range", "20-29"}}, "0123456789", 10,
               "application/octet-stream");
  EXPECT_EQ(St(p), 416);
  auto del = c->Delete(loc.c_str());
  EXPECT_EQ(St(del), 204);
  st = c->Get(loc.c_str());
  EXPECT_EQ(St(st), 404);
  EXPECT_EQ(ErrorCode(st), "BLOB_UPLOAD_UNKNOWN");
  auto put = c->Put((loc + "?digest=" + DigestOf("0123456789")).c_str(), "", "text/plain");
  EXPECT_EQ(St(put), 404);

  // Finishing with a body on the PUT (chunk + final chunk), and a bad digest on PUT.
  r = c->Post("/v2/chunk/a/blobs/uploads/", "", "application/octet-stream");
  loc = r->get_header_value("Location");
  c->Patch(loc.c_str(), "abc", 3, "application/octet-stream");
  put = c->Put((loc + "?digest=" + DigestOf("abcdef")).c_str(), "def", "application/octet-stream");
  EXPECT_EQ(St(put), 201);
  r = c->Get("/v2/chunk/a/blobs/" + DigestOf("abcdef"));
  EXPECT_EQ(Body(r), "abcdef");

  // Cross-repo mount: 201 from a repo that has it, a new upload (202) otherwise.
  r = c->Post("/v2/chunk/b/blobs/uploads/?mount=" + d + "&from=chunk/a", "", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 201);
  EXPECT_EQ(r->get_header_value("Docker-Content-Digest"), d);
  r = c->Get("/v2/chunk/b/blobs/" + d);
  EXPECT_EQ(Body(r), data);
  r = c->Post("/v2/chunk/c/blobs/uploads/?mount=" + d + "&from=chunk/none", "", "text/plain");
  EXPECT_EQ(St(r), 202);
}

TEST(RegistryProtocol, ManifestsTagsCatalogReferrers) {
  auto c = g_reg->Client();
  std::string cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\"}";
  std::string layer = MakeLayer("tags");
  PushBlob(*c, "man/app", cfg);
  std::string ld = PushBlobChunked(*c, "man/app", layer, 100000);
  std::string m = MakeManifest(cfg, {layer});
  std::string md = PushManifest(*c, "man/app", "v1", m);
  PushManifest(*c, "man/app", "v2", m);
  PushManifest(*c, "man/app", "v3", m);

  for (const std::string& ref : {std::string("v1"), md}) {
    auto r = c->Get(("/v2/man/app/manifests/" + ref).c_str(), {{"Accept", kOciManifest}});
    ASSERT_TRUE(r);
    EXPECT_EQ(St(r), 200);
    EXPECT_EQ(Body(r), m);
    EXPECT_EQ(r->get_header_value("Docker-Content-Digest"), md);
    EXPECT_EQ(r->get_header_value("Content-Type"), kOciManifest);
    auto h = c->Head(("/v2/man/app/manifests/" + ref).c_str());
    EXPECT_EQ(St(h), 200);
    EXPECT_EQ(h->get_header_value("Content-Length"), std::to_string(m.size()));
    EXPECT_EQ(h->get_header_value("Docker-Content-Digest"), md);
  }
  // Accept that excludes the stored type.
  auto r = c->Get("/v2/man/app/manifests/v1",
                  {{"Accept", "application/vnd.docker.distribution.manifest.v2+json"}});
  EXPECT_EQ(St(r), 404);

  // Tags with pagination.
  r = c->Get("/v2/man/app/tags/list");
  EXPECT_EQ(json::parse(Body(r))["tags"], json({"v1", "v2", "v3"}));
  r = c->Get("/v2/man/app/tags/list?n=2");
  EXPECT_EQ(json::parse(Body(r))["tags"], json({"v1", "v2"}));
  EXPECT_EQ(r->get_header_value("Link"), "</v2/man/app/tags/list?n=2&last=v2>; rel=\"next\"");
  r = c->Get("/v2/man/app/tags/list?n=2&last=v2");
  EXPECT_EQ(json::parse(Body(r))["tags"], json({"v3"}));
  EXPECT_FALSE(r->has_header("Link"));

  // Catalog pagination over man/app, man/app2.
  PushManifest(*c, "man/app2", "x", m, kOciManifest, 201);
  r = c->Get("/v2/_catalog?n=1&last=man/a");
  EXPECT_EQ(json::parse(Body(r))["repositories"], json({"man/app"}));
  EXPECT_TRUE(r->has_header("Link"));
  r = c->Get("/v2/_catalog?n=1&last=man/app");
  EXPECT_EQ(json::parse(Body(r))["repositories"], json({"man/app2"}));

  // Resolver API: the layer has a CID, an index CID and the media type from the manifest.
  r = c->Get("/ipfly/v1/layers/" + ld);
  ASSERT_EQ(St(r), 200);
  json lj = json::parse(Body(r));
  EXPECT_EQ(lj["size"], layer.size());
  EXPECT_EQ(lj["mediaType"], kOciLayerGzip);
  EXPECT_TRUE(lj["cid"].get<std::string>().starts_with("bafy")) << lj;
  EXPECT_TRUE(lj["index_cid"].get<std::string>().starts_with("baf")) << lj;
  r = c->Get("/ipfly/v1/layers/" + DigestOf("unknown layer"));
  EXPECT_EQ(St(r), 404);
  r = c->Get("/ipfly/v1/layers/sha256:nothex");
  EXPECT_EQ(St(r), 400);

  // Referrers: an artifact whose subject is the image.
  std::string acfg = "{}";
  PushBlob(*c, "man/app", acfg);
  json art = {{"schemaVersion", 2},
              {"mediaType", kOciManifest},
              {"artifactType", "application/vnd.example.sbom"},
              {"config", Descriptor("application/vnd.oci.empty.v1+json", acfg)},
              {"layers", json::array()},
              {"subject", Descriptor(kOciManifest, m)},
              {"annotations", {{"org.example", "yes"}}}};
  std::string ad = DigestOf(art.dump());
  auto pr = c->Put(("/v2/man/app/manifests/" + ad).c_str(), art.dump(), kOciManifest);
  ASSERT_EQ(St(pr), 201) << pr->body;
  EXPECT_EQ(pr->get_header_value("OCI-Subject"), md);
  r = c->Get("/v2/man/app/referrers/" + md);
  ASSERT_EQ(St(r), 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), kOciIndex);
  json idx = json::parse(Body(r));
  ASSERT_EQ(idx["manifests"].size(), 1u);
  EXPECT_EQ(idx["manifests"][0]["digest"], ad);
  EXPECT_EQ(idx["manifests"][0]["artifactType"], "application/vnd.example.sbom");
  EXPECT_EQ(idx["manifests"][0]["annotations"]["org.example"], "yes");
  r = c->Get("/v2/man/app/referrers/" + md + "?artifactType=other");
  EXPECT_EQ(json::parse(Body(r))["manifests"].size(), 0u);
  EXPECT_EQ(r->get_header_value("OCI-Filters-Applied"), "artifactType");

  // An index over the image.
  json index = {{"schemaVersion", 2},
                {"mediaType", kOciIndex},
                {"manifests", json::array({Descriptor(kOciManifest, m)})}};
  PushManifest(*c, "man/app", "multi", index.dump(), kOciIndex);
  r = c->Get("/v2/man/app/manifests/multi");
  EXPECT_EQ(r->get_header_value("Content-Type"), kOciIndex);

  // Delete a tag, then the manifest (which drops its remaining tags).
  r = c->Delete("/v2/man/app/manifests/v3");
  EXPECT_EQ(St(r), 202);
  EXPECT_EQ(St(c->Get("/v2/man/app/manifests/v3")), 404);
  r = c->Delete(("/v2/man/app2/manifests/" + md).c_str());
  EXPECT_EQ(St(r), 202);
  EXPECT_EQ(St(c->Get("/v2/man/app2/manifests/x")), 404);
  EXPECT_EQ(St(c->Get(("/v2/man/app2/manifests/" + md).c_str())), 404);
  EXPECT_EQ(St(c->Get(("/v2/man/app/manifests/" + md).c_str())), 200);
}

// ipfly's own GatewaySource (what the snapshotter uses with gateway=http://registry) reads the
// registry's blocks: per block, and as CAR streams with entity-bytes ranges.
TEST(RegistryGateway, InteroperatesWithGatewaySource) {
  auto c = g_reg->Client();
  std::string data = RandomBytes(5 * 1024 * 1024 + 3, 3);
  std::string d = PushBlob(*c, "gw/blob", data);
  auto r = c->Get("/ipfly/v1/layers/" + d);
  ASSERT_EQ(St(r), 200);
  auto cid = mf::Cid::Parse(json::parse(Body(r))["cid"].get<std::string>());
  ASSERT_TRUE(cid.ok());

  fetch::GatewaySource gw(g_reg->url(), nullptr);
  auto deadline = fetch::DeadlineIn(std::chrono::seconds(30));
  auto root = gw.Get(*cid, deadline);
  ASSERT_TRUE(root.ok()) << root.error().ToString();

  // StreamDag with a range: the blocks delivered cover the range (checked through a reader).
  size_t blocks = 0;
  Status st =
      gw.StreamDag(*cid, fetch::EntityRange{1'000'000, 1'600'000}, deadline, [&](const Block&) {
        ++blocks;
        return OkStatus();
      });
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_GE(blocks, 4u);  // root + the leaves of ~600 KB in 256 KiB chunks
  EXPECT_LE(blocks, 6u);

  // A reader over the gateway alone returns exactly the blob bytes.
  for (bool use_stream : {false, true}) {
    fetch::UnixfsReaderOptions o;
    o.use_stream_dag = use_stream;
    fetch::UnixfsReader reader(&gw, o);
    std::string got;
    Status s = reader.Stream(
        *cid, 123457, 3'000'000,
        [&](ByteView b) {
          got.append(AsString(b));
          return OkStatus();
        },
        deadline);
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    EXPECT_EQ(got, data.substr(123457, 3'000'000));
    EXPECT_EQ(reader.stats().blocks_streamed > 0, use_stream);
  }

  // Raw via Accept, HEAD, unknown CID, unsupported format.
  auto raw = c->Get(("/ipfs/" + cid->ToString()).c_str(), {{"Accept", "application/vnd.ipld.raw"}});
  ASSERT_EQ(St(raw), 200);
  EXPECT_EQ(raw->get_header_value("Content-Type"), "application/vnd.ipld.raw");
  EXPECT_EQ(Body(raw), std::string(AsString(root->data())));
  auto head = c->Head(("/ipfs/" + cid->ToString() + "?format=raw").c_str());
  EXPECT_EQ(St(head), 200);
  auto missing =
      c->Get("/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e?format=raw");
  EXPECT_EQ(St(missing), 404);
  auto bad = c->Get("/ipfs/notacid?format=raw");
  EXPECT_EQ(St(bad), 400);
}

// A corrupt block aborts the blob response (never wrong bytes); a catalog that maps a digest to
// other content is caught by the streaming sha256 check.
TEST(RegistryFaults, CorruptBlockAndDigestMismatchAbort) {
  Registry reg;
  reg.Start();
  auto c = reg.Client();
  std::string a = RandomBytes(2 << 20, 10), b = RandomBytes(2 << 20, 11),
              other = RandomBytes(2 << 20, 12);
  std::string da = PushBlob(*c, "f/a", a), db = PushBlob(*c, "f/a", b);
  PushBlob(*c, "f/a", other);

  // Point a's digest at the CID of `other` (same size, different bytes).
  auto ro = c->Get("/ipfly/v1/layers/" + DigestOf(other));
  std::string cid_other = json::parse(Body(ro))["cid"];
  reg.Stop();
  {
    sqlite3* db_h = nullptr;
    ASSERT_EQ(sqlite3_open((reg.root() + "/catalog.db").c_str(), &db_h), SQLITE_OK);
    std::string sql = "UPDATE blobs SET cid='" + cid_other + "' WHERE digest='" + da + "'";
    ASSERT_EQ(sqlite3_exec(db_h, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db_h);
  }
  // Corrupt the second leaf of b.
  {
    auto store = fetch::FsBlockStore::Open(reg.root() + "/store");
    ASSERT_TRUE(store.ok());
    std::string leaf = b.substr(262144, 262144);
    auto blk = Block::Make(0x55, Bytes(leaf.begin(), leaf.end()));
    ASSERT_TRUE(blk.ok());
    std::string path = (*store)->BlockPath(blk->cid().multihash());
    ASSERT_TRUE(fs::exists(path));
    leaf[100] ^= 1;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << leaf;
  }
  reg.Start();
  c = reg.Client();
  auto r = c->Get("/v2/f/a/blobs/" + db);
  EXPECT_TRUE(!r || Body(r).size() < b.size()) << "corrupt content must not be served";
  r = c->Get("/v2/f/a/blobs/" + db, {{"Range", "bytes=262144-524287"}});
  EXPECT_TRUE(!r || Body(r).size() < 262144u);
  // a's digest now maps to other bytes: the sha256 check drops the connection before the end.
  r = c->Get("/v2/f/a/blobs/" + da);
  EXPECT_TRUE(!r || Body(r).size() < a.size());
  auto m = c->Get("/metrics");
  EXPECT_NE(Body(m).find("ipfly_registry_digest_mismatches_total 1"), std::string::npos) << Body(m);
}

// kill -9 during a chunked upload: after a restart nothing partial is visible, the upload is
// gone, and what was complete before is intact.
TEST(RegistryFaults, Kill9DuringChunkedUpload) {
  Registry reg;
  reg.Start();
  auto c = reg.Client();
  std::string cfg = "{\"os\":\"linux\"}";
  std::string layer = RandomBytes(1 << 20, 20);
  PushBlob(*c, "crash/app", cfg);
  PushBlob(*c, "crash/app", layer);
  std::string m = MakeManifest(cfg, {layer});
  std::string md = PushManifest(*c, "crash/app", "ok", m);

  std::string big = RandomBytes(4 << 20, 21);
  auto r = c->Post("/v2/crash/app/blobs/uploads/", "", "application/octet-stream");
  ASSERT_EQ(St(r), 202);
  std::string loc = r->get_header_value("Location");
  auto p = c->Patch(loc.c_str(), big.data(), 2 << 20, "application/octet-stream");
  ASSERT_EQ(St(p), 202);
  // Also a request in flight: a second PATCH cut off by the kill.
  std::thread writer([&] {
    httplib::Client c2("127.0.0.1", reg.port());
    c2.Patch(loc.c_str(), big.data() + (2 << 20), 2 << 20, "application/octet-stream");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  reg.Kill9();
  writer.join();
  EXPECT_FALSE(fs::is_empty(reg.root() + "/uploads"));

  reg.Start();
  c = reg.Client();
  EXPECT_TRUE(fs::is_empty(reg.root() + "/uploads"));
  EXPECT_EQ(St(c->Get(loc.c_str())), 404);
  EXPECT_EQ(St(c->Head(("/v2/crash/app/blobs/" + DigestOf(big)).c_str())), 404);
  EXPECT_EQ(St(c->Get(("/ipfly/v1/layers/" + DigestOf(big)).c_str())), 404);
  auto got = c->Get("/v2/crash/app/manifests/ok");
  ASSERT_EQ(St(got), 200);
  EXPECT_EQ(Body(got), m);
  EXPECT_EQ(Body(c->Get(("/v2/crash/app/blobs/" + DigestOf(layer)).c_str())), layer);
  // The catalog passes SQLite's integrity check.
  sqlite3* db_h = nullptr;
  ASSERT_EQ(sqlite3_open((reg.root() + "/catalog.db").c_str(), &db_h), SQLITE_OK);
  std::string result;
  sqlite3_exec(
      db_h, "PRAGMA integrity_check",
      [](void* out, int, char** vals, char**) {
        *static_cast<std::string*>(out) += vals[0] ? vals[0] : "";
        return 0;
      },
      &result, nullptr);
  sqlite3_close(db_h);
  EXPECT_EQ(result, "ok");
}

TEST(RegistryOps, ReadOnlyTokenAndSizeLimit) {
  TempDir d;
  std::ofstream(d / "cfg.toml") << "[store]\ndir = \"" << d / "store"
                                << "\"\n[registry]\npush_token = \"s3cret\"\n"
                                   "max_upload_size = \"1MiB\"\n";
  Registry reg;
  reg.Start({"--config", d / "cfg.toml"});
  auto c = reg.Client();
  auto r = c->Post("/v2/t/x/blobs/uploads/?digest=" + DigestOf("a"), "a", "text/plain");
  EXPECT_EQ(St(r), 401);
  EXPECT_EQ(ErrorCode(r), "UNAUTHORIZED");
  EXPECT_FALSE(r->get_header_value("WWW-Authenticate").empty());
  c->set_bearer_token_auth("s3cret");
  r = c->Post("/v2/t/x/blobs/uploads/?digest=" + DigestOf("a"), "a", "text/plain");
  EXPECT_EQ(St(r), 201);
  auto c2 = reg.Client();
  c2->set_basic_auth("anyone", "s3cret");
  std::string big(2 << 20, 'z');
  r = c2->Post("/v2/t/x/blobs/uploads/?digest=" + DigestOf(big), big, "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 413);
  EXPECT_EQ(St(c2->Get(("/v2/t/x/blobs/" + DigestOf("a")).c_str())), 200);
  reg.Stop();

  Registry ro;
  ro.Start({"--read-only"});
  auto c3 = ro.Client();
  EXPECT_EQ(St(c3->Get("/v1/search?q=x")), 200);
  r = c3->Post("/v2/t/x/blobs/uploads/", "", "text/plain");
  EXPECT_EQ(St(r), 405);
  EXPECT_EQ(St(c3->Get("/v2/")), 200);
}

// htpasswd (bcrypt, $2y$ and $2b$ hashes) push auth with a real client; anonymous pulls stay open.
TEST(RegistryOps, HtpasswdPushWithSkopeo) {
  TempDir d;
  auto h =
      Sh("python3 -W ignore -c \"import crypt; print(crypt.crypt('pw1', "
         "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))\"");
  ASSERT_EQ(h.exit_code, 0) << h.err;
  std::string hash = h.out.substr(0, h.out.find('\n'));
  ASSERT_TRUE(hash.starts_with("$2b$")) << hash;
  std::string hash_y = "$2y$" + hash.substr(4);
  std::ofstream(d / "htpasswd") << "alice:" << hash_y << "\nbob:" << hash << "\n";
  std::ofstream(d / "cfg.toml") << "[store]\ndir = \"" << d / "store"
                                << "\"\n[registry]\nhtpasswd = \"" << d / "htpasswd"
                                << "\"\n";
  Registry reg;
  reg.Start({"--config", d / "cfg.toml"});
  auto mk = MakeBusyboxImage(d / "bb.tar");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  auto push = [&](const std::string& creds) {
    std::vector<std::string> argv = {"skopeo", "copy", "--dest-tls-verify=false"};
    if (!creds.empty()) argv.push_back("--dest-creds=" + creds);
    argv.push_back("oci-archive:" + d / "bb.tar");
    argv.push_back("docker://" + reg.host() + "/auth/bb:1");
    return RunCmd(argv);
  };
  EXPECT_NE(push("").exit_code, 0);
  EXPECT_NE(push("alice:wrong").exit_code, 0);
  auto ok = push("alice:pw1");
  EXPECT_EQ(ok.exit_code, 0) << ok.err << reg.log();
  EXPECT_EQ(push("bob:pw1").exit_code, 0);
  auto c = reg.Client();
  EXPECT_EQ(St(c->Get("/v2/auth/bb/manifests/1")), 200);  // anonymous pull
  EXPECT_EQ(St(c->Get("/v2/")), 401);
  EXPECT_EQ(St(c->Delete("/v2/auth/bb/manifests/1")), 401);
}

// Docker's search API over the catalog, with descriptions from image labels.
TEST(RegistryOps, Search) {
  auto c = g_reg->Client();
  std::string cfg =
      "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Labels\":{"
      "\"org.opencontainers.image.description\":\"a searchable image\"}}}";
  PushBlob(*c, "search/findme", cfg);
  PushManifest(*c, "search/findme", "latest", MakeManifest(cfg, {}));
  auto r = c->Get("/v1/search?q=findme&n=5");
  ASSERT_EQ(St(r), 200);
  json j = json::parse(Body(r));
  ASSERT_EQ(j["num_results"], 1);
  EXPECT_EQ(j["query"], "findme");
  EXPECT_EQ(j["results"][0]["name"], "search/findme");
  EXPECT_EQ(j["results"][0]["description"], "a searchable image");
  EXPECT_EQ(json::parse(Body(c->Get("/v1/search?q=nomatchatall")))["num_results"], 0);
}

// skopeo (containers/image) pushes an OCI and a Docker schema2 image, copies them back, inspects
// and lists tags; blobs and manifests come back byte-identical.
TEST(RegistryClients, SkopeoPushPullInspect) {
  TempDir d;
  auto mk = MakeBusyboxImage(d / "bb.tar");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  ASSERT_EQ(
      Sh("mkdir -p " + d / "src" + " && tar -C " + d / "src" + " -xf " + d / "bb.tar").exit_code,
      0);
  json index = json::parse(ReadFile(d / "src/index.json"));
  std::string mdigest = index["manifests"][0]["digest"];
  std::string manifest = ReadFile(d / "src/blobs/sha256/" + mdigest.substr(7));
  const json manifest_json = json::parse(manifest);

  const std::string host = g_reg->host();
  auto cp = SkopeoPush(d / "bb.tar", host, "sk/oci:1");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
  cp = RunCmd({"skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2",
               "oci-archive:" + d / "bb.tar", "docker://" + host + "/sk/v2s2:1"});
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
  cp = SkopeoPush(d / "bb.tar", host, "sk/oci:2");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;

  // The OCI manifest is stored byte-for-byte.
  auto raw = RunCmd(
      {"skopeo", "inspect", "--tls-verify=false", "--raw", "docker://" + host + "/sk/oci:1"});
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  EXPECT_EQ(raw.out, manifest);
  auto insp = RunCmd({"skopeo", "inspect", "--tls-verify=false", "docker://" + host + "/sk/oci:1"});
  ASSERT_EQ(insp.exit_code, 0) << insp.err;
  json ij = json::parse(insp.out);
  EXPECT_EQ(ij["Digest"], mdigest);
  EXPECT_EQ(ij["Layers"].size(), 2u);
  auto v2raw = RunCmd(
      {"skopeo", "inspect", "--tls-verify=false", "--raw", "docker://" + host + "/sk/v2s2:1"});
  ASSERT_EQ(v2raw.exit_code, 0);
  EXPECT_EQ(json::parse(v2raw.out)["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json");
  auto tags = RunCmd({"skopeo", "list-tags", "--tls-verify=false", "docker://" + host + "/sk/oci"});
  ASSERT_EQ(tags.exit_code, 0) << tags.err;
  EXPECT_EQ(json::parse(tags.out)["Tags"], json({"1", "2"}));

  // Copy back; every blob and the manifest are byte-identical to the source layout.
  for (const std::string& repo : {std::string("sk/oci:1"), std::string("sk/v2s2:1")}) {
    std::string out = d / ("out-" + repo.substr(3, repo.find(':') - 3));
    cp = RunCmd({"skopeo", "copy", "--src-tls-verify=false", "docker://" + host + "/" + repo,
                 "oci:" + out + ":x"});
    ASSERT_EQ(cp.exit_code, 0) << cp.err;
    for (const auto& e : fs::directory_iterator(out + "/blobs/sha256")) {
      std::string name = e.path().filename();
      std::string got = ReadFile(e.path());
      EXPECT_EQ(DigestOf(got), "sha256:" + name);
      if (fs::exists(d / "src/blobs/sha256/" + name)) {
        EXPECT_EQ(got, ReadFile(d / "src/blobs/sha256/" + name)) << name;
      }
    }
    for (const auto& l : manifest_json["layers"]) {
      std::string ld = l["digest"];
      EXPECT_TRUE(fs::exists(out + "/blobs/sha256/" + ld.substr(7))) << ld;
    }
  }
  EXPECT_EQ(json::parse(ReadFile(d / "out-oci/index.json"))["manifests"][0]["digest"], mdigest);

  // The layers have resolver entries with layer indexes.
  for (const auto& l : manifest_json["layers"]) {
    auto c = g_reg->Client();
    auto r = c->Get(("/ipfly/v1/layers/" + l["digest"].get<std::string>()).c_str());
    ASSERT_EQ(St(r), 200);
    json j = json::parse(Body(r));
    EXPECT_FALSE(j["index_cid"].get<std::string>().empty());
    EXPECT_EQ(j["mediaType"], l["mediaType"]);
  }
}

// IPFS-format view: /v2/ipfs/<repo> serves <repo>'s manifests with ipfs:// urls and the ipfly
// snapshot annotations, under their own (different) digest, consistently.
TEST(RegistryClients, IpfsFormatView) {
  TempDir d;
  auto mk = MakeBusyboxImage(d / "bb.tar", std::chrono::seconds(60));
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  const std::string host = g_reg->host();
  auto cp = SkopeoPush(d / "bb.tar", host, "view/app:1");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;

  auto c = g_reg->Client();
  auto orig = c->Get("/v2/view/app/manifests/1");
  ASSERT_EQ(St(orig), 200);
  auto r = c->Get("/v2/ipfs/view/app/manifests/1");
  ASSERT_EQ(St(r), 200) << Body(r);
  std::string vd = r->get_header_value("Docker-Content-Digest");
  EXPECT_EQ(vd, DigestOf(Body(r)));
  EXPECT_NE(vd, orig->get_header_value("Docker-Content-Digest"));
  json m = json::parse(Body(r));
  ASSERT_EQ(m["layers"].size(), 2u);
  for (const auto& l : m["layers"]) {
    auto lr = c->Get(("/ipfly/v1/layers/" + l["digest"].get<std::string>()).c_str());
    json lj = json::parse(Body(lr));
    EXPECT_EQ(l["urls"][0], "ipfs://" + lj["cid"].get<std::string>());
    EXPECT_EQ(l["annotations"]["containerd.io/snapshot/ipfly.cid"], lj["cid"]);
    EXPECT_EQ(l["annotations"]["containerd.io/snapshot/ipfly.index"], lj["index_cid"]);
  }
  EXPECT_TRUE(m["config"]["urls"][0].get<std::string>().starts_with("ipfs://bafk"));
  // Same bytes by digest, and again by tag.
  auto byd = c->Get(("/v2/ipfs/view/app/manifests/" + vd).c_str());
  ASSERT_EQ(St(byd), 200);
  EXPECT_EQ(Body(byd), Body(r));
  EXPECT_EQ(Body(c->Get("/v2/ipfs/view/app/manifests/1")), Body(r));
  // Views are read-only; tags come from the repository.
  EXPECT_EQ(St(c->Put("/v2/ipfs/view/app/manifests/2", Body(r), kOciManifest)), 405);
  EXPECT_EQ(json::parse(Body(c->Get("/v2/ipfs/view/app/tags/list")))["tags"], json({"1"}));
  // A real client pulls the view (containers/image skips ipfs:// urls, fetches from the registry).
  cp = RunCmd({"skopeo", "copy", "--src-tls-verify=false", "docker://" + host + "/ipfs/view/app:1",
               "oci:" + d / "out" + ":x"});
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
  EXPECT_EQ(json::parse(ReadFile(d / "out/index.json"))["manifests"][0]["digest"], vd);
}

// docker-registry (distribution) on a free loopback port.
class DockerRegistry {
 public:
  void Start() {
    port_ = FreePort();
    std::ofstream(dir_ / "cfg.yml")
        << "version: 0.1\nstorage: {filesystem: {rootdirectory: " << dir_ / "data"
        << "}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:" << port_
        << "}\nlog: {level: error}\n";
    pid_ = Spawn({"docker-registry", "serve", dir_ / "cfg.yml"}, dir_ / "log");
    ASSERT_GT(pid_, 0);
    ASSERT_TRUE(WaitFor(
        [&] {
          httplib::Client c("127.0.0.1", port_);
          auto r = c.Get("/v2/");
          return r && St(r) == 200;
        },
        std::chrono::seconds(10)))
        << ReadFile(dir_ / "log");
  }
  void Stop() {
    if (pid_ > 0) StopPid(pid_);
    pid_ = -1;
  }
  ~DockerRegistry() { Stop(); }
  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// Pull-through mirror: docker-registry upstream; the first pull imports into IPFS, the second
// works with the upstream stopped; an uncached tag then gives a clear spec error.
TEST(RegistryMirror, PullThroughDockerRegistry) {
  TempDir d;
  auto mk = MakeBusyboxImage(d / "bb.tar");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  DockerRegistry up;
  up.Start();
  auto cp = SkopeoPush(d / "bb.tar", up.host(), "library/bb:1");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
  auto raw_up = RunCmd({"skopeo", "inspect", "--tls-verify=false", "--raw",
                        "docker://" + up.host() + "/library/bb:1"});
  ASSERT_EQ(raw_up.exit_code, 0);

  Registry mirror;
  mirror.Start({"--upstream", "http://" + up.host()});
  cp = RunCmd({"skopeo", "copy", "--src-tls-verify=false",
               "docker://" + mirror.host() + "/library/bb:1", "oci:" + d / "first" + ":x"});
  ASSERT_EQ(cp.exit_code, 0) << cp.err << mirror.log();
  auto c = mirror.Client();
  // containerd mirrors add ?ns=; the manifest is byte-identical to upstream's.
  auto m = c->Get("/v2/library/bb/manifests/1?ns=docker.io");
  ASSERT_EQ(St(m), 200);
  EXPECT_EQ(Body(m), raw_up.out);
  json mj = json::parse(Body(m));
  for (const auto& l : mj["layers"]) {
    auto r = c->Get(("/ipfly/v1/layers/" + l["digest"].get<std::string>()).c_str());
    ASSERT_EQ(St(r), 200);
    EXPECT_FALSE(json::parse(Body(r))["index_cid"].get<std::string>().empty());
  }
  auto metrics = Body(c->Get("/metrics"));
  EXPECT_NE(metrics.find("ipfly_registry_upstream_misses_total 4"), std::string::npos) << metrics;

  // The IPFS-format view of a not-yet-mirrored image mirrors it whole (every blob needs a CID).
  auto mk2 = Sh("MARKER=second " + std::string(IPFLY_REGISTRY_TEST_DIR) + "/make-busybox-image " +
                d / "bb2.tar");
  ASSERT_EQ(mk2.exit_code, 0) << mk2.err;
  cp = SkopeoPush(d / "bb2.tar", up.host(), "library/bb2:1");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;
  auto view = c->Get("/v2/ipfs/library/bb2/manifests/1");
  ASSERT_EQ(St(view), 200) << Body(view) << mirror.log();
  json vj = json::parse(Body(view));
  for (const auto& l : vj["layers"]) {
    ASSERT_TRUE(l.contains("urls")) << l;
    EXPECT_TRUE(l["urls"][0].get<std::string>().starts_with("ipfs://"));
    EXPECT_TRUE(l["annotations"].contains("containerd.io/snapshot/ipfly.index"));
  }
  EXPECT_EQ(St(c->Get("/v2/ipfs/library/nope/manifests/1")), 404);

  // Repositories stay isolated: a blob the mirror holds for library/bb is not handed to a
  // repository the upstream does not have it in.
  std::string first_layer = mj["layers"][0]["digest"];
  auto other = c->Get(("/v2/other/secret/blobs/" + first_layer).c_str());
  ASSERT_TRUE(other);
  EXPECT_EQ(St(other), 404) << mirror.log();
  EXPECT_EQ(ErrorCode(other), "BLOB_UNKNOWN");

  up.Stop();
  cp = RunCmd({"skopeo", "copy", "--src-tls-verify=false",
               "docker://" + mirror.host() + "/library/bb:1", "oci:" + d / "second" + ":x"});
  ASSERT_EQ(cp.exit_code, 0) << cp.err << mirror.log();
  for (const auto& e : fs::directory_iterator(d / "first/blobs/sha256")) {
    EXPECT_EQ(ReadFile(e.path()),
              ReadFile(d / "second/blobs/sha256/" + e.path().filename().string()));
  }
  // A range read of a mirrored layer is served from IPFS.
  std::string ld = mj["layers"][0]["digest"];
  auto rr = c->Get(("/v2/library/bb/blobs/" + ld).c_str(), {{"Range", "bytes=10-19"}});
  ASSERT_EQ(St(rr), 206);
  EXPECT_EQ(Body(rr).size(), 10u);
  auto miss = c->Get("/v2/library/bb/manifests/2");
  ASSERT_TRUE(miss);
  EXPECT_EQ(St(miss), 503);
  EXPECT_EQ(ErrorCode(miss), "UNAVAILABLE");
}

// kill -9 while a mirrored blob streams: after the restart (upstream gone) nothing partial is
// visible, and SIGTERM ends the registry cleanly.
TEST(RegistryMirror, Kill9DuringMirrorImportAndSigterm) {
  DockerRegistry up;
  up.Start();
  std::string big = RandomBytes(64 << 20, 40);
  std::string bd = DigestOf(big);
  {
    httplib::Client c("127.0.0.1", up.port());
    auto r = c.Post("/v2/mir/big/blobs/uploads/", "", "application/octet-stream");
    ASSERT_TRUE(r && St(r) == 202);
    std::string loc = r->get_header_value("Location");
    std::string path = loc.substr(loc.find("/v2/"));
    path += (path.find('?') == std::string::npos ? "?" : "&") + std::string("digest=") + bd;
    auto p = c.Put(path.c_str(), big, "application/octet-stream");
    ASSERT_TRUE(p && St(p) == 201) << (p ? p->body : "no response");
  }
  Registry mirror;
  mirror.Start({"--upstream", "http://127.0.0.1:" + std::to_string(up.port())});
  std::atomic<size_t> got{0};
  std::thread reader([&] {
    httplib::Client c("127.0.0.1", mirror.port());
    // A slow reader: back-pressure keeps the mirror mid-transfer (it forwards while it reads
    // upstream), so the kill below always lands before the import.
    c.Get(("/v2/mir/big/blobs/" + bd).c_str(), [&](const char*, size_t n) {
      got += n;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return true;
    });
  });
  ASSERT_TRUE(WaitFor([&] { return got.load() > (1u << 20); }, std::chrono::seconds(20)));
  mirror.Kill9();
  reader.join();
  EXPECT_LT(got.load(), big.size());
  up.Stop();
  mirror.Start({"--upstream", "http://127.0.0.1:" + std::to_string(up.port())});
  auto c = mirror.Client();
  EXPECT_EQ(St(c->Get(("/ipfly/v1/layers/" + bd).c_str())), 404);
  auto r = c->Get(("/v2/mir/big/blobs/" + bd).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(St(r), 503);
  EXPECT_EQ(ErrorCode(r), "UNAVAILABLE");
  EXPECT_TRUE(fs::is_empty(mirror.root() + "/uploads"));

  // SIGTERM: a clean exit (status 0) within seconds, even with an idle keep-alive client.
  httplib::Client idle("127.0.0.1", mirror.port());
  idle.set_keep_alive(true);
  ASSERT_TRUE(idle.Get("/v2/"));
  pid_t pid = mirror.pid();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  mirror.Forget();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

// An upstream that wants Bearer tokens (the Docker Hub flow): a proxy in front of
// docker-registry that answers 401 + WWW-Authenticate until the client brings the token its
// realm issues (and the realm wants the configured Basic credentials).
TEST(RegistryMirror, BearerTokenUpstream) {
  TempDir d;
  auto mk = MakeBusyboxImage(d / "bb.tar");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  DockerRegistry up;
  up.Start();
  auto cp = SkopeoPush(d / "bb.tar", up.host(), "team/bb:1");
  ASSERT_EQ(cp.exit_code, 0) << cp.err;

  httplib::Server proxy;
  std::atomic<int> tokens_issued{0}, challenged{0};
  int pport = FreePort();
  const std::string realm = "http://127.0.0.1:" + std::to_string(pport) + "/token";
  proxy.Get("/token", [&](const httplib::Request& req, httplib::Response& res) {
    // user:pass base64 = dXNlcjpwYXNz
    if (req.get_header_value("Authorization") != "Basic dXNlcjpwYXNz" ||
        req.get_param_value("service") != "test-registry" ||
        req.get_param_value("scope") != "repository:team/bb:pull") {
      res.status = 401;
      return;
    }
    ++tokens_issued;
    res.set_content("{\"token\":\"tok-123\",\"expires_in\":300}", "application/json");
  });
  proxy.Get("/v2/.*", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != "Bearer tok-123") {
      ++challenged;
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer realm=\"" + realm +
                                             "\",service=\"test-registry\",scope=\"repository:"
                                             "team/bb:pull\"");
      return;
    }
    httplib::Client c("127.0.0.1", up.port());
    httplib::Headers h;
    if (req.has_header("Accept")) h.emplace("Accept", req.get_header_value("Accept"));
    auto r = req.method == "HEAD" ? c.Head(req.path, h) : c.Get(req.path, h);
    if (!r) {
      res.status = 502;
      return;
    }
    res.status = St(r);
    for (const char* k : {"Docker-Content-Digest", "Content-Length"}) {
      if (r->has_header(k)) res.set_header(k, r->get_header_value(k));
    }
    res.set_content(Body(r), r->get_header_value("Content-Type"));
  });
  std::thread t([&] { proxy.listen("127.0.0.1", pport); });
  ASSERT_TRUE(WaitFor([&] { return proxy.is_running(); }, std::chrono::seconds(5)));

  std::ofstream(d / "cfg.toml") << "[store]\ndir = \"" << d / "store"
                                << "\"\n[registry]\nupstream = \"http://127.0.0.1:" << pport
                                << "\"\nupstream_username = \"user\"\n"
                                   "upstream_password = \"pass\"\n";
  Registry mirror;
  mirror.Start({"--config", d / "cfg.toml"});
  cp = RunCmd({"skopeo", "copy", "--src-tls-verify=false",
               "docker://" + mirror.host() + "/team/bb:1", "oci:" + d / "out" + ":x"});
  EXPECT_EQ(cp.exit_code, 0) << cp.err << mirror.log();
  EXPECT_GE(challenged.load(), 1);
  EXPECT_EQ(tokens_issued.load(), 1);  // cached for the following requests
  EXPECT_EQ(mirror.log().find("tok-123"), std::string::npos);
  proxy.stop();
  t.join();
}

// 50 clients pulling and 10 pushing at once: zero errors, every digest verifies.
TEST(RegistryLoad, FiftyPullsTenPushes) {
  auto c = g_reg->Client();
  std::string cfg = "{\"os\":\"linux\",\"load\":1}";
  std::vector<std::string> layers = {RandomBytes(3 << 20, 30), RandomBytes(1 << 20, 31)};
  PushBlob(*c, "load/img", cfg);
  for (const auto& l : layers) PushBlob(*c, "load/img", l);
  std::string m = MakeManifest(cfg, layers);
  PushManifest(*c, "load/img", "latest", m);

  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&] {
      httplib::Client cl("127.0.0.1", g_reg->port());
      cl.set_read_timeout(120, 0);
      auto r = cl.Get("/v2/load/img/manifests/latest");
      if (!r || St(r) != 200 || Body(r) != m) {
        ++errors;
        return;
      }
      json j = json::parse(Body(r));
      std::vector<json> descs = {j["config"]};
      for (const auto& l : j["layers"]) descs.push_back(l);
      for (const auto& dsc : descs) {
        std::string dg = dsc["digest"];
        auto b = cl.Get(("/v2/load/img/blobs/" + dg).c_str());
        if (!b || b->status != 200 || DigestOf(b->body) != dg) ++errors;
      }
    });
  }
  for (int i = 0; i < 10; ++i) {
    threads.emplace_back([&, i] {
      httplib::Client cl("127.0.0.1", g_reg->port());
      cl.set_read_timeout(120, 0);
      std::string repo = "load/push" + std::to_string(i);
      std::string pc = "{\"i\":" + std::to_string(i) + "}";
      std::string pl = RandomBytes(1 << 20, 100 + i);
      PushBlob(cl, repo, pc);
      PushBlobChunked(cl, repo, pl, 256 * 1024);
      std::string pm = MakeManifest(pc, {pl});
      auto r = cl.Put(("/v2/" + repo + "/manifests/t").c_str(), pm, kOciManifest);
      if (!r || St(r) != 201) ++errors;
      auto g = cl.Get(("/v2/" + repo + "/blobs/" + DigestOf(pl)).c_str());
      if (!g || g->body != pl) ++errors;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  if (::testing::Test::HasFailure()) std::ofstream("/tmp/regload.log") << g_reg->log();
}

}  // namespace
}  // namespace ipfly::registry::test
