// FaultHttpServer: a small HTTP/1.1 server on 127.0.0.1 (ephemeral port) for tests, written on
// plain POSIX sockets so that it can misbehave in every way a real server or network does:
// slow bodies, bodies cut short, TCP resets, requests that are never answered, bad chunking,
// trailers. BlockServer builds an IPFS trustless gateway with per-CID faults on top of it.
//
// Threads: one accept thread plus one thread per connection; all are joined by Stop() (and by the
// destructor). Stop() wakes every thread that waits in a Responder call (SleepFor, Hang, a blocked
// send), so tests never hang on shutdown. Handlers run on connection threads, concurrently; they
// must be thread-safe with respect to each other.
//
// Keep-alive: a connection serves requests until the client closes it, the request says
// "Connection: close", or the handler breaks the connection (Close/Reset/incomplete response).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/multiformats/cid.h"

namespace ipfly::test {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct TestRequest {
  std::string method;
  std::string target;  // as sent: path + "?" + query
  std::string path;    // percent-decoded path
  std::string query;   // raw query string (without '?')
  HeaderList headers;
  std::string body;                    // de-chunked
  uint64_t connection_id = 0;          // 1, 2, ... in accept order (keep-alive checks)
  uint64_t request_on_connection = 0;  // 1 for the first request on a connection

  // Case-insensitive header lookup (first value).
  std::optional<std::string> Header(std::string_view name) const;
  // First value of query parameter `name`, percent-decoded ('+' stays '+').
  std::optional<std::string> Query(std::string_view name) const;
  std::vector<std::string> QueryAll(std::string_view name) const;

  struct Part {
    HeaderList headers;
    std::string name;      // from Content-Disposition
    std::string filename;  // from Content-Disposition
    std::string body;
  };
  // Parses a multipart/form-data body (boundary from Content-Type). kInvalidArgument otherwise.
  Result<std::vector<Part>> MultipartParts() const;
};

class FaultHttpServer;

// Writes one response. Methods return false once the peer is gone or the server is stopping; a
// handler should then return. If the handler returns before the response is complete (or without
// responding at all), the connection is closed: that is how truncation is simulated.
class Responder {
 public:
  // A complete response with Content-Length.
  bool Respond(int status, const HeaderList& headers, std::string_view body);
  bool Respond(int status, std::string_view body) { return Respond(status, {}, body); }

  // Status line + headers with "Transfer-Encoding: chunked" (plus `Trailer:` when trailer names
  // are given). Then WriteChunk... and FinishChunked(trailers).
  bool StartChunked(int status, const HeaderList& headers,
                    const std::vector<std::string>& trailer_names = {});
  bool WriteChunk(ByteView data);
  bool WriteChunk(std::string_view data) { return WriteChunk(AsBytes(data)); }
  bool FinishChunked(const HeaderList& trailers = {});

  // Status line + headers with the given Content-Length; then Write() the body (possibly less).
  bool StartFixed(int status, const HeaderList& headers, uint64_t content_length);
  // Raw bytes to the socket, as they are.
  bool Write(ByteView data);
  bool Write(std::string_view data) { return Write(AsBytes(data)); }

  // Closes the connection now (FIN): a truncated body if the response was incomplete.
  void Close();
  // Resets the connection (SO_LINGER 0 + close → RST).
  void Reset();
  // Never answers: blocks until the server stops (then closes).
  void Hang();
  // Sleeps; returns false early if the server is stopping.
  bool SleepFor(std::chrono::milliseconds d);

  bool stopping() const;

 private:
  friend class FaultHttpServer;
  Responder(FaultHttpServer* server, int fd) : server_(server), fd_(fd) {}
  bool Send(std::string_view data);

  FaultHttpServer* server_;
  int fd_;
  bool broken_ = false;    // closed, reset or a send failed
  bool complete_ = false;  // a complete response was written
  bool chunked_open_ = false;
  uint64_t fixed_left_ = 0;
  bool fixed_open_ = false;
};

class FaultHttpServer {
 public:
  using Handler = std::function<void(const TestRequest&, Responder&)>;

  explicit FaultHttpServer(Handler handler);
  ~FaultHttpServer();
  FaultHttpServer(const FaultHttpServer&) = delete;
  FaultHttpServer& operator=(const FaultHttpServer&) = delete;

