// Helpers shared by the core unit tests.
#pragma once

#include <gtest/gtest.h>

#include <string_view>

#include "core/base/bytes.h"

namespace ipfly {

// Decodes a hex test vector (HexDecode syntax); a malformed vector fails the test.
inline Bytes Hex(std::string_view h) {
  Bytes b;
  EXPECT_TRUE(HexDecode(h, &b)) << h;
  return b;
}

// A malformed encoding (hex) and why a strict decoder must reject it.
struct BadHex {
  const char* hex;
  const char* why;
};

}  // namespace ipfly
