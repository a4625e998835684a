// Result<T>: the error type used everywhere inside ipfly.
//
// A Result holds either a value or an Error (code + human-readable message). Errors are converted
// to errno / grpc::Status / exit codes only at the process boundaries (see DESIGN.md). No function
// in the tree throws across a module boundary; third-party exceptions are caught where they arise.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace ipfly {

// Error categories. Callers branch on these; the message is for humans.
enum class Errc {
  kInvalidArgument,  // malformed input from the caller (bad CID string, bad flag value)
  kCorrupt,      // bytes failed verification or a parser rejected them (hash mismatch, bad dag-pb)
  kUnsupported,  // well-formed but not supported (unknown codec, hash function, format)
  kNotFound,     // the object does not exist in this source/store
  kTimeout,      // a deadline passed
  kUnavailable,  // transient transport failure (connection refused/reset, 429, 5xx); retryable
  kTooLarge,     // a size limit was exceeded (block > 2 MiB, upload cap)
  kIo,           // local file-system error
  kAlreadyExists,
  kPermissionDenied,
  kCancelled,
  kFailedPrecondition,  // the operation is not valid in the current state (snapshot not committed)
  kUnimplemented,       // the operation or feature is not available in this build/configuration
  kInternal,            // a bug or an unexpected state
};

std::string_view ErrcName(Errc c);

class [[nodiscard]] Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  Errc code() const { return code_; }
  const std::string& message() const { return message_; }
  // "<errc name>: <message>"
  std::string ToString() const;
  // Returns a copy whose message is prefixed with `context + ": "`.
  Error With(std::string_view context) const&;
  Error With(std::string_view context) &&;

 private:
  Errc code_;
  std::string message_;
};

// Convenience constructors.
inline Error InvalidArgument(std::string m) { return {Errc::kInvalidArgument, std::move(m)}; }
inline Error Corrupt(std::string m) { return {Errc::kCorrupt, std::move(m)}; }
inline Error Unsupported(std::string m) { return {Errc::kUnsupported, std::move(m)}; }
inline Error NotFound(std::string m) { return {Errc::kNotFound, std::move(m)}; }
inline Error Timeout(std::string m) { return {Errc::kTimeout, std::move(m)}; }
inline Error Unavailable(std::string m) { return {Errc::kUnavailable, std::move(m)}; }
inline Error TooLarge(std::string m) { return {Errc::kTooLarge, std::move(m)}; }
inline Error IoError(std::string m) { return {Errc::kIo, std::move(m)}; }
inline Error Internal(std::string m) { return {Errc::kInternal, std::move(m)}; }
// An I/O error with strerror(err) appended: "<what>: <strerror>".
Error ErrnoError(std::string_view what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const& {
    assert(!ok());
    return std::get<1>(v_);
  }
  Error&& error() && {
    assert(!ok());
    return std::get<1>(std::move(v_));
  }

  T value_or(T other) const& { return ok() ? value() : std::move(other); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : e_(std::move(error)), ok_(false) {}  // NOLINT: implicit
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const { assert(ok_); }
  const Error& error() const& {
    assert(!ok_);
    return e_;
  }
  Error&& error() && {
    assert(!ok_);
    return std::move(e_);
  }

 private:
  Error e_{Errc::kInternal, ""};
  bool ok_ = true;
};

using Status = Result<void>;
inline Status OkStatus() { return {}; }

}  // namespace ipfly

// IPFLY_TRY(expr): evaluates a Result; on error returns the error from the enclosing function,
// otherwise yields the value (GNU statement expression; gcc and clang support it).
#define IPFLY_TRY(expr)                                             \
  ({                                                                \
    auto&& ipfly_try_r_ = (expr);                                   \
    if (!ipfly_try_r_.ok()) return std::move(ipfly_try_r_).error(); \
    std::move(ipfly_try_r_).value();                                \
  })

// IPFLY_CHECK_OK(expr): like IPFLY_TRY for Result<void>/Status, as a statement.
#define IPFLY_RETURN_IF_ERROR(expr)                                 \
  do {                                                              \
    auto&& ipfly_rie_r_ = (expr);                                   \
    if (!ipfly_rie_r_.ok()) return std::move(ipfly_rie_r_).error(); \
  } while (0)
