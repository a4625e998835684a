#include "ipfs_fetch/http_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <ctime>

#include "core/base/log.h"
#include "ipfs_fetch/retry_hint.h"

namespace ipfly::fetch {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr uint64_t kDefaultFetchCap = 64ull << 20;
constexpr size_t kErrorBodyCap = 64 * 1024;

void GlobalInitOnce() {
  // curl_global_init is not thread-safe in older libcurl and must run before any other call;
  // call_once gives both. It is never undone: curl_global_cleanup at exit would race with
  // threads that are still finishing (the default client lives until exit).
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

struct MimeDeleter {
  void operator()(curl_mime* m) const { curl_mime_free(m); }
};
using MimePtr = std::unique_ptr<curl_mime, MimeDeleter>;

Status AppendHeader(SlistPtr* list, const std::string& line) {
  curl_slist* next = curl_slist_append(list->get(), line.c_str());
  if (next == nullptr) return Internal("curl_slist_append failed");
  (void)list->release();  // `next` now owns the old list (curl appends in place)
  list->reset(next);
  return OkStatus();
}

// Per-request state shared with the curl callbacks (always called on the requesting thread).
struct Transfer {
  CURL* easy = nullptr;
  HttpResponse* response = nullptr;
  const HttpBodyFn* on_body = nullptr;  // null: buffer the body
  const HttpHeadersFn* on_headers = nullptr;
  uint64_t cap = 0;           // 0: unlimited
  bool headers_done = false;  // the final response's header block has ended
  bool headers_fn_called = false;
  bool too_large = false;
  bool error_body_full = false;  // aborted deliberately after buffering an error body
  std::optional<Error> callback_error;
  uint64_t wire_bytes = 0;  // header + body bytes, for stall detection

  long Status() const {  // NOLINT(runtime/int)
    long code = 0;       // NOLINT(runtime/int)
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    return code;
  }

  // Runs the headers hook once, for 2xx responses in streaming mode.
  ipfly::Status HeadersReady() {
    if (headers_fn_called) return OkStatus();
    headers_fn_called = true;
    response->status = Status();
    if (on_headers != nullptr && *on_headers && response->ok()) return (*on_headers)(*response);
    return OkStatus();
  }
};

size_t HeaderCallback(char* data, size_t size, size_t nitems, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  const size_t n = size * nitems;
  t->wire_bytes += n;
  std::string_view line(data, n);
  if (line.size() >= 5 && line.substr(0, 5) == "HTTP/") {
    // A new response starts (after 1xx or a followed redirect): only the last one counts.
    t->response->headers.Clear();
    t->headers_done = false;
    return n;
  }
  std::string_view trimmed = Trim(line);
  if (trimmed.empty()) {
    // End of a header block. 1xx blocks are followed by another status line that resets us.
    t->headers_done = true;
    return n;
  }
  HttpHeaders& target = t->headers_done ? t->response->trailers : t->response->headers;
  // Folded (obs-fold) continuation lines are obsolete (RFC 9112) and ignored.
  if (line.front() == ' ' || line.front() == '\t') return n;
  size_t colon = trimmed.find(':');
  if (colon == std::string_view::npos) return n;  // not a field; ignore
  target.Add(std::string(Trim(trimmed.substr(0, colon))),
             std::string(Trim(trimmed.substr(colon + 1))));
  return n;
}

size_t WriteCallback(char* data, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  const size_t n = size * nmemb;
  t->wire_bytes += n;
  HttpResponse* r = t->response;
  r->status = t->Status();
  if (t->on_body != nullptr && !r->ok()) {
    // Streaming mode, error status: keep the start of the body for the error message only.
    size_t room = kErrorBodyCap - std::min(kErrorBodyCap, r->body.size());
    size_t take = std::min(room, n);
    r->body.insert(r->body.end(), data, data + take);
    r->body_bytes += n;
    if (take < n) {
      t->error_body_full = true;
      return 0;  // enough: abort instead of draining an arbitrarily long error body
    }
    return n;
  }
  r->body_bytes += n;
  if (t->cap != 0 && r->body_bytes > t->cap) {
    t->too_large = true;
    return 0;
  }
  if (t->on_body == nullptr) {
    r->body.insert(r->body.end(), data, data + n);
    return n;
  }
  if (Status s = t->HeadersReady(); !s.ok()) {
    t->callback_error = std::move(s).error();
    return 0;
  }
  if (Status s = (*t->on_body)(ByteView(reinterpret_cast<const uint8_t*>(data), n)); !s.ok()) {
    t->callback_error = std::move(s).error();
    return 0;
  }
  return n;
}

Error MapCurlError(CURLcode code, const char* errbuf, const HttpRequest& req, bool deadline_hit) {
  std::string detail = errbuf != nullptr && errbuf[0] != '\0' ? errbuf : curl_easy_strerror(code);
  std::string msg = req.method + " " + req.url + ": " + detail;
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      // curl reports both the overall timeout and the connect timeout this way; only the first
      // one is "the deadline passed". A connect timeout well before the deadline is a dead host.
      if (deadline_hit) return Timeout(std::move(msg));
      return Unavailable(std::move(msg));
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return InvalidArgument(std::move(msg));
    case CURLE_FILESIZE_EXCEEDED:
      return TooLarge(std::move(msg));
    case CURLE_READ_ERROR:
      return IoError(std::move(msg));
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
      return Internal(std::move(msg));
    default:
      // Refused, reset, resolve failures, partial bodies, bad replies, TLS failures: transient
      // (or at least "this source is not usable now") from the caller's point of view.
      return Unavailable(std::move(msg));
  }
}

// Verifies before the transfer that a multipart file can be opened, so a bad path is reported
// precisely instead of as a curl read error halfway through the upload.
Status CheckReadable(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open " + path, errno);
  ::close(fd);
  return OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// HttpHeaders, CancelToken

void HttpHeaders::Add(std::string name, std::string value) {
  fields_.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string> HttpHeaders::Get(std::string_view name) const {
  for (const auto& [k, v] : fields_) {
    if (IEquals(k, name)) return v;
  }
  return std::nullopt;
}

std::vector<std::string> HttpHeaders::GetAll(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : fields_) {
    if (IEquals(k, name)) out.push_back(v);
  }
  return out;
}

void CancelToken::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_.store(true, std::memory_order_release);
  // Called under mu_ so that Unregister() cannot return while a wake-up is running: the waker
  // touches the transfer's multi handle, which must stay alive until then.
  for (auto& [id, wake] : wakers_) wake();
}

uint64_t CancelToken::Register(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  if (cancelled_.load(std::memory_order_acquire)) return 0;
  uint64_t id = next_id_++;
  wakers_.emplace_back(id, std::move(wake));
  return id;
}

void CancelToken::Unregister(uint64_t id) {
  if (id == 0) return;
  std::lock_guard lock(mu_);
  std::erase_if(wakers_, [id](const auto& w) { return w.first == id; });
}

// ---------------------------------------------------------------------------------------------
// HttpClient

// DNS cache and TLS sessions shared by all slots. One mutex per lock kind, as curl requires.
struct HttpClient::Shared {
  CURLSH* share = nullptr;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> locks;

  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* userptr) {
    static_cast<Shared*>(userptr)->locks[data].lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* userptr) {
    static_cast<Shared*>(userptr)->locks[data].unlock();
  }

