// OCI content digest: "<algorithm>:<hex>" (OCI image-spec descriptor.md). Only sha256 is accepted
// (sha512 parses but is reported unsupported by callers that must compute it).
#pragma once

#include <string>
#include <string_view>

#include "core/base/result.h"
#include "core/base/sha256.h"

namespace ipfly {

class Digest {
 public:
  // Parses "sha256:<64 lower-case hex>" or "sha512:<128 lower-case hex>". Upper-case hex and
  // other algorithms are rejected, as the OCI spec requires for registered algorithms.
  static Result<Digest> Parse(std::string_view s);
  static Digest FromSha256(const Sha256Hash& h);

  const std::string& algorithm() const { return algorithm_; }
  const std::string& hex() const { return hex_; }
  std::string ToString() const { return algorithm_ + ":" + hex_; }
  bool operator==(const Digest&) const = default;

 private:
  Digest(std::string alg, std::string hex) : algorithm_(std::move(alg)), hex_(std::move(hex)) {}
  std::string algorithm_;
  std::string hex_;
};

}  // namespace ipfly
