// HttpClient: the libcurl wrapper used by every HTTP transport in ipfly (trustless gateways, Kubo
// RPC, and the registry's upstream client).
//
// Model:
//   - One HttpClient per process is enough (share it through std::shared_ptr). It is thread-safe:
//     any number of threads may call Fetch/Stream concurrently.
//   - Connection reuse: the client keeps a pool of idle transfer slots (an easy handle plus the
//     private multi handle that drives it). A slot's multi handle owns its connection cache, so a
//     keep-alive connection opened by one request is reused by the next request that takes the same
//     slot. DNS and TLS sessions are shared by all slots through a CURLSH with lock callbacks.
//     The connection cache itself is deliberately NOT put into the CURLSH: libcurl < 8.x is not
//     thread-safe when a shared connection cache is used from several threads (curl issue 4915).
//   - Only http:// and https:// URLs are allowed (CURLOPT_PROTOCOLS_STR); redirects are not
//     followed unless HttpRequest::follow_redirects is set (and then only to http/https).
//   - An HTTP error status (404, 500, ...) is NOT an error of Fetch/Stream: it is returned in
//     HttpResponse::status; callers decide what a status means for them (see HttpStatusError).
//
// Errors of Fetch/Stream (transport level):
//   kTimeout      the request deadline passed (CURLOPT_TIMEOUT_MS, connect timeout)
//   kUnavailable  connection refused/reset, DNS failure, peer closed mid-body (partial file),
//                 stalled transfer (no byte for stall_timeout), malformed HTTP reply
//   kTooLarge     the body exceeded max_body_bytes
//   kCancelled    the request's CancelToken fired
//   kInvalidArgument  a URL that is not http(s)
//   ErrnoError codes (kNotFound, kPermissionDenied, kIo)  a multipart file that cannot be opened
//   anything a body callback returned (it aborts the transfer and is passed through unchanged)
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::fetch {

// Case-insensitive, order-preserving list of header fields.
class HttpHeaders {
 public:
  void Add(std::string name, std::string value);
  // First value of `name` (case-insensitive), or nullopt.
  std::optional<std::string> Get(std::string_view name) const;
  std::vector<std::string> GetAll(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }
  void Clear() { fields_.clear(); }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// Cancels in-flight requests from another thread (hedging: the loser is aborted). Cancel() is
// thread-safe and wakes the transfers that use this token immediately; requests started after
// Cancel() fail at once with kCancelled. A token may be shared by any number of requests.
class CancelToken {
 public:
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

 private:
  friend class HttpClient;
  // Registers a wake-up function; returns an id for Unregister. If already cancelled, returns 0
  // without registering (the caller checks cancelled() after registering).
  uint64_t Register(std::function<void()> wake);
  void Unregister(uint64_t id);

  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::vector<std::pair<uint64_t, std::function<void()>>> wakers_;
};

// One part of a multipart/form-data body. Data comes from `file_path` if set (streamed from disk,
// never loaded whole), else from `data`.
struct MultipartPart {
  std::string name = "file";  // form field name
  std::string filename;       // Content-Disposition filename (empty: none)
  std::string content_type = "application/octet-stream";
  std::string file_path;             // read the part body from this file
  Bytes data;                        // or from memory
  std::vector<std::string> headers;  // extra part headers, "Name: value"
};

struct HttpRequest {
  using Clock = std::chrono::steady_clock;

  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  Bytes body;                        // request body (ignored when `parts` is not empty)
  std::vector<MultipartPart> parts;  // non-empty: multipart/form-data body

  // Absolute deadline for the whole exchange (connect + headers + body). nullopt: no overall
  // limit (stall and connect timeouts still apply).
  std::optional<Clock::time_point> deadline;
  std::chrono::milliseconds connect_timeout{10'000};
  // Abort when no byte arrives for this long (0 = off). Trustless gateway spec suggests 30 s.
  std::chrono::milliseconds stall_timeout{30'000};
  // Response body cap (bytes); kTooLarge beyond it. 0 = unlimited (streamed requests only; Fetch
  // always applies a cap, 64 MiB when 0).
  uint64_t max_body_bytes = 0;
  bool follow_redirects = false;
  std::shared_ptr<CancelToken> cancel;  // optional
};

struct HttpResponse {
  long status = 0;       // NOLINT(runtime/int): curl's type
  HttpHeaders headers;   // headers of the final response (1xx interim responses are dropped)
  HttpHeaders trailers;  // HTTP/1.1 chunked trailers (e.g. Kubo's X-Stream-Error)
  // Fetch: the whole body. Stream: for non-2xx responses only, the first 64 KiB of the error body
  // (2xx bodies go to the callback and are not kept).
  Bytes body;
  uint64_t body_bytes = 0;  // body bytes received (all of them, also when streamed)
  bool ok() const { return status >= 200 && status < 300; }
  std::string_view body_text() const { return AsString(body); }
};

// Called with each piece of a 2xx response body; a non-OK status aborts the transfer and becomes
// the result of Stream.
using HttpBodyFn = std::function<Status(ByteView)>;
// Called once, before the first byte of a 2xx body reaches HttpBodyFn (and also for an empty 2xx
// body), with status and headers filled in. Returning an error aborts the transfer (e.g. wrong
// Content-Type).
using HttpHeadersFn = std::function<Status(const HttpResponse&)>;

class HttpClient {
 public:
  struct Options {
    size_t max_idle_slots = 32;  // idle transfer slots (and their connections) kept for reuse
    std::string user_agent = "ipfly/0.1";
    bool verbose = false;  // CURLOPT_VERBOSE to stderr (debugging)
  };

  HttpClient();
  explicit HttpClient(Options options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Performs the request and buffers the body (capped by max_body_bytes, 64 MiB if 0).
  Result<HttpResponse> Fetch(const HttpRequest& request);

  // Performs the request and hands a 2xx body to `on_body` piece by piece. Non-2xx bodies are
  // buffered (first 64 KiB) in the response instead. Trailers are in the returned response.
  Result<HttpResponse> Stream(const HttpRequest& request, const HttpBodyFn& on_body,
                              const HttpHeadersFn& on_headers = nullptr);

  // A process-wide default client (created on first use, never destroyed before exit).
  static std::shared_ptr<HttpClient> Default();

 private:
  struct Slot;
  struct Shared;
  std::unique_ptr<Slot> TakeSlot();
  void ReturnSlot(std::unique_ptr<Slot> slot);

  Options options_;
  std::unique_ptr<Shared> shared_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Slot>> idle_;
};

// Parses a Retry-After value (delta-seconds or an HTTP-date) into a delay from now (>= 0).
std::optional<std::chrono::milliseconds> ParseRetryAfter(std::string_view value);

// Maps an HTTP error status to an Error (the generic mapping; sources may refine it):
//   404, 410, 451 → kNotFound; 429, 5xx, 408 → kUnavailable (with the Retry-After hint of
//   retry_hint.h when the header is present); 400, 406, 422 → kInvalidArgument; 401, 403 →
//   kPermissionDenied; 413 → kTooLarge; anything else → kUnavailable.
// `what` names the request for the message, e.g. "gateway http://x GET /ipfs/bafy...".
// The message includes up to 200 bytes of the error body.
Error HttpStatusError(const HttpResponse& response, std::string_view what);

// Escapes a string for use as a URL query value (RFC 3986 unreserved kept).
std::string UrlEscape(std::string_view s);

}  // namespace ipfly::fetch
