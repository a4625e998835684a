#include "tests/support/fault_http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <tuple>

#include "core/codec/car.h"

namespace ipfly::test {
namespace {

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexVal(s[i + 1]) >= 0 && HexVal(s[i + 2]) >= 0) {
      out += static_cast<char>(HexVal(s[i + 1]) * 16 + HexVal(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<std::string> FindHeader(const HeaderList& h, std::string_view name) {
  for (const auto& [k, v] : h) {
    if (IEquals(k, name)) return v;
  }
  return std::nullopt;
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 410:
      return "Gone";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Status";
  }
}

std::string StatusAndHeaders(int status, const HeaderList& headers) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) + "\r\n";
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  return out;
}

// Parameter `name` of a header value like `form-data; name="file"; filename="a b"`.
std::string HeaderParam(std::string_view value, std::string_view name) {
  size_t pos = 0;
  while ((pos = value.find(';', pos)) != std::string_view::npos) {
    ++pos;
    std::string_view rest = Trim(value.substr(pos));
    if (rest.size() > name.size() && IEquals(rest.substr(0, name.size()), name) &&
        rest[name.size()] == '=') {
      std::string_view v = rest.substr(name.size() + 1);
      if (!v.empty() && v.front() == '"') {
        size_t end = v.find('"', 1);
        return std::string(v.substr(1, end == std::string_view::npos ? v.npos : end - 1));
      }
      return std::string(v.substr(0, v.find(';')));
    }
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TestRequest

std::optional<std::string> TestRequest::Header(std::string_view name) const {
  return FindHeader(headers, name);
}

std::vector<std::string> TestRequest::QueryAll(std::string_view name) const {
  std::vector<std::string> out;
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    size_t eq = kv.find('=');
    std::string key = PercentDecode(kv.substr(0, eq));
    if (key == name) out.push_back(eq == kv.npos ? "" : PercentDecode(kv.substr(eq + 1)));
    if (amp == q.npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

std::optional<std::string> TestRequest::Query(std::string_view name) const {
  auto all = QueryAll(name);
  if (all.empty()) return std::nullopt;
  return all.front();
}

Result<std::vector<TestRequest::Part>> TestRequest::MultipartParts() const {
  auto ct = Header("Content-Type");
  if (!ct || !ct->starts_with("multipart/form-data")) {
    return InvalidArgument("not multipart/form-data");
  }
  std::string boundary = HeaderParam(*ct, "boundary");
  if (boundary.empty()) return InvalidArgument("no boundary");
  const std::string delim = "--" + boundary;
  std::vector<Part> parts;
  size_t pos = body.find(delim);
  if (pos == std::string::npos) return InvalidArgument("no first boundary");
  while (true) {
    pos += delim.size();
    if (body.compare(pos, 2, "--") == 0) break;  // closing delimiter
    if (body.compare(pos, 2, "\r\n") != 0) return InvalidArgument("bad boundary line");
    pos += 2;
    size_t head_end = body.find("\r\n\r\n", pos);
    if (head_end == std::string::npos) return InvalidArgument("unterminated part headers");
    Part part;
    std::string_view head(body.data() + pos, head_end - pos);
    while (!head.empty()) {
      size_t eol = head.find("\r\n");
      std::string_view line = head.substr(0, eol);
      size_t colon = line.find(':');
      if (colon != line.npos) {
        part.headers.emplace_back(std::string(Trim(line.substr(0, colon))),
                                  std::string(Trim(line.substr(colon + 1))));
      }
      if (eol == head.npos) break;
      head.remove_prefix(eol + 2);
    }
    if (auto cd = FindHeader(part.headers, "Content-Disposition")) {
      part.name = HeaderParam(*cd, "name");
      part.filename = HeaderParam(*cd, "filename");
    }
    size_t data_begin = head_end + 4;
    size_t next = body.find("\r\n" + delim, data_begin);
    if (next == std::string::npos) return InvalidArgument("unterminated part");
    part.body = body.substr(data_begin, next - data_begin);
    parts.push_back(std::move(part));
    pos = next + 2;
  }
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Responder

bool Responder::stopping() const { return server_->stopping(); }

bool Responder::Send(std::string_view data) {
  if (broken_) return false;
  while (!data.empty()) {
    if (!server_->WaitFd(fd_, POLLOUT)) {
      broken_ = true;
      return false;
    }
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      broken_ = true;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool Responder::Respond(int status, const HeaderList& headers, std::string_view body) {
  HeaderList h = headers;
  if (!FindHeader(h, "Content-Length"))
    h.emplace_back("Content-Length", std::to_string(body.size()));
  std::string out = StatusAndHeaders(status, h) + "\r\n";
  out += body;
  bool ok = Send(out);
  complete_ = ok;
  return ok;
}

bool Responder::StartChunked(int status, const HeaderList& headers,
                             const std::vector<std::string>& trailer_names) {
  HeaderList h = headers;
  h.emplace_back("Transfer-Encoding", "chunked");
  if (!trailer_names.empty()) {
    std::string names;
    for (const auto& n : trailer_names) names += (names.empty() ? "" : ", ") + n;
    h.emplace_back("Trailer", names);
  }
  chunked_open_ = true;
  return Send(StatusAndHeaders(status, h) + "\r\n");
}

bool Responder::WriteChunk(ByteView data) {
  if (data.empty()) return !broken_;  // an empty chunk would end the body
  char size[32];
  auto [p, ec] = std::to_chars(size, size + sizeof(size), data.size(), 16);
  (void)ec;
  std::string out(size, p);
  out += "\r\n";
  out += AsString(data);
  out += "\r\n";
  return Send(out);
}

bool Responder::FinishChunked(const HeaderList& trailers) {
  std::string out = "0\r\n";
  for (const auto& [k, v] : trailers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  bool ok = Send(out);
  chunked_open_ = false;
  complete_ = ok;
  return ok;
}

bool Responder::StartFixed(int status, const HeaderList& headers, uint64_t content_length) {
  HeaderList h = headers;
  h.emplace_back("Content-Length", std::to_string(content_length));
  fixed_open_ = true;
  fixed_left_ = content_length;
  bool ok = Send(StatusAndHeaders(status, h) + "\r\n");
  if (ok && content_length == 0) complete_ = true;
  return ok;
}

bool Responder::Write(ByteView data) {
  bool ok = Send(AsString(data));
  if (ok && fixed_open_) {
    fixed_left_ -= std::min<uint64_t>(fixed_left_, data.size());
    if (fixed_left_ == 0) complete_ = true;
  }
  return ok;
}

void Responder::Close() {
  if (broken_) return;
  ::shutdown(fd_, SHUT_RDWR);
  broken_ = true;
}

void Responder::Reset() {
  if (broken_) return;
  // SO_LINGER with a zero timeout makes the close abortive: the kernel sends RST, not FIN.
  linger lg{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  // The fd itself is closed by the connection thread; shutting down reading here would send FIN,
  // so mark the connection broken and let ServeConnection close it right away.
  broken_ = true;
}

void Responder::Hang() {
  std::unique_lock lock(server_->mu_);
  server_->cv_.wait(lock, [this] { return server_->stopping(); });
  broken_ = true;
}

bool Responder::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(server_->mu_);
  return !server_->cv_.wait_for(lock, d, [this] { return server_->stopping(); });
}

// ---------------------------------------------------------------------------------------------
// FaultHttpServer

FaultHttpServer::FaultHttpServer(Handler handler) : handler_(std::move(handler)) {}

FaultHttpServer::~FaultHttpServer() { Stop(); }

Status FaultHttpServer::Start() {
  if (listen_fd_ >= 0) return Internal("FaultHttpServer already started");
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return ErrnoError("eventfd", errno);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return ErrnoError("socket", errno);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError("bind 127.0.0.1:0", errno);
  }
  if (::listen(listen_fd_, 128) != 0) return ErrnoError("listen", errno);
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return OkStatus();
}

void FaultHttpServer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_.store(true, std::memory_order_release);
    cv_.notify_all();
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::unique_ptr<Conn>> conns;
  {
    std::lock_guard lock(mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) {
    if (c->thread.joinable()) c->thread.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
}

bool FaultHttpServer::WaitFd(int fd, short events, int timeout_ms) {
  while (!stopping()) {
    pollfd fds[2] = {{fd, events, 0}, {wake_fd_, POLLIN, 0}};
    int r = ::poll(fds, 2, timeout_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) return false;  // timeout
    if (fds[1].revents != 0) return false;
    if (fds[0].revents & (POLLERR | POLLNVAL)) return false;
    return true;  // readable/writable (or hang-up, which the read/send then reports)
  }
  return false;
}

void FaultHttpServer::AcceptLoop() {
  while (WaitFd(listen_fd_, POLLIN)) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t id = ++connections_;
    std::lock_guard lock(mu_);
    // Reap finished connection threads so a long test does not accumulate them.
    std::erase_if(conns_, [](std::unique_ptr<Conn>& c) {
      if (!c->done.load()) return false;
      c->thread.join();
      return true;
    });
    auto conn = std::make_unique<Conn>();
    Conn* raw = conn.get();
    conn->thread = std::thread([this, fd, id, raw] { ServeConnection(fd, id, raw); });
    conns_.push_back(std::move(conn));
  }
}

bool FaultHttpServer::ReadMore(int fd, std::string* buffer) {
  if (!WaitFd(fd, POLLIN)) return false;
  char tmp[16384];
  ssize_t n = ::recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) return false;
  buffer->append(tmp, static_cast<size_t>(n));
  return true;
}

bool FaultHttpServer::ReadRequest(int fd, std::string* buf, TestRequest* req) {
  size_t head_end;
  while ((head_end = buf->find("\r\n\r\n")) == std::string::npos) {
    if (buf->size() > (1 << 20) || !ReadMore(fd, buf)) return false;
  }
  std::string_view head(buf->data(), head_end);
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = line.rfind(' ');
  if (sp1 == line.npos || sp2 == sp1) return false;
  req->method = std::string(line.substr(0, sp1));
  req->target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  size_t q = req->target.find('?');
  req->path = PercentDecode(std::string_view(req->target).substr(0, q));
  req->query = q == std::string::npos ? "" : req->target.substr(q + 1);
  req->headers.clear();
  std::string_view rest = eol == head.npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    size_t e = rest.find("\r\n");
    std::string_view l = rest.substr(0, e);
    size_t colon = l.find(':');
    if (colon != l.npos) {
      req->headers.emplace_back(std::string(Trim(l.substr(0, colon))),
                                std::string(Trim(l.substr(colon + 1))));
    }
    if (e == rest.npos) break;
    rest.remove_prefix(e + 2);
  }
  buf->erase(0, head_end + 4);
  req->body.clear();
  auto te = req->Header("Transfer-Encoding");
  if (te && IEquals(Trim(*te), "chunked")) {
    while (true) {
      size_t le;
      while ((le = buf->find("\r\n")) == std::string::npos) {
        if (!ReadMore(fd, buf)) return false;
      }
      uint64_t size = 0;
      auto [p, ec] = std::from_chars(buf->data(), buf->data() + le, size, 16);
      if (ec != std::errc()) return false;
      (void)p;
      buf->erase(0, le + 2);
      if (size == 0) {
        // Skip trailers up to the empty line.
        while (true) {
          while ((le = buf->find("\r\n")) == std::string::npos) {
            if (!ReadMore(fd, buf)) return false;
          }
          buf->erase(0, le + 2);
          if (le == 0) break;
        }
        break;
      }
      while (buf->size() < size + 2) {
        if (!ReadMore(fd, buf)) return false;
      }
      req->body.append(*buf, 0, size);
      buf->erase(0, size + 2);
    }
  } else if (auto cl = req->Header("Content-Length")) {
    uint64_t len = 0;
    std::from_chars(cl->data(), cl->data() + cl->size(), len);
    while (buf->size() < len) {
      if (!ReadMore(fd, buf)) return false;
    }
    req->body = buf->substr(0, len);
    buf->erase(0, len);
  }
  return true;
}

void FaultHttpServer::ServeConnection(int fd, uint64_t id, Conn* conn) {
  std::string buffer;
  uint64_t n = 0;
  while (!stopping()) {
    TestRequest req;
    if (!ReadRequest(fd, &buffer, &req)) break;
    req.connection_id = id;
    req.request_on_connection = ++n;
    ++requests_;
    Responder out(this, fd);
    handler_(req, out);
    if (out.broken_ || !out.complete_) break;  // truncation, reset, hang, or no answer
    auto conn_hdr = req.Header("Connection");
    if (conn_hdr && IEquals(Trim(*conn_hdr), "close")) break;
  }
  ::close(fd);
  conn->done.store(true);
}

// ---------------------------------------------------------------------------------------------
// BlockServer

BlockServer::BlockServer()
    : server_([this](const TestRequest& req, Responder& out) { Handle(req, out); }) {}

BlockServer::~BlockServer() { server_.Stop(); }

void BlockServer::Put(const mf::Cid& cid, Bytes data) {
  std::lock_guard lock(mu_);
  blocks_[cid] = std::move(data);
}

void BlockServer::SetFault(const mf::Cid& cid, Fault fault, FaultOptions options) {
  std::lock_guard lock(mu_);
  faults_[cid] = {fault, std::move(options)};
}

void BlockServer::SetDefaultFault(Fault fault, FaultOptions options) {
  std::lock_guard lock(mu_);
  default_fault_ = {fault, std::move(options)};
}

void BlockServer::SetCar(const mf::Cid& root, std::vector<mf::Cid> blocks) {
  std::lock_guard lock(mu_);
  cars_[root] = std::move(blocks);
}

uint64_t BlockServer::requests_for(const mf::Cid& cid) const {
  std::lock_guard lock(mu_);
  auto it = counts_.find(cid);
  return it == counts_.end() ? 0 : it->second;
}

std::optional<TestRequest> BlockServer::last_request() const {
  std::lock_guard lock(mu_);
  return last_;
}

void BlockServer::Handle(const TestRequest& req, Responder& out) {
  if ((req.method != "GET" && req.method != "HEAD") || !req.path.starts_with("/ipfs/")) {
    out.Respond(404, "not found\n");
    return;
  }
  std::string cid_str = req.path.substr(6);
  if (size_t slash = cid_str.find('/'); slash != std::string::npos) cid_str.resize(slash);
  auto cid = mf::Cid::Parse(cid_str);
  if (!cid.ok()) {
    out.Respond(400, "bad cid: " + cid.error().message() + "\n");
    return;
  }
  Fault fault;
  FaultOptions opts;
  {
    std::lock_guard lock(mu_);
    last_ = req;
    ++counts_[*cid];
    auto it = faults_.find(*cid);
    std::tie(fault, opts) = it != faults_.end() ? it->second : default_fault_;
  }
  switch (fault) {
    case Fault::kNotFound:
      out.Respond(404, {{"Content-Type", "text/plain"}}, "no such block\n");
      return;
    case Fault::kTooManyRequests:
      out.Respond(429, {{"Retry-After", std::to_string(opts.retry_after_s)}}, "slow down\n");
      return;
    case Fault::kServerError:
      out.Respond(500, {{"Content-Type", "text/plain"}}, "internal error\n");
      return;
    case Fault::kBadGateway:
      out.Respond(502, {{"Retry-After", std::to_string(opts.retry_after_s)}}, "no providers\n");
      return;
    case Fault::kReset:
      out.Reset();
      return;
    case Fault::kHang:
      out.Hang();
      return;
    case Fault::kDelay:
      if (!out.SleepFor(std::chrono::milliseconds(opts.delay_ms))) return;
      break;
    default:
      break;
  }
  std::string format = req.Query("format").value_or("");
  std::string accept = req.Header("Accept").value_or("");
  if (format == "car" || (format.empty() && accept.find("application/vnd.ipld.car") == 0)) {
    ServeCar(*cid, fault, opts, out);
  } else {
    ServeRaw(*cid, fault, opts, out);
  }
}

void BlockServer::ServeRaw(const mf::Cid& cid, Fault fault, const FaultOptions& o, Responder& out) {
  Bytes data;
  if (cid.is_identity()) {
    data = cid.multihash().digest();
  } else {
    std::lock_guard lock(mu_);
    auto it = blocks_.find(cid);
    if (it == blocks_.end()) {
      out.Respond(404, {{"Content-Type", "text/plain"}}, "block not found\n");
      return;
    }
    data = it->second;
    if (fault == Fault::kWrongBlock) {
      for (const auto& [other, bytes] : blocks_) {
        if (!(other == cid) && bytes != data) {
          data = bytes;
          break;
        }
      }
    }
  }
  if (fault == Fault::kCorrupt) {
    if (data.empty()) data.push_back(0);
    data[data.size() / 2] ^= 0x5a;
  }
  HeaderList headers = {
      {"Content-Type", o.content_type.empty() ? "application/vnd.ipld.raw" : o.content_type},
      {"X-Content-Type-Options", "nosniff"}};
  if (fault == Fault::kSlow) {
    if (!out.StartFixed(200, headers, data.size())) return;
    for (size_t off = 0; off < data.size(); off += o.chunk_bytes) {
      if (!out.SleepFor(std::chrono::milliseconds(o.slow_ms))) return;
      size_t n = std::min(o.chunk_bytes, data.size() - off);
      if (!out.Write(ByteView(data.data() + off, n))) return;
    }
    return;
  }
  out.Respond(200, headers, AsString(data));
}

void BlockServer::ServeCar(const mf::Cid& root, Fault fault, const FaultOptions& o,
                           Responder& out) {
  std::vector<std::pair<mf::Cid, Bytes>> sections;
  {
    std::lock_guard lock(mu_);
    std::vector<mf::Cid> list;
    if (auto it = cars_.find(root); it != cars_.end()) {
      list = it->second;
    } else if (blocks_.count(root) != 0) {
      list = {root};
    } else {
      out.Respond(404, {{"Content-Type", "text/plain"}}, "root not found\n");
      return;
    }
    for (const auto& c : list) {
      auto it = blocks_.find(c);
      if (it == blocks_.end()) continue;  // a missing block: the client must notice the gap
      Bytes data = it->second;
      if (fault == Fault::kCorrupt && c == root) {
        // kCorrupt on a CAR root flips the root block; set the fault on a CAR root only.
        if (data.empty()) data.push_back(0);
        data[data.size() / 2] ^= 0x5a;
      }
      sections.emplace_back(c, std::move(data));
    }
  }
  HeaderList headers = {
      {"Content-Type", o.content_type.empty()
                           ? "application/vnd.ipld.car; version=1; order=dfs; dups=y"
                           : o.content_type},
      {"X-Content-Type-Options", "nosniff"}};
  if (!out.StartChunked(200, headers)) return;
  if (!out.WriteChunk(codec::EncodeCarV1Header({root}))) return;
  size_t count = sections.size();
  if (fault == Fault::kTruncatedCar) count = sections.size() / 2;
  for (size_t i = 0; i < count; ++i) {
    Bytes sec = codec::EncodeCarSection(sections[i].first, sections[i].second);
    if (fault == Fault::kSlow) {
      for (size_t off = 0; off < sec.size(); off += o.chunk_bytes) {
        if (!out.SleepFor(std::chrono::milliseconds(o.slow_ms))) return;
        size_t n = std::min(o.chunk_bytes, sec.size() - off);
        if (!out.WriteChunk(ByteView(sec.data() + off, n))) return;
      }
    } else if (!out.WriteChunk(sec)) {
      return;
    }
  }
  if (fault == Fault::kTruncatedCar) {
    if (count < sections.size()) {
      Bytes sec = codec::EncodeCarSection(sections[count].first, sections[count].second);
      out.WriteChunk(ByteView(sec.data(), sec.size() / 2));
    }
    out.Close();  // no terminating chunk: the client sees a truncated body
    return;
  }
  out.FinishChunked();
}

}  // namespace ipfly::test