  Shared() {
    share = curl_share_init();
    if (share == nullptr) return;
    curl_share_setopt(share, CURLSHOPT_USERDATA, this);
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, &Shared::Lock);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, &Shared::Unlock);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    // Not CURL_LOCK_DATA_CONNECT: see the header (unsafe across threads in libcurl 7.x).
  }
  ~Shared() {
    if (share != nullptr) curl_share_cleanup(share);
  }
};

// An easy handle and the multi handle that drives it. The multi owns the connection cache, so
// keeping the pair together keeps its keep-alive connections reusable.
struct HttpClient::Slot {
  CURL* easy = nullptr;
  CURLM* multi = nullptr;
  Slot() : easy(curl_easy_init()), multi(curl_multi_init()) {}
  ~Slot() {
    if (multi != nullptr) curl_multi_cleanup(multi);
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
};

HttpClient::HttpClient() : HttpClient(Options{}) {}

HttpClient::HttpClient(Options options) : options_(std::move(options)) {
  GlobalInitOnce();
  shared_ = std::make_unique<Shared>();
}

HttpClient::~HttpClient() {
  // Easy handles must be cleaned up before the share they are attached to.
  idle_.clear();
  shared_.reset();
}

std::shared_ptr<HttpClient> HttpClient::Default() {
  // Leaked on purpose: no destruction-order problems with threads still running at exit.
  static auto* client = new std::shared_ptr<HttpClient>(std::make_shared<HttpClient>());
  return *client;
}

std::unique_ptr<HttpClient::Slot> HttpClient::TakeSlot() {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      auto slot = std::move(idle_.back());
      idle_.pop_back();
      return slot;
    }
  }
  auto slot = std::make_unique<Slot>();
  if (slot->easy == nullptr || slot->multi == nullptr) return nullptr;
  return slot;
}

void HttpClient::ReturnSlot(std::unique_ptr<Slot> slot) {
  std::lock_guard lock(mu_);
  if (idle_.size() < options_.max_idle_slots) idle_.push_back(std::move(slot));
  // else: dropped here, closing its connections.
}

