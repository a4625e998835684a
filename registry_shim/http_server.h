// A cpp-httplib Server that owns the per-connection loop, so that it can
//   * answer a TLS ClientHello on the plain-HTTP port with "400 Bad Request" and close at once
//     (containers/image tries HTTPS first and falls back to HTTP on any error; without this the
//     hello would sit in the request-line reader until the read timeout);
//   * use non-blocking sockets with poll-based timeouts and a read buffer of its own.
// Everything else (parsing, routing, content providers and readers) is httplib's.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstdint>

namespace ipfly::registry {

class HttpServer : public httplib::Server {
 public:
  struct Timeouts {
    int read_ms = 60'000;        // a request (headers or body) that stalls this long is dropped
    int write_ms = 60'000;       // a client that stops reading for this long is dropped
    int keepalive_ms = 10'000;   // idle time allowed between requests on one connection
    size_t max_requests = 1000;  // requests per connection
  };
  explicit HttpServer(Timeouts t) : timeouts_(t) {}

  uint64_t tls_hellos() const { return tls_hellos_.load(); }
  // httplib listens with a backlog of 5, which overflows under bursts of clients (50 pulls at
  // once); call after binding to raise it (Linux updates the backlog on a second listen()).
  bool RaiseBacklog(int backlog);

 private:
  bool process_and_close_socket(socket_t sock) override;
  // stop() invalidates the listening socket at once; is_running() stays true until every worker
  // has finished, so it cannot tell workers to wind down.
  bool Stopping() const { return svr_sock_ == INVALID_SOCKET; }

  const Timeouts timeouts_;
  std::atomic<uint64_t> tls_hellos_{0};
};

}  // namespace ipfly::registry
