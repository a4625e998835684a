#include "core/base/digest.h"

namespace ipfly {

Result<Digest> Digest::Parse(std::string_view s) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument("digest '" + std::string(s) + "' has no algorithm prefix");
  }
  std::string_view alg = s.substr(0, colon), hex = s.substr(colon + 1);
  size_t want = 0;
  if (alg == "sha256")
    want = 64;
  else if (alg == "sha512")
    want = 128;
  else
    return Unsupported("digest algorithm '" + std::string(alg) + "' is not supported");
  if (hex.size() != want) {
    return InvalidArgument("digest '" + std::string(s) + "': expected " + std::to_string(want) +
                           " hex characters, got " + std::to_string(hex.size()));
  }
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return InvalidArgument("digest '" + std::string(s) + "': not lower-case hex");
    }
  }
  return Digest(std::string(alg), std::string(hex));
}

Digest Digest::FromSha256(const Sha256Hash& h) {
  return Digest("sha256", HexEncode(ByteView(h.data(), h.size())));
}

}  // namespace ipfly