Result<HttpResponse> HttpClient::Fetch(const HttpRequest& request) {
  HttpRequest capped = request;
  if (capped.max_body_bytes == 0) capped.max_body_bytes = kDefaultFetchCap;
  HttpBodyFn none;
  // Buffered mode is Stream with a null body callback (see Transfer::on_body).
  return Stream(capped, none, nullptr);
}

Result<HttpResponse> HttpClient::Stream(const HttpRequest& req, const HttpBodyFn& on_body,
                                        const HttpHeadersFn& on_headers) {
  const bool buffered = !on_body;
  if (req.cancel && req.cancel->cancelled()) {
    return Error(Errc::kCancelled, req.method + " " + req.url + ": cancelled");
  }
  const auto start = Clock::now();
  if (req.deadline && *req.deadline <= start) {
    return Timeout(req.method + " " + req.url + ": deadline passed before the request started");
  }
  if (!(req.url.starts_with("http://") || req.url.starts_with("https://"))) {
    return InvalidArgument("only http:// and https:// URLs are allowed: " + req.url);
  }

  std::unique_ptr<Slot> slot = TakeSlot();
  if (!slot) return Internal("curl handle allocation failed");
  CURL* easy = slot->easy;
  curl_easy_reset(easy);  // keeps live connections, DNS and TLS caches

  HttpResponse response;
  Transfer t;
  t.easy = easy;
  t.response = &response;
  t.on_body = buffered ? nullptr : &on_body;
  t.on_headers = &on_headers;
  t.cap = req.max_body_bytes;

  char errbuf[CURL_ERROR_SIZE] = {0};
  SlistPtr headers;
  MimePtr mime;

  curl_easy_setopt(easy, CURLOPT_SHARE, shared_->share);
  curl_easy_setopt(easy, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, req.follow_redirects ? 1L : 0L);
  curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM-based DNS timeouts
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_VERBOSE, options_.verbose ? 1L : 0L);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &HeaderCallback);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &WriteCallback);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::max<int64_t>(1, req.connect_timeout.count())));  // NOLINT
  if (req.deadline) {
    int64_t ms = duration_cast<milliseconds>(*req.deadline - start).count();
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(std::max<int64_t>(1, ms)));  // NOLINT
  }
  if (req.max_body_bytes != 0) {
    // Fails early when Content-Length already says too much; WriteCallback enforces the rest.
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(req.max_body_bytes));
  }

  // Never wait for "100 Continue": many small servers do not send it and curl would stall 1 s.
  IPFLY_RETURN_IF_ERROR(AppendHeader(&headers, "Expect:"));
  for (const auto& [name, value] : req.headers) {
    IPFLY_RETURN_IF_ERROR(AppendHeader(&headers, name + ": " + value));
  }
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get());

  if (!req.parts.empty()) {
    mime.reset(curl_mime_init(easy));
    for (const MultipartPart& p : req.parts) {
      curl_mimepart* part = curl_mime_addpart(mime.get());
      curl_mime_name(part, p.name.c_str());
      if (!p.file_path.empty()) {
        IPFLY_RETURN_IF_ERROR(CheckReadable(p.file_path));
        curl_mime_filedata(part, p.file_path.c_str());  // also sets filename = basename
        if (!p.filename.empty()) curl_mime_filename(part, p.filename.c_str());
      } else {
        curl_mime_data(part, reinterpret_cast<const char*>(p.data.data()), p.data.size());
        if (!p.filename.empty()) curl_mime_filename(part, p.filename.c_str());
      }
      if (!p.content_type.empty()) curl_mime_type(part, p.content_type.c_str());
      if (!p.headers.empty()) {
        SlistPtr part_headers;
        for (const auto& h : p.headers) IPFLY_RETURN_IF_ERROR(AppendHeader(&part_headers, h));
        curl_mime_headers(part, part_headers.release(), 1);  // curl takes ownership
      }
    }
    curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime.get());
    if (req.method != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else if (req.method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else if (req.method == "HEAD") {
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  } else {
    // POST and anything else with a (possibly empty) body; the body outlives the transfer.
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS,
                     req.body.empty() ? "" : reinterpret_cast<const char*>(req.body.data()));
    if (req.method != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }

  // Drive the transfer with the slot's multi handle instead of curl_easy_perform, so that a
  // CancelToken can interrupt the wait immediately (curl_multi_wakeup) and stalls are detected
  // by us with a precise message.
  CURLM* multi = slot->multi;
  if (CURLMcode mc = curl_multi_add_handle(multi, easy); mc != CURLM_OK) {
    return Internal(std::string("curl_multi_add_handle: ") + curl_multi_strerror(mc));
  }
  uint64_t waker = 0;
  if (req.cancel) waker = req.cancel->Register([multi] { curl_multi_wakeup(multi); });

  std::optional<Error> local_error;
  uint64_t last_bytes = 0;
  auto last_progress = Clock::now();
  CURLcode result = CURLE_OK;
  bool finished = false;
  while (true) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi, &running);
    if (mc != CURLM_OK) {
      local_error = Internal(std::string("curl_multi_perform: ") + curl_multi_strerror(mc));
      break;
    }
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
        result = msg->data.result;
        finished = true;
      }
    }
    if (finished || running == 0) break;
    if (req.cancel && req.cancel->cancelled()) {
      local_error = Error(Errc::kCancelled, req.method + " " + req.url + ": cancelled");
      break;
    }
    auto now = Clock::now();
    int wait_ms = 1000;
    if (req.stall_timeout.count() > 0) {
      uint64_t up = 0;
      curl_off_t sent = 0;
      if (curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &sent) == CURLE_OK && sent > 0) {
        up = static_cast<uint64_t>(sent);
      }
      uint64_t progress = t.wire_bytes + up;
      if (progress != last_bytes) {
        last_bytes = progress;
        last_progress = now;
      } else if (now - last_progress >= req.stall_timeout) {
        local_error = Unavailable(req.method + " " + req.url + ": transfer stalled (no data for " +
                                  std::to_string(req.stall_timeout.count()) + " ms)");
        break;
      }
      auto left = duration_cast<milliseconds>(req.stall_timeout - (now - last_progress)).count();
      wait_ms = static_cast<int>(std::clamp<int64_t>(left + 1, 1, wait_ms));
    }
    // curl shortens the wait to its own timers (overall timeout, connect timeout).
    mc = curl_multi_poll(multi, nullptr, 0, wait_ms, nullptr);
    if (mc != CURLM_OK) {
      local_error = Internal(std::string("curl_multi_poll: ") + curl_multi_strerror(mc));
      break;
    }
  }
  if (req.cancel) req.cancel->Unregister(waker);
  curl_multi_remove_handle(multi, easy);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);

  response.status = t.Status();
  std::optional<Error> error;
  if (local_error) {
    error = std::move(local_error);
  } else if (t.callback_error) {
    error = std::move(t.callback_error);
  } else if (t.too_large || result == CURLE_FILESIZE_EXCEEDED) {
    error = TooLarge(req.method + " " + req.url + ": response body exceeds " +
                     std::to_string(req.max_body_bytes) + " bytes");
  } else if (t.error_body_full && result == CURLE_WRITE_ERROR) {
    // We stopped reading a long error body on purpose; the status is what matters.
  } else if (result != CURLE_OK) {
    bool deadline_hit = req.deadline && Clock::now() + milliseconds(50) >= *req.deadline;
    error = MapCurlError(result, errbuf, req, deadline_hit);
  } else if (!buffered && response.ok()) {
    // An empty 2xx body never reached WriteCallback: run the headers hook now.
    if (Status s = t.HeadersReady(); !s.ok()) error = std::move(s).error();
  }
  ReturnSlot(std::move(slot));
  if (error) {
    IPFLY_LOG_DEBUG("http: {}", error->ToString());
    return std::move(*error);
  }
  return response;
}

