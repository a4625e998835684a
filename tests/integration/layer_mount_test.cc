// Issue 3 end to end: real layer blobs (GNU tar, Python tarfile, busybox tar; gzip, multi-member
// gzip, zstd single- and multi-frame, plain) imported into the embedded store, indexed, mounted
// through FUSE with `ipfly mount`, and compared with `tar -x` of the same blob: content, type,
// mode, owner, mtime, symlink targets, xattrs, device numbers, hard links. Plus an overlay of two
// layers with whiteouts, concurrent random reads, and a failing block source giving EIO.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "tests/integration/ipfs_nodes.h"
#include "tests/support/fault_http_server.h"
#include "tests/support/process.h"
#include "tests/support/tree_compare.h"

namespace ipfly::testing {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string LastLine(const std::string& s) {
  std::string t = Trim(s);
  auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

bool IsMounted(const std::string& path) {
  std::ifstream m("/proc/self/mounts");
  std::string dev, mnt, rest;
  while (m >> dev >> mnt && std::getline(m, rest)) {
    if (mnt == path) return true;
  }
  return false;
}

CommandResult Ipfly(std::vector<std::string> args) {
  args.insert(args.begin(), IpflyBin());
  return RunCmd(args, std::chrono::seconds(300));
}

// A running `ipfly mount`; unmounts (SIGTERM) on destruction.
class Mount {
 public:
  Mount(const std::vector<std::string>& args, const std::string& dir, const std::string& log)
      : dir_(dir) {
    std::vector<std::string> argv = {IpflyBin(), "mount"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = Spawn(argv, log);
    // Ready when the CLI reports the mount (the directory may hold a stale mount before that).
    ok_ = pid_ > 0 &&
          WaitFor(
              [&] { return ReadFile(log).find("mounted ") != std::string::npos && IsMounted(dir); },
              std::chrono::seconds(60));
    if (!ok_) log_ = ReadFile(log);
  }
  ~Mount() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      for (int i = 0; i < 100 && waitpid(pid_, &st, WNOHANG) == 0; ++i) usleep(100000);
      if (waitpid(pid_, &st, WNOHANG) == 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
      }
    }
    if (IsMounted(dir_)) RunCmd({"umount", "-l", dir_});
  }
  bool ok() const { return ok_; }
  const std::string& log() const { return log_; }

