#include "registry_shim/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ipfly::registry {
namespace {

bool PollFd(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

void AddrOf(const sockaddr_storage& ss, std::string& ip, int& port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    port = ntohs(a->sin6_port);
  }
  ip = buf;
}

// httplib::Stream over a non-blocking socket with a small read buffer (httplib's line reader
// reads byte by byte).
class SocketStream final : public httplib::Stream {
 public:
  SocketStream(int fd, int read_ms, int write_ms)
      : fd_(fd), read_ms_(read_ms), write_ms_(write_ms) {}

  bool is_readable() const override { return pos_ < len_ || PollFd(fd_, POLLIN, read_ms_); }
  bool is_writable() const override { return PollFd(fd_, POLLOUT, write_ms_); }
  bool WaitReadable(int ms) const { return pos_ < len_ || PollFd(fd_, POLLIN, ms); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ < len_) {
      size_t n = std::min(size, len_ - pos_);
      std::memcpy(ptr, buf_ + pos_, n);
      pos_ += n;
      return static_cast<ssize_t>(n);
    }
    for (;;) {
      if (!PollFd(fd_, POLLIN, read_ms_)) return -1;
      char* dst = size >= sizeof buf_ ? ptr : buf_;
      size_t cap = size >= sizeof buf_ ? size : sizeof buf_;
      ssize_t n = ::recv(fd_, dst, cap, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n <= 0) return n;
      if (dst == ptr) return n;
      len_ = static_cast<size_t>(n);
      pos_ = 0;
      return read(ptr, size);
    }
  }

  ssize_t write(const char* ptr, size_t size) override {
    size_t off = 0;
    while (off < size) {
      ssize_t n = ::send(fd_, ptr + off, size - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          if (!PollFd(fd_, POLLOUT, write_ms_)) return -1;
          continue;
        }
        return -1;
      }
      off += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) AddrOf(ss, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) AddrOf(ss, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  int fd_;
  int read_ms_, write_ms_;
  char buf_[16384];
  size_t pos_ = 0, len_ = 0;
};

}  // namespace

bool HttpServer::RaiseBacklog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }

bool HttpServer::process_and_close_socket(socket_t sock) {
  int flags = ::fcntl(sock, F_GETFL, 0);
  ::fcntl(sock, F_SETFL, flags | O_NONBLOCK);
  int one = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  if (PollFd(sock, POLLIN, timeouts_.keepalive_ms)) {
    unsigned char first = 0;
    ssize_t n = ::recv(sock, &first, 1, MSG_PEEK);
    if (n == 1 && first == 0x16) {
      // A TLS handshake record: this port speaks plain HTTP only.
      tls_hellos_.fetch_add(1);
      static constexpr char kReply[] =
          "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 37\r\n"
          "Connection: close\r\n\r\nthis port speaks plain HTTP, not TLS\n";
      (void)::send(sock, kReply, sizeof kReply - 1, MSG_NOSIGNAL);
    } else if (n == 1) {
      SocketStream strm(sock, timeouts_.read_ms, timeouts_.write_ms);
      std::string ip;
      int port = 0;
      strm.get_remote_ip_and_port(ip, port);
      for (size_t left = timeouts_.max_requests; left > 0; --left) {
        if (left != timeouts_.max_requests) {
          // Idle between requests: wait in slices so that Stop() is not held up by idle
          // keep-alive connections.
          bool readable = false;
          for (int waited = 0; waited < timeouts_.keepalive_ms && !Stopping(); waited += 200) {
            if ((readable = strm.WaitReadable(200))) break;
          }
          if (!readable) break;
        }
        bool connection_closed = false;
        bool close_connection = left == 1 || Stopping();
        bool ok =
            process_request(strm, close_connection, connection_closed, [&](httplib::Request& req) {
              req.remote_addr = ip;
              req.remote_port = port;
            });
        if (!ok || connection_closed) break;
      }
    }
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return true;
}

}  // namespace ipfly::registry