// ---------------------------------------------------------------------------------------------
// Helpers

std::optional<std::chrono::milliseconds> ParseRetryAfter(std::string_view value) {
  value = Trim(value);
  if (value.empty()) return std::nullopt;
  if (std::isdigit(static_cast<unsigned char>(value.front()))) {
    uint64_t secs = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), secs);
    if (ec != std::errc() || p != value.data() + value.size()) return std::nullopt;
    secs = std::min<uint64_t>(secs, 24 * 3600);
    return milliseconds(secs * 1000);
  }
  GlobalInitOnce();
  std::string copy(value);
  time_t when = curl_getdate(copy.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  time_t now = std::time(nullptr);
  return milliseconds(when > now ? static_cast<int64_t>(when - now) * 1000 : 0);
}

Error HttpStatusError(const HttpResponse& r, std::string_view what) {
  std::string msg(what);
  msg += ": HTTP " + std::to_string(r.status);
  if (!r.body.empty()) {
    std::string_view body = r.body_text().substr(0, 200);
    std::string clean;
    for (char c : body) clean += (c == '\n' || c == '\r') ? ' ' : c;
    msg += ": ";
    msg += Trim(clean);
  }
  auto retry = [&](Error e) {
    if (auto ra = r.headers.Get("Retry-After")) {
      if (auto d = ParseRetryAfter(*ra)) return WithRetryAfter(std::move(e), *d);
    }
    return e;
  };
  switch (r.status) {
    case 404:
    case 410:
    case 451:
      return NotFound(std::move(msg));
    case 400:
    case 406:
    case 422:
      return InvalidArgument(std::move(msg));
    case 401:
    case 403:
      return Error(Errc::kPermissionDenied, std::move(msg));
    case 413:
      return TooLarge(std::move(msg));
    default:
      return retry(Unavailable(std::move(msg)));
  }
}

std::string UrlEscape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace ipfly::fetch