 private:
  std::string dir_, log_;
  pid_t pid_ = -1;
  bool ok_ = false;
};

struct LayerCase {
  std::string name;
  std::string make_tar;  // shell: $SRC is the tree, writes $W/layer.tar
  std::string compress;  // shell: reads $W/layer.tar, writes $W/blob
  bool xattrs = false;
};

class LayerMount : public ::testing::TestWithParam<LayerCase> {};

// The source tree every layer is made from: every entry kind, long and unicode names, xattrs,
// empty and sparse-looking files, OCI whiteouts.
void MakeTree(const std::string& src, bool with_xattrs) {
  std::string fixtures = std::string(IPFLY_SOURCE_DIR) + "/layer/tests/fixtures/make_tree.sh";
  std::vector<std::string> argv = {"bash", fixtures, src, "devices", "long"};
  if (with_xattrs) argv.push_back("xattrs");
  auto r = RunCmd(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto s = Sh("set -e; cd '" + src +
              "'; mkdir -p 'ünï/日本語' opq/keep; "
              "printf x > 'ünï/日本語/файл.txt'; head -c 3145728 /dev/urandom > big3m; "
              "head -c 5242880 /dev/zero > zeros5m; : > .wh.gone; : > opq/.wh..wh..opq; "
              "printf k > opq/keep/k; touch -h -d @1700000000.5 big3m zeros5m .wh.gone "
              "opq/.wh..wh..opq opq/keep/k 'ünï/日本語/файл.txt'");
  ASSERT_EQ(s.exit_code, 0) << s.err;
}

TEST_P(LayerMount, MatchesTarExtraction) {
  const LayerCase& c = GetParam();
  TempDir w;
  std::string src = w / "src";
  MakeTree(src, c.xattrs);
  auto mk =
      Sh("set -e; SRC='" + src + "'; W='" + w.path() + "'; " + c.make_tar + "; " + c.compress);
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string store = w / "store";
  auto add = Ipfly({"add", "-q", "--store", store, w / "blob"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  std::string blob = Trim(add.out);
  auto idx = Ipfly({"index", w / "blob", "--store", store, "--span", "256KiB"});
  ASSERT_EQ(idx.exit_code, 0) << idx.err;
  std::string index_cid = LastLine(idx.out);

  std::string expected = w / "expected";
  auto x = Sh("set -e; mkdir -p '" + expected + "'; tar --xattrs --xattrs-include='*' " +
              "--numeric-owner -p -C '" + expected + "' -xf '" + w.path() + "/layer.tar'");
  ASSERT_EQ(x.exit_code, 0) << x.err;
  ConvertWhiteouts(expected);

  std::string mnt = w / "mnt";
  Mount m({blob, mnt, "--index", index_cid, "--store", store}, mnt, w / "mount.log");
  ASSERT_TRUE(m.ok()) << "mount failed: " << m.log();
  CompareOptions co;
  co.compare_xattrs = true;
  auto diffs = CompareTrees(expected, mnt, co);
  for (const auto& d : diffs) ADD_FAILURE() << c.name << ": " << d;
  EXPECT_TRUE(diffs.empty());
  // The listing matches too.
  auto ls = Ipfly({"ls", index_cid, "--store", store, "opq"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find("opq/.wh..wh..opq"), std::string::npos) << ls.out;
}

INSTANTIATE_TEST_SUITE_P(
    Formats, LayerMount,
    ::testing::Values(
        LayerCase{"gnu_posix_gzip", "tar --format=posix --xattrs -C \"$SRC\" -cf $W/layer.tar .",
                  "gzip -c $W/layer.tar > $W/blob", true},
        LayerCase{"gnu_gnu_multimember_gzip", "tar --format=gnu -C \"$SRC\" -cf $W/layer.tar .",
                  "split -b 700000 $W/layer.tar $W/part.; for p in $W/part.*; do gzip -c $p; "
                  "done > $W/blob",
                  false},
        LayerCase{"python_pax_zstd_multiframe",
                  "python3 -c \"import tarfile,sys; t=tarfile.open(sys.argv[2],'w',"
                  "format=tarfile.PAX_FORMAT); t.add(sys.argv[1], arcname='.'); t.close()\" "
                  "\"$SRC\" $W/layer.tar",
                  "split -b 1000000 $W/layer.tar $W/zp.; for p in $W/zp.*; do zstd -q -c $p; "
                  "done > $W/blob",
                  false},
        LayerCase{"busybox_zstd_single", "cd \"$SRC\" && busybox tar -cf $W/layer.tar .",
                  "zstd -q -c $W/layer.tar > $W/blob", false},
        LayerCase{"gnu_posix_plain", "tar --format=posix -C \"$SRC\" -cf $W/layer.tar .",
                  "cp $W/layer.tar $W/blob", false},
        LayerCase{"pigz", "tar --format=posix -C \"$SRC\" -cf $W/layer.tar .",
                  "pigz -c -b 128 $W/layer.tar > $W/blob", false}),
    [](const ::testing::TestParamInfo<LayerCase>& i) { return i.param.name; });

void PrintTo(const LayerCase& c, std::ostream* os) { *os << c.name; }

// Two layers stacked with --overlay: whiteouts and opaque directories hide lower entries.
TEST(LayerOverlay, WhiteoutsAndOpaqueDirs) {
  TempDir w;
  auto mk = Sh("set -e; cd '" + w.path() +
               "'; mkdir -p lo/d lo/o up/o; "
               "echo a > lo/a; echo b > lo/b; echo x > lo/d/x; echo y > lo/o/y; "
               "echo z > up/o/z; : > up/.wh.a; : > up/o/.wh..wh..opq; echo B2 > up/b; "
               "tar -C lo -czf lo.tgz .; tar -C up -czf up.tgz .");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string store = w / "store";
  std::vector<std::string> cids, idxs;
  for (auto f : {"lo.tgz", "up.tgz"}) {
    auto a = Ipfly({"add", "-q", "--store", store, w / f});
    ASSERT_EQ(a.exit_code, 0) << a.err;
    cids.push_back(Trim(a.out));
    auto i = Ipfly({"index", w / f, "--store", store});
    ASSERT_EQ(i.exit_code, 0) << i.err;
    idxs.push_back(LastLine(i.out));
  }
  std::string mnt = w / "mnt";
  Mount m({"--overlay", cids[0], cids[1], mnt, "--index", idxs[0], "--index", idxs[1], "--store",
           store},
          mnt, w / "mount.log");
  ASSERT_TRUE(m.ok()) << m.log();
  auto ls = Sh("cd '" + mnt + "' && find . | sort && cat b o/z d/x");
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(ls.out, ".\n./b\n./d\n./d/x\n./o\n./o/z\nB2\nz\nx\n");
}

// Many threads reading random ranges of a big file at once get exactly the extracted bytes.
TEST(LayerReads, ConcurrentRandomReads) {
  TempDir w;
  auto mk = Sh("set -e; cd '" + w.path() +
               "'; mkdir src; head -c 41943040 /dev/urandom > "
               "src/big; tar -C src -cf - . | gzip -1 > blob");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string store = w / "store";
  auto a = Ipfly({"add", "-q", "--store", store, w / "blob"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto i = Ipfly({"index", w / "blob", "--store", store, "--span", "1MiB"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  std::string mnt = w / "mnt";
  Mount m({Trim(a.out), mnt, "--index", LastLine(i.out), "--store", store}, mnt, w / "log");
  ASSERT_TRUE(m.ok()) << m.log();
  std::string want = ReadFile(w / "src/big");
  std::atomic<int> bad{0}, done{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 16; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      int fd = ::open((mnt + "/big").c_str(), O_RDONLY);
      if (fd < 0) {
        ++bad;
        return;
      }
      std::vector<char> buf(1 << 20);
      for (int k = 0; k < 40; ++k) {
        size_t off = rng() % want.size();
        size_t len = 1 + rng() % buf.size();
        ssize_t n = ::pread(fd, buf.data(), len, static_cast<off_t>(off));
        size_t expect = std::min(len, want.size() - off);
        if (n != static_cast<ssize_t>(expect) || std::memcmp(buf.data(), want.data() + off, expect))
          ++bad;
        ++done;
      }
      ::close(fd);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(done.load(), 16 * 40);
}

// The only block source fails: reads of uncached spans give EIO within the deadline, and spans
// that were read before keep working.
TEST(LayerReads, FailingSourceGivesEioNotAHang) {
  TempDir w;
  auto mk = Sh("set -e; cd '" + w.path() +
               "'; mkdir src; head -c 4194304 /dev/urandom > src/a; "
               "head -c 4194304 /dev/urandom > src/b; tar -C src -cf - a b | gzip -1 > blob");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  // The blob lives only in the Helia gateway; the mount's store holds just the index.
  std::string blob = HeliaAdd(w / "blob", "cid-version=1");
  ASSERT_FALSE(blob.empty());
  std::string store = w / "store";
  auto i = Ipfly({"index", blob, "--store", w / "indexstore", "--source",
                  "gateway=" + Nodes().gateway_url, "--span", "256KiB"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  std::string index_cid = LastLine(i.out);
  auto exp = Ipfly({"car", "export", index_cid, "-o", w / "idx.car", "--store", w / "indexstore"});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  auto imp = Ipfly({"car", "import", w / "idx.car", "--store", store});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  // A gateway that we can stop: a local proxy is overkill; use a port that stops answering.
  int port = FreePort();
  std::string dead = "http://127.0.0.1:" + std::to_string(port);
  std::string mnt = w / "mnt";
  {
    Mount m({blob, mnt, "--index", index_cid, "--store", store, "--source",
             "gateway=" + Nodes().gateway_url, "--source", "gateway=" + dead},
            mnt, w / "log1");
    ASSERT_TRUE(m.ok()) << m.log();
    ASSERT_TRUE(ReadFile(mnt + "/a") == ReadFile(w / "src/a"));  // fills a's spans
  }
  // Remount with only the dead source and a short deadline.
  std::ofstream(w / "cfg.toml")
      << "[fetch]\ntimeout_ms = 3000\nblock_timeout_ms = 1000\nretries = 1\n";
  Mount m({blob, mnt, "--index", index_cid, "--store", store, "--config", w / "cfg.toml",
           "--source", "gateway=" + dead},
          mnt, w / "log2");
  ASSERT_TRUE(m.ok()) << m.log();
  EXPECT_TRUE(ReadFile(mnt + "/a") == ReadFile(w / "src/a")) << "cached spans must still work";
  auto t0 = std::chrono::steady_clock::now();
  auto r = Sh("cat '" + mnt + "/b' > /dev/null");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  EXPECT_LT(secs, 20.0);
}

}  // namespace
}  // namespace ipfly::testing

namespace ipfly::testing {
namespace {

// A killed `ipfly mount` leaves a dead FUSE mount behind; the next start cleans it and mounts.
TEST(LayerMountRecovery, NextStartCleansStaleMountAfterCrash) {
  TempDir w;
  auto mk = Sh("set -e; cd '" + w.path() +
               "'; mkdir src; echo hello > src/f; "
               "tar -C src -czf blob .");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string store = w / "store";
  auto a = Ipfly({"add", "-q", "--store", store, w / "blob"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto i = Ipfly({"index", w / "blob", "--store", store});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  std::string mnt = w / "mnt";
  std::vector<std::string> argv = {IpflyBin(), "mount",         Trim(a.out), mnt,
                                   "--index",  LastLine(i.out), "--store",   store};
  pid_t pid = Spawn(argv, w / "log1");
  ASSERT_TRUE(WaitFor([&] { return IsMounted(mnt); }, std::chrono::seconds(30)));
  ASSERT_EQ(ReadFile(mnt + "/f"), "hello\n");
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  // The kernel keeps the dead mount: access fails (ENOTCONN) until someone cleans it.
  EXPECT_TRUE(IsMounted(mnt));
  Mount m({Trim(a.out), mnt, "--index", LastLine(i.out), "--store", store}, mnt, w / "log2");
  ASSERT_TRUE(m.ok()) << m.log();
  EXPECT_EQ(ReadFile(mnt + "/f"), "hello\n");
}

}  // namespace
}  // namespace ipfly::testing

namespace ipfly::testing {
namespace {

// A 100 MiB file in a gzip layer, prefetched in the background: the blob digest is verified and
// every span ends up in the span cache; the file reads back exactly.
TEST(LayerReads, HundredMebibyteFileWithPrefetch) {
  TempDir w;
  auto mk = Sh("set -e; cd '" + w.path() +
               "'; mkdir src; head -c 104857600 /dev/urandom > "
               "src/big; printf 1 > src/one; tar -C src -cf - . | gzip -1 > blob");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string store = w / "store";
  auto a = Ipfly({"add", "-q", "--store", store, w / "blob"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto i = Ipfly({"index", w / "blob", "--store", store});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  std::string mnt = w / "mnt";
  Mount m({Trim(a.out), mnt, "--index", LastLine(i.out), "--store", store, "--prefetch"}, mnt,
          w / "log");
  ASSERT_TRUE(m.ok()) << m.log();
  EXPECT_EQ(ReadFile(mnt + "/one"), "1");
  EXPECT_TRUE(ReadFile(mnt + "/big") == ReadFile(w / "src/big"));
  EXPECT_TRUE(
      WaitFor([&] { return ReadFile(w / "log").find("digest sha256:") != std::string::npos; },
              std::chrono::seconds(60)))
      << ReadFile(w / "log");
  EXPECT_NE(ReadFile(w / "log").find("verified"), std::string::npos) << ReadFile(w / "log");
}

// A gateway that accepts requests and never answers: reads of uncached spans fail with EIO
// within the configured deadline instead of hanging.
TEST(LayerReads, StallingSourceGivesEioWithinDeadline) {
  TempDir w;
  auto mk = Sh("set -e; cd '" + w.path() +
               "'; mkdir src; head -c 2097152 /dev/urandom > src/a; "
               "tar -C src -cf - a | gzip -1 > blob");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string full = w / "full";
  auto a = Ipfly({"add", "-q", "--store", full, w / "blob"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto i = Ipfly({"index", w / "blob", "--store", full});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  std::string index_cid = LastLine(i.out);
  ASSERT_EQ(Ipfly({"car", "export", index_cid, "-o", w / "i.car", "--store", full}).exit_code, 0);
  std::string store = w / "store";
  ASSERT_EQ(Ipfly({"car", "import", w / "i.car", "--store", store}).exit_code, 0);
  test::BlockServer hang;
  ASSERT_TRUE(hang.Start().ok());
  hang.SetDefaultFault(test::BlockFault::kHang);
  std::ofstream(w / "cfg.toml") << "[fetch]\ntimeout_ms = 3000\nblock_timeout_ms = 1000\n";
  std::string mnt = w / "mnt";
  {
    Mount m({Trim(a.out), mnt, "--index", index_cid, "--store", store, "--config", w / "cfg.toml",
             "--source", "gateway=" + hang.base_url()},
            mnt, w / "log");
    ASSERT_TRUE(m.ok()) << m.log();
    auto t0 = std::chrono::steady_clock::now();
    auto r = Sh("cat '" + mnt + "/a' > /dev/null");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
    EXPECT_LT(secs, 15.0);
  }
  hang.Stop();
}

}  // namespace
}  // namespace ipfly::testing
