// The ipfly CLI's registry commands against ipfly-registry processes and the js-ipfs node:
// search, push (OCI layout dir and tar archive), image export (nerdctl/stargz IPFS format)
// and image import (from the node, and from a registry's trustless gateway), with digest checks.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/multiformats/cid.h"
#include "ipfs_fetch/kubo_rpc.h"
#include "registry_shim/tests/ipfs/harness.h"

namespace ipfly::registry::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

void WriteFile(const std::string& path, const std::string& data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << data;
}

// An OCI image layout directory holding one image: a real tar.gz layer (so the registry builds
// a layer index), a random uncompressed layer, a config with a description label.
struct Layout {
  std::string dir;
  std::string manifest;
  std::string manifest_digest;
  std::vector<std::string> blobs;  // config, layers
};

Layout MakeLayout(const TempDir& tmp, const std::string& name, uint64_t seed) {
  Layout l;
  l.dir = tmp / name;
  std::string tree = tmp / (name + "-tree");
  auto tar = Sh("mkdir -p " + tree + "/etc && echo hello-" + std::to_string(seed) + " > " + tree +
                "/etc/hello && head -c 400000 /dev/urandom > " + tree + "/etc/big && tar -C " +
                tree + " -czf " + tmp / (name + ".tgz") + " .");
  EXPECT_EQ(tar.exit_code, 0) << tar.err;
  std::string gz = ReadFile(tmp / (name + ".tgz"));
  std::string raw = RandomBytes(700 * 1024 + seed, seed);
  TestImage img = MakeImage("cli image " + name, {gz, raw});
  json m = json::parse(img.manifest);
  m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip";
  l.manifest = m.dump();
  l.manifest_digest = DigestOf(l.manifest);
  l.blobs = {img.config, gz, raw};
  auto put = [&](const std::string& data) {
    WriteFile(l.dir + "/blobs/sha256/" + DigestOf(data).substr(7), data);
  };
  for (const auto& b : l.blobs) put(b);
  put(l.manifest);
  WriteFile(l.dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  json index = {{"schemaVersion", 2},
                {"manifests",
                 {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"digest", l.manifest_digest},
                   {"size", l.manifest.size()},
                   {"annotations", {{"org.opencontainers.image.ref.name", "v1"}}}}}}};
  WriteFile(l.dir + "/index.json", index.dump());
  return l;
}

// Every blob of the layout and the manifest are in `reg` under repo:tag, byte-identical.
void ExpectImage(const Registry& reg, const std::string& repo, const std::string& tag,
                 const Layout& l) {
  auto c = reg.Client();
  auto m = c->Get("/v2/" + repo + "/manifests/" + tag,
                  {{"Accept", "application/vnd.oci.image.manifest.v1+json"}});
  ASSERT_EQ(St(m), 200) << Body(m);
  EXPECT_EQ(m->get_header_value("Docker-Content-Digest"), l.manifest_digest);
  EXPECT_EQ(m->body, l.manifest);
  for (const auto& b : l.blobs) {
    auto r = c->Get("/v2/" + repo + "/blobs/" + DigestOf(b));
    ASSERT_EQ(St(r), 200);
    EXPECT_TRUE(r->body == b) << "blob " << DigestOf(b) << " differs";
  }
}

