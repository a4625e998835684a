// ipfly-registry with a real IPFS node (js-ipfs, Kubo-compatible RPC):
//   - publish_kubo: pushed content is imported into the node and pinned; readable there by CID;
//   - a graceful stop publishes what was still queued;
//   - a dead node never fails a push (counted in /metrics);
//   - --source kubo=URL: a registry whose block store lacks a blob serves it from the node.
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

std::string ResolveCid(httplib::Client& c, const std::string& digest) {
  auto r = c.Get("/ipfly/v1/layers/" + digest);
  EXPECT_EQ(St(r), 200) << Body(r);
  auto j = json::parse(Body(r), nullptr, false);
  if (j.is_discarded()) return "";
  return j.value("cid", "");
}

// The node's bytes for `cid` via /api/v0/cat ("" on error).
std::string NodeCat(const std::string& cid) {
  fetch::KuboRpcClient kubo(NodeRpc(), nullptr);
  auto c = mf::Cid::Parse(cid);
  if (!c.ok()) return "";
  std::string out;
  Status st =
      kubo.Cat(*c, 0, std::nullopt, fetch::DeadlineIn(std::chrono::seconds(30)), [&](ByteView b) {
        out.append(AsString(b));
        return OkStatus();
      });
  if (!st.ok()) ADD_FAILURE() << "cat " << cid << ": " << st.error().ToString();
  return out;
}

bool NodePinned(const std::string& cid) {
  fetch::KuboRpcClient kubo(NodeRpc(), nullptr);
  auto r = kubo.Call("pin/ls", "arg=" + cid + "&type=recursive",
                     fetch::DeadlineIn(std::chrono::seconds(20)));
  return r.ok() && std::string(AsString(r->body)).find("Keys") != std::string::npos;
}

bool NodeHasBlock(const std::string& cid) {
  fetch::KuboRpcClient kubo(NodeRpc(), nullptr);
  auto c = mf::Cid::Parse(cid);
  return c.ok() && kubo.BlockGet(*c, fetch::DeadlineIn(std::chrono::seconds(10))).ok();
}

// Push with publishing on → the node has every blob DAG, pinned; a blob pushed right before
// SIGTERM is still published (the queue is drained on shutdown). Then a second registry with
// only the catalog (no blocks) and --source kubo=URL serves the blobs out of the node.
TEST(RegistryIpfs, PublishToNodeThenServeFromNode) {
  Registry a;
  a.Start({"--publish-kubo", NodeRpc()});
  auto c = a.Client();
  // 1.3 MiB: a multi-block DAG (256 KiB chunks) with a dag-pb root.
  TestImage img = MakeImage("published image", {RandomBytes(1300 * 1024, 7), RandomBytes(999, 8)});
  PushImage(*c, "pub/app", "v1", img);
  std::string layer_cid = ResolveCid(*c, DigestOf(img.layers[0]));
  std::string small_cid = ResolveCid(*c, DigestOf(img.layers[1]));
  std::string config_cid = ResolveCid(*c, DigestOf(img.config));
  ASSERT_FALSE(layer_cid.empty());
  // 3 blobs + 1 manifest.
  ASSERT_TRUE(WaitFor(
      [&] {
        return a.Metric("ipfly_registry_publish_ok_total") >= 4 &&
               a.Metric("ipfly_registry_publish_queue_length") == 0;
      },
      std::chrono::seconds(60)))
      << "publish_ok=" << a.Metric("ipfly_registry_publish_ok_total")
      << " failed=" << a.Metric("ipfly_registry_publish_failed_total") << "\n"
      << a.log();
  EXPECT_EQ(a.Metric("ipfly_registry_publish_failed_total"), 0);
  EXPECT_GE(a.Metric("ipfly_registry_publish_blocks_total"), 8);  // 6 leaves + root + 2 + 1
  EXPECT_TRUE(NodeCat(layer_cid) == img.layers[0]) << "node bytes differ for " << layer_cid;
  EXPECT_EQ(NodeCat(small_cid), img.layers[1]);
  EXPECT_EQ(NodeCat(config_cid), img.config);
  EXPECT_TRUE(NodePinned(layer_cid)) << layer_cid << " is not pinned on the node";
  EXPECT_TRUE(NodePinned(config_cid));
  EXPECT_TRUE(NodeHasBlock(small_cid));

  // Queued at SIGTERM → still published before the process exits.
  std::string late = RandomBytes(600 * 1024, 9);
  PushBlob(*c, "pub/app", late);
  std::string late_cid = ResolveCid(*c, DigestOf(late));
  EXPECT_EQ(a.Terminate(std::chrono::seconds(60)), 0) << a.log();
  EXPECT_TRUE(NodeCat(late_cid) == late) << "blob queued at shutdown was not published";

  // A second registry: the catalog of the first, an empty block store, the node as source.
  Registry b;
  fs::create_directories(b.root());
  for (const char* f : {"catalog.db", "catalog.db-wal", "catalog.db-shm"}) {
    if (fs::exists(a.root() + "/" + f)) fs::copy_file(a.root() + "/" + f, b.root() + "/" + f);
  }
  b.Start({"--source", "kubo=" + NodeRpc()});
  auto cb = b.Client();
  auto blob = cb->Get("/v2/pub/app/blobs/" + DigestOf(img.layers[0]));
  ASSERT_EQ(St(blob), 200) << b.log();
  EXPECT_TRUE(blob->body == img.layers[0]) << "blob from the node differs";
  auto range = cb->Get("/v2/pub/app/blobs/" + DigestOf(late), {{"Range", "bytes=1000-1999"}});
  ASSERT_EQ(St(range), 206);
  EXPECT_EQ(range->body, late.substr(1000, 1000));
  auto m = cb->Get("/v2/pub/app/manifests/v1",
                   {{"Accept", "application/vnd.oci.image.manifest.v1+json"}});
  ASSERT_EQ(St(m), 200);
  EXPECT_EQ(m->body, img.manifest);
  // The blocks came from the node (b's store is empty; they went through its fetch chain).
  std::string metrics = Body(cb->Get("/metrics"));
  double from_node = 0;
  for (const char* name :
       {"ipfly_fetch_source_blocks_total{", "ipfly_fetch_source_stream_blocks_total{"}) {
    size_t pos = 0;
    while ((pos = metrics.find(std::string("\n") + name, pos)) != std::string::npos) {
      size_t eol = metrics.find('\n', pos + 1);
      std::string line = metrics.substr(pos + 1, eol - pos - 1);
      if (line.find("kubo") != std::string::npos) {
        from_node += std::stod(line.substr(line.rfind(' ') + 1));
      }
      pos = eol;
    }
  }
  EXPECT_GE(from_node, 6) << metrics;
}

