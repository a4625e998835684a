#include "registry_shim/ingest.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "core/base/digest.h"
#include "core/base/log.h"
#include "core/base/sha256.h"
#include "layer/layer_index.h"

namespace ipfly::registry {
namespace {

// gzip, zstd, or a POSIX/GNU tar header ("ustar" at offset 257).
bool LooksLikeLayer(ByteView head) {
  if (head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b) return true;
  if (head.size() >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f &&
      head[3] == 0xfd) {
    return true;
  }
  return head.size() >= 262 && std::memcmp(head.data() + 257, "ustar", 5) == 0;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Result<IngestResult> IngestFile(const std::string& path, const unixfs::ImportProfile& profile,
                                BlockSink* sink) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path, errno);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  unixfs::FileImporter imp(profile, sink);
  Sha256 hasher;
  std::unique_ptr<layer::LayerIndexBuilder> builder;
  bool first = true;
  Bytes buf(1 << 20);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + path, errno);
    if (n == 0) break;
    ByteView chunk(buf.data(), static_cast<size_t>(n));
    if (first) {
      first = false;
      if (LooksLikeLayer(chunk)) builder = std::make_unique<layer::LayerIndexBuilder>();
    }
    total += chunk.size();
    hasher.Update(chunk);
    IPFLY_RETURN_IF_ERROR(imp.Write(chunk));
    if (builder) {
      if (Status s = builder->Feed(chunk); !s.ok()) {
        IPFLY_LOG_INFO("no layer index for {}: {}", path, s.error().ToString());
        builder.reset();
      }
    }
  }
  auto node = IPFLY_TRY(imp.Finish());
  IngestResult out;
  out.cid = node.cid.ToString();
  out.size = total;
  out.digest = Digest::FromSha256(hasher.Final()).ToString();
  if (builder) {
    auto idx = builder->Finish();
    if (!idx.ok()) {
      IPFLY_LOG_INFO("no layer index for {}: {}", out.digest, idx.error().ToString());
    } else {
      idx->blob_cid = node.cid;
      Bytes encoded = idx->Encode();
      auto inode = unixfs::ImportBytes(encoded, profile, sink);
      if (!inode.ok()) return std::move(inode).error().With("store layer index");
      out.index_cid = inode->cid.ToString();
    }
  }
  return out;
}

Result<std::string> IngestBytes(ByteView data, const unixfs::ImportProfile& profile,
                                BlockSink* sink) {
  auto node = IPFLY_TRY(unixfs::ImportBytes(data, profile, sink));
  return node.cid.ToString();
}

}  // namespace ipfly::registry