TEST(IpflyCli, Search) {
  Registry reg;
  reg.Start();
  auto c = reg.Client();
  PushImage(*c, "tools/alpha-scanner", "latest", MakeImage("Scans alpha things", {"a"}));
  PushImage(*c, "tools/beta", "latest", MakeImage("Beta", {"b"}));
  PushImage(*c, "other/alpha-db", "latest",
            MakeImage(std::string(80, 'x') + " long description", {"c"}));
  auto r = Ipfly({"search", "alpha", "--registry", reg.url()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, 4), "NAME");
  EXPECT_NE(r.out.find("DESCRIPTION"), std::string::npos);
  EXPECT_NE(r.out.find("tools/alpha-scanner"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Scans alpha things"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("other/alpha-db"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("tools/beta"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(std::string(80, 'x')), std::string::npos) << "not truncated: " << r.out;
  auto full = Ipfly({"search", "alpha-db", "--registry", reg.host(), "--no-trunc"});
  EXPECT_NE(full.out.find(std::string(80, 'x')), std::string::npos) << full.out;
  // --limit, and the registry taken from the config's [registry] listen.
  TempDir tmp;
  WriteFile(tmp / "config.toml", "[registry]\nlisten = \"" + reg.host() + "\"\n");
  auto lim = Ipfly({"search", "t", "--limit", "1", "--config", tmp / "config.toml"});
  ASSERT_EQ(lim.exit_code, 0) << lim.err;
  EXPECT_EQ(std::count(lim.out.begin(), lim.out.end(), '\n'), 2) << lim.out;
  // Errors: unreachable registry → exit 1 with a message.
  auto dead = Ipfly({"search", "x", "--registry", "127.0.0.1:" + std::to_string(FreePort())});
  EXPECT_EQ(dead.exit_code, 1);
  EXPECT_NE(dead.err.find("cannot reach"), std::string::npos) << dead.err;
}

TEST(IpflyCli, PushOciLayoutDirAndArchive) {
  Registry reg;
  reg.Start();
  TempDir tmp;
  Layout l = MakeLayout(tmp, "img", 1);
  auto r = Ipfly({"push", l.dir, "cli/app:v1", "--registry", reg.url()});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("digest: " + l.manifest_digest), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(reg.host() + "/ipfs/cli/app:v1"), std::string::npos) << r.out;
  // Blob CIDs from the resolver; the gzip layer has a layer index.
  auto res = json::parse(Body(reg.Client()->Get("/ipfly/v1/layers/" + DigestOf(l.blobs[1]))));
  EXPECT_NE(r.out.find("blob " + DigestOf(l.blobs[1]) + " cid " + res["cid"].get<std::string>() +
                       " index " + res["index_cid"].get<std::string>()),
            std::string::npos)
      << r.out;
  ExpectImage(reg, "cli/app", "v1", l);
  // The IPFS-format reference resolves.
  EXPECT_EQ(St(reg.Client()->Get("/v2/ipfs/cli/app/manifests/v1")), 200);

  // The same layout as a tar archive, to another repository (blobs are new there → mounted or
  // uploaded; the registry dedups the content).
  ASSERT_EQ(Sh("tar -C " + l.dir + " -cf " + tmp / "img.tar" + " .").exit_code, 0);
  auto a = Ipfly({"push", tmp / "img.tar", "cli/archive:v2", "--registry", reg.host()});
  ASSERT_EQ(a.exit_code, 0) << a.err << a.out;
  EXPECT_NE(a.out.find("digest: " + l.manifest_digest), std::string::npos) << a.out;
  ExpectImage(reg, "cli/archive", "v2", l);
  // Pushing again uploads nothing new.
  auto again = Ipfly({"push", l.dir, "cli/app:v1", "--registry", reg.url()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(std::count(again.out.begin(), again.out.end(), '\n') - 3,
            static_cast<long>(l.blobs.size()));
  EXPECT_NE(again.out.find("(existed)"), std::string::npos);

  // Not a layout → exit 2/1 with a message, nothing pushed.
  auto bad = Ipfly({"push", tmp.path(), "cli/bad:v1", "--registry", reg.url()});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("index.json"), std::string::npos) << bad.err;
}

// push → registry A (publishing to the node) → image export (descriptor CID, also into the
// node) → image import from the node into a fresh registry B with a fresh store; and import
// again from A's trustless gateway instead of the node.
TEST(IpflyCli, ImageExportImportThroughIpfs) {
  Registry a;
  a.Start({"--publish-kubo", NodeRpc()});
  TempDir tmp;
  Layout l = MakeLayout(tmp, "exp", 2);
  ASSERT_EQ(Ipfly({"push", l.dir, "exp/app:v1", "--registry", a.url()}).exit_code, 0);
  auto exp = Ipfly({"image", "export", "exp/app:v1", "--registry", a.url(), "--store",
                    tmp / "store1", "--to", "kubo=" + NodeRpc()});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  std::string root = Trim(exp.out);
  auto root_cid = mf::Cid::Parse(root);
  ASSERT_TRUE(root_cid.ok()) << root;
  EXPECT_EQ(root_cid->version(), 1);

  // The root is the JSON descriptor of the ipfs/ view manifest, readable from the node.
  fetch::KuboRpcClient kubo(NodeRpc(), nullptr);
  auto cat = [&](const std::string& cid) {
    std::string out;
    auto c = mf::Cid::Parse(cid);
    EXPECT_TRUE(c.ok()) << cid;
    if (!c.ok()) return out;
    Status st =
        kubo.Cat(*c, 0, std::nullopt, fetch::DeadlineIn(std::chrono::seconds(30)), [&](ByteView b) {
          out.append(AsString(b));
          return OkStatus();
        });
    EXPECT_TRUE(st.ok()) << st.error().ToString();
    return out;
  };
  json desc = json::parse(cat(root), nullptr, false);
  ASSERT_TRUE(desc.is_object()) << cat(root);
  auto view = a.Client()->Get("/v2/ipfs/exp/app/manifests/v1");
  ASSERT_EQ(St(view), 200);
  EXPECT_EQ(desc["digest"], DigestOf(view->body));
  EXPECT_EQ(desc["size"], view->body.size());
  EXPECT_EQ(desc["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  ASSERT_TRUE(desc["urls"].is_array());
  std::string murl = desc["urls"][0].get<std::string>();
  ASSERT_EQ(murl.substr(0, 7), "ipfs://");
  EXPECT_EQ(cat(murl.substr(7)), view->body);
  // Every blob descriptor of that manifest resolves on the node to the blob (publish_kubo).
  ASSERT_TRUE(WaitFor([&] { return a.Metric("ipfly_registry_publish_queue_length") == 0; },
                      std::chrono::seconds(60)));
  json m = json::parse(view->body);
  EXPECT_EQ(cat(m["config"]["urls"][0].get<std::string>().substr(7)), l.blobs[0]);

  // Import from the node into a fresh registry, with an empty store.
  Registry b;
  b.Start();
  auto imp = Ipfly({"image", "import", root, "--registry", b.url(), "--tag", "copy/app:v1",
                    "--store", tmp / "store2", "--source", "kubo=" + NodeRpc()});
  ASSERT_EQ(imp.exit_code, 0) << imp.err << imp.out;
  EXPECT_NE(imp.out.find(DigestOf(view->body)), std::string::npos) << imp.out;
  auto got = b.Client()->Get("/v2/copy/app/manifests/v1");
  ASSERT_EQ(St(got), 200);
  EXPECT_EQ(got->body, view->body);
  for (const auto& blob : l.blobs) {
    auto r = b.Client()->Get("/v2/copy/app/blobs/" + DigestOf(blob));
    ASSERT_EQ(St(r), 200);
    EXPECT_TRUE(r->body == blob);
  }

  // Without a node: the descriptor from the export's store, the rest from A's gateway.
  Registry c;
  c.Start();
  auto imp2 = Ipfly({"image", "import", root, "--registry", c.url(), "--tag", "gw/app:v1",
                     "--store", tmp / "store1", "--source", "gateway=" + a.url()});
  ASSERT_EQ(imp2.exit_code, 0) << imp2.err << imp2.out;
  EXPECT_EQ(Body(c.Client()->Get("/v2/gw/app/manifests/v1")), view->body);

  // A descriptor whose digest does not match the manifest it points at is refused.
  json forged = desc;
  forged["digest"] = DigestOf("something else");
  WriteFile(tmp / "forged.json", forged.dump());
  auto add = Ipfly({"add", "-Q", "--store", tmp / "store1", tmp / "forged.json"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  auto bad = Ipfly({"image", "import", Trim(add.out), "--registry", c.url(), "--tag",
                    "gw/forged:v1", "--store", tmp / "store1", "--source", "gateway=" + a.url()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("does not match"), std::string::npos) << bad.err;
  EXPECT_EQ(St(c.Client()->Get("/v2/gw/forged/manifests/v1")), 404);
}

// A registry with a push token and publish_kubo from its config file: `ipfly push` without
// IPFLY_REGISTRY_TOKEN is refused, with it the image lands and is published to the node.
TEST(IpflyCli, PushWithTokenToConfiguredPublishingRegistry) {
  TempDir tmp;
  WriteFile(tmp / "reg.toml", "[store]\ndir = \"" + tmp / "store" +
                                  "\"\n[registry]\npush_token = " +
                                  "\"s3cret\"\npublish_kubo = \"" + NodeRpc() + "\"\n");
  Registry reg(tmp / "root");
  reg.Start({"--config", tmp / "reg.toml"});
  Layout l = MakeLayout(tmp, "tok", 5);
  auto denied = Ipfly({"push", l.dir, "tok/app:v1", "--registry", reg.url()});
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_NE(denied.err.find("401"), std::string::npos) << denied.err;
  auto ok = RunCmd({"env", "IPFLY_REGISTRY_TOKEN=s3cret", IPFLY_CLI_BIN, "push", l.dir,
                    "tok/app:v1", "--registry", reg.url()});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  ExpectImage(reg, "tok/app", "v1", l);
  ASSERT_TRUE(WaitFor(
      [&] {
        return reg.Metric("ipfly_registry_publish_ok_total") >= 4 &&
               reg.Metric("ipfly_registry_publish_queue_length") == 0;
      },
      std::chrono::seconds(60)))
      << reg.log();
  EXPECT_EQ(reg.Metric("ipfly_registry_publish_failed_total"), 0);
}

// A multi-platform layout (OCI index → two manifests): push, export (the view's index children
// carry ipfs:// URLs), import into a fresh registry through the first one's gateway.
TEST(IpflyCli, ImageIndexPushExportImport) {
  Registry a;
  a.Start();
  TempDir tmp;
  Layout one = MakeLayout(tmp, "multi", 3);
  Layout two = MakeLayout(tmp, "multi2", 4);
  for (const auto& e : fs::directory_iterator(two.dir + "/blobs/sha256")) {
    fs::copy_file(e.path(), one.dir + "/blobs/sha256/" + e.path().filename().string(),
                  fs::copy_options::skip_existing);
  }
  auto desc = [](const Layout& l, const char* arch) {
    return json{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                {"digest", l.manifest_digest},
                {"size", l.manifest.size()},
                {"platform", {{"architecture", arch}, {"os", "linux"}}}};
  };
  std::string index = json{{"schemaVersion", 2},
                           {"mediaType", "application/vnd.oci.image.index.v1+json"},
                           {"manifests", {desc(one, "amd64"), desc(two, "arm64")}}}
                          .dump();
  WriteFile(one.dir + "/blobs/sha256/" + DigestOf(index).substr(7), index);
  WriteFile(one.dir + "/index.json",
            json{{"schemaVersion", 2},
                 {"manifests",
                  {{{"mediaType", "application/vnd.oci.image.index.v1+json"},
                    {"digest", DigestOf(index)},
                    {"size", index.size()}}}}}
                .dump());
  auto push = Ipfly({"push", one.dir, "multi/app:v1", "--registry", a.url()});
  ASSERT_EQ(push.exit_code, 0) << push.err << push.out;
  EXPECT_NE(push.out.find("digest: " + DigestOf(index)), std::string::npos) << push.out;
  EXPECT_EQ(Body(a.Client()->Get("/v2/multi/app/manifests/" + two.manifest_digest)), two.manifest);

  auto exp =
      Ipfly({"image", "export", "multi/app:v1", "--registry", a.url(), "--store", tmp / "store"});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  std::string root = Trim(exp.out);
  auto view = a.Client()->Get("/v2/ipfs/multi/app/manifests/v1",
                              {{"Accept", "application/vnd.oci.image.index.v1+json"}});
  ASSERT_EQ(St(view), 200);
  json vi = json::parse(view->body);
  ASSERT_EQ(vi["manifests"].size(), 2u);
  for (const auto& m : vi["manifests"]) {
    ASSERT_TRUE(m.contains("urls")) << view->body;
    EXPECT_EQ(m["urls"][0].get<std::string>().substr(0, 7), "ipfs://");
  }

  Registry b;
  b.Start();
  auto imp = Ipfly({"image", "import", root, "--registry", b.url(), "--tag", "copy/multi:v1",
                    "--store", tmp / "store", "--source", "gateway=" + a.url()});
  ASSERT_EQ(imp.exit_code, 0) << imp.err << imp.out;
  auto got = b.Client()->Get("/v2/copy/multi/manifests/v1",
                             {{"Accept", "application/vnd.oci.image.index.v1+json"}});
  ASSERT_EQ(St(got), 200);
  EXPECT_EQ(got->body, view->body);
  for (const auto& m : vi["manifests"]) {
    std::string d = m["digest"];
    EXPECT_EQ(St(b.Client()->Get("/v2/copy/multi/manifests/" + d)), 200) << d;
  }
  for (const auto& blob : two.blobs) {
    auto r = b.Client()->Get("/v2/copy/multi/blobs/" + DigestOf(blob));
    ASSERT_EQ(St(r), 200);
    EXPECT_TRUE(r->body == blob);
  }
}

}  // namespace
}  // namespace ipfly::registry::test
