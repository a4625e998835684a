// Distribution-spec validation of repository names, tags and digests, and the spec error codes.
#pragma once

#include <string>
#include <string_view>

namespace ipfly::registry {

// <name>: path components [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* joined by '/', at most 255 chars.
bool ValidRepoName(std::string_view name);
// <reference> as a tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
bool ValidTag(std::string_view tag);
// "sha256:<64 lower-case hex>" (the only algorithm this registry computes).
bool ValidSha256Digest(std::string_view digest);
// Any "<alg>:<encoded>" shape the spec grammar admits (used to tell a digest from a tag).
bool LooksLikeDigest(std::string_view ref);

}  // namespace ipfly::registry