// Mirrored content is published too: docker-registry upstream, a pull through the mirror, then
// the blob DAG and its layer index are on the node, pinned.
TEST(RegistryIpfs, MirroredContentIsPublished) {
  TempDir tmp;
  int up_port = FreePort();
  std::ofstream(tmp / "cfg.yml") << "version: 0.1\nstorage: {filesystem: {rootdirectory: "
                                 << tmp / "data"
                                 << "}}\nhttp: {addr: 127.0.0.1:" << up_port
                                 << "}\nlog: {level: error}\n";
  pid_t up = Spawn({"docker-registry", "serve", tmp / "cfg.yml"}, tmp / "up.log");
  ASSERT_GT(up, 0);
  struct Stopper {
    pid_t pid;
    ~Stopper() { StopPid(pid); }
  } stop_up{up};
  ASSERT_TRUE(WaitFor([&] { return St(httplib::Client("127.0.0.1", up_port).Get("/v2/")) == 200; },
                      std::chrono::seconds(10)))
      << ReadFile(tmp / "up.log");
  auto tar = ipfly::testing::Sh("mkdir -p " + tmp / "t/etc" + " && head -c 300000 /dev/urandom > " +
                                tmp / "t/etc/f" + " && tar -C " + tmp / "t" + " -czf " +
                                tmp / "l.tgz" + " .");
  ASSERT_EQ(tar.exit_code, 0) << tar.err;
  TestImage img = MakeImage("mirrored", {ReadFile(tmp / "l.tgz")});
  httplib::Client upc("127.0.0.1", up_port);
  PushImage(upc, "library/mirrored", "1", img);

  Registry m;
  m.Start(
      {"--upstream", "http://127.0.0.1:" + std::to_string(up_port), "--publish-kubo", NodeRpc()});
  auto c = m.Client();
  auto man = c->Get("/v2/library/mirrored/manifests/1",
                    {{"Accept", "application/vnd.oci.image.manifest.v1+json"}});
  ASSERT_EQ(St(man), 200) << m.log();
  auto blob = c->Get("/v2/library/mirrored/blobs/" + DigestOf(img.layers[0]));
  ASSERT_EQ(St(blob), 200) << m.log();
  auto res = json::parse(Body(c->Get("/ipfly/v1/layers/" + DigestOf(img.layers[0]))));
  std::string cid = res["cid"], index_cid = res["index_cid"];
  ASSERT_FALSE(index_cid.empty());
  ASSERT_TRUE(WaitFor(
      [&] {
        return m.Metric("ipfly_registry_publish_ok_total") >= 2 &&
               m.Metric("ipfly_registry_publish_queue_length") == 0;
      },
      std::chrono::seconds(60)))
      << m.log();
  EXPECT_TRUE(NodeCat(cid) == img.layers[0]);
  EXPECT_TRUE(NodePinned(cid));
  EXPECT_TRUE(NodePinned(index_cid)) << "layer index " << index_cid << " not pinned";
  EXPECT_TRUE(NodeHasBlock(index_cid));
}

// A dead Kubo URL: pushes still succeed, failures are counted, shutdown is prompt.
TEST(RegistryIpfs, PublishFailureNeverFailsPush) {
  Registry r;
  int dead = FreePort();
  r.Start({"--publish-kubo", "http://127.0.0.1:" + std::to_string(dead)});
  auto c = r.Client();
  PushBlob(*c, "dead/app", RandomBytes(300 * 1024, 21));
  auto head = c->Head("/v2/dead/app/blobs/" + DigestOf(RandomBytes(300 * 1024, 21)));
  EXPECT_EQ(St(head), 200);
  ASSERT_TRUE(WaitFor([&] { return r.Metric("ipfly_registry_publish_failed_total") >= 1; },
                      std::chrono::seconds(30)))
      << r.log();
  EXPECT_EQ(r.Metric("ipfly_registry_publish_ok_total"), 0);
  // Another push while the node is down, then a stop: the drain tries it once and exits.
  PushBlob(*c, "dead/app", RandomBytes(1000, 22));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(r.Terminate(std::chrono::seconds(30)), 0) << r.log();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
}

}  // namespace
}  // namespace ipfly::registry::test
