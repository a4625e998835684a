// Retry-After hints carried inside an Error.
//
// Error has only (code, message), so a source that learns how long to wait (HTTP 429/502/503 with
// Retry-After) appends a machine-readable tag to the message: "... [retry-after-ms=1500]".
// Error::With() only prefixes context, so the tag survives wrapping. The fetcher reads it back with
// RetryAfterHint() and waits at least that long (bounded by its own deadline) before retrying the
// same source. Header-only so any module can use it without linking ipfly_fetch.
#pragma once

#include <charconv>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.h"

namespace ipfly::fetch {

inline constexpr std::string_view kRetryAfterTag = "[retry-after-ms=";

// Returns `e` with the hint appended to its message (same code).
inline Error WithRetryAfter(Error e, std::chrono::milliseconds delay) {
  std::string msg = e.message();
  msg += ' ';
  msg += kRetryAfterTag;
  msg += std::to_string(delay.count() < 0 ? 0 : delay.count());
  msg += ']';
  return Error(e.code(), std::move(msg));
}

// The hint carried by `e` (the last tag if several), or nullopt.
inline std::optional<std::chrono::milliseconds> RetryAfterHint(const Error& e) {
  const std::string& m = e.message();
  size_t pos = m.rfind(kRetryAfterTag);
  if (pos == std::string::npos) return std::nullopt;
  const char* begin = m.data() + pos + kRetryAfterTag.size();
  const char* end = m.data() + m.size();
  long long ms = 0;
  auto [p, ec] = std::from_chars(begin, end, ms);
  if (ec != std::errc() || p == end || *p != ']' || ms < 0) return std::nullopt;
  return std::chrono::milliseconds(ms);
}

}  // namespace ipfly::fetch