  // Binds 127.0.0.1:0 and starts accepting.
  Status Start();
  // Stops accepting, wakes and joins every thread, closes every socket. Idempotent.
  void Stop();

  uint16_t port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  uint64_t connections_accepted() const { return connections_.load(); }
  uint64_t requests_served() const { return requests_.load(); }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }

 private:
  friend class Responder;
  struct Conn {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void AcceptLoop();
  void ServeConnection(int fd, uint64_t id, Conn* conn);
  // Waits until `fd` is readable/writable or the server stops. false: stopping or error.
  bool WaitFd(int fd, short events, int timeout_ms = -1);
  // Reads one request; false on EOF/error/stop.
  bool ReadRequest(int fd, std::string* buffer, TestRequest* req);
  bool ReadMore(int fd, std::string* buffer);

  Handler handler_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: readable once stopping
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> requests_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable cv_;  // signalled on Stop (SleepFor, Hang)
  std::vector<std::unique_ptr<Conn>> conns_;
};

// Faults a BlockServer can inject, per CID or for every request.
enum class BlockFault {
  kNone,
  kCorrupt,          // raw: one byte flipped; CAR: that block's bytes flipped
  kWrongBlock,       // raw: the bytes of another stored block
  kNotFound,         // 404
  kTooManyRequests,  // 429 + Retry-After: retry_after_s
  kServerError,      // 500
  kBadGateway,       // 502 + Retry-After
  kSlow,             // body dribbled: chunk_bytes every slow_ms
  kReset,            // TCP RST after reading the request
  kTruncatedCar,     // CAR: header, half of the blocks, half a section, then close
  kHang,             // never answers
  kDelay,            // answers normally after delay_ms
};
struct BlockFaultOptions {
  int retry_after_s = 2;
  int slow_ms = 200;
  size_t chunk_bytes = 64;
  int delay_ms = 0;
  std::string content_type;  // override the response Content-Type (empty: the correct one)
};

// An IPFS trustless gateway over an in-memory map of blocks, with per-CID faults.
//   GET /ipfs/{cid}?format=raw (or Accept: application/vnd.ipld.raw) → the stored bytes
//   GET /ipfs/{cid}?format=car  → a CARv1 with root {cid} and the block list set by SetCar
//                                 (default: just the block itself if stored)
//   GET /ipfs/bafkqaaa          → 200, empty (the trustless gateway probe)
// Blocks are stored as given (not verified), so tests can store wrong bytes too.
class BlockServer {
 public:
  using Fault = BlockFault;
  using FaultOptions = BlockFaultOptions;

  BlockServer();
  ~BlockServer();

  Status Start() { return server_.Start(); }
  void Stop() { server_.Stop(); }
  std::string base_url() const { return server_.base_url(); }
  FaultHttpServer& http() { return server_; }

  void Put(const mf::Cid& cid, Bytes data);
  void SetFault(const mf::Cid& cid, Fault fault, FaultOptions options = {});
  // Faults applied to every request (e.g. the whole gateway is slow); a per-CID fault wins.
  void SetDefaultFault(Fault fault, FaultOptions options = {});
  // The blocks served (in this order) for a CAR request rooted at `root`.
  void SetCar(const mf::Cid& root, std::vector<mf::Cid> blocks);
  // Number of requests that named `cid` (raw or CAR).
  uint64_t requests_for(const mf::Cid& cid) const;
  // The last request received (for header/query assertions).
  std::optional<TestRequest> last_request() const;

 private:
  void Handle(const TestRequest& req, Responder& out);
  void ServeRaw(const mf::Cid& cid, Fault fault, const FaultOptions& o, Responder& out);
  void ServeCar(const mf::Cid& root, Fault fault, const FaultOptions& o, Responder& out);

  mutable std::mutex mu_;
  std::map<mf::Cid, Bytes> blocks_;
  std::map<mf::Cid, std::pair<Fault, FaultOptions>> faults_;
  std::pair<Fault, FaultOptions> default_fault_{Fault::kNone, {}};
  std::map<mf::Cid, std::vector<mf::Cid>> cars_;
  std::map<mf::Cid, uint64_t> counts_;
  std::optional<TestRequest> last_;
  FaultHttpServer server_;
};

}  // namespace ipfly::test
