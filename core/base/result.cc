#include "core/base/result.h"

#include <cstring>

namespace ipfly {

std::string_view ErrcName(Errc c) {
  switch (c) {
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kCorrupt:
      return "corrupt data";
    case Errc::kUnsupported:
      return "unsupported";
    case Errc::kNotFound:
      return "not found";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kTooLarge:
      return "too large";
    case Errc::kIo:
      return "i/o error";
    case Errc::kAlreadyExists:
      return "already exists";
    case Errc::kPermissionDenied:
      return "permission denied";
    case Errc::kCancelled:
      return "cancelled";
    case Errc::kFailedPrecondition:
      return "failed precondition";
    case Errc::kUnimplemented:
      return "unimplemented";
    case Errc::kInternal:
      return "internal error";
  }
  return "unknown error";
}

std::string Error::ToString() const {
  std::string s(ErrcName(code_));
  s += ": ";
  s += message_;
  return s;
}

Error Error::With(std::string_view context) const& {
  return Error(code_, std::string(context) + ": " + message_);
}

Error Error::With(std::string_view context) && {
  message_.insert(0, std::string(context) + ": ");
  return std::move(*this);
}

Error ErrnoError(std::string_view what, int err) {
  Errc code = Errc::kIo;
  if (err == ENOENT) code = Errc::kNotFound;
  if (err == EEXIST) code = Errc::kAlreadyExists;
  if (err == EACCES || err == EPERM) code = Errc::kPermissionDenied;
  return Error(code, std::string(what) + ": " + std::strerror(err));
}

}  // namespace ipfly
