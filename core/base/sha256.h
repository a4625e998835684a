// SHA-256 through OpenSSL's EVP interface (uses SHA-NI / AVX2 where the CPU has them).
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "core/base/bytes.h"

namespace ipfly {

using Sha256Hash = std::array<uint8_t, 32>;

// Incremental hasher. Not thread-safe; cheap to move.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(ByteView data);
  // Returns the digest and resets the hasher for reuse.
  Sha256Hash Final();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

Sha256Hash Sha256Of(ByteView data);

}  // namespace ipfly
