// UpstreamClient: the pull-through mirror's HTTP client for an upstream v2 registry.
//
// Auth: anonymous first; on 401 it reads WWW-Authenticate: a Bearer challenge makes it fetch a
// token from the realm (service and scope from the challenge, default scope
// "repository:<name>:pull"; Basic credentials from config when set), cache it per scope until
// shortly before expires_in, and retry once; a Basic challenge retries with the configured
// credentials. Credentials and tokens never appear in logs or errors.
//
// Thread-safe (the token cache has a mutex; every call uses its own connection).
#pragma once

#include <httplib.h>

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "core/base/result.h"

namespace ipfly::registry {

struct UpstreamResponse {
  int status = 0;
  httplib::Headers headers;
  std::string body;
  std::string Header(const std::string& key) const;
};

class UpstreamClient {
 public:
  // `base_url`: "http(s)://host[:port]" (a trailing slash is ignored).
  UpstreamClient(std::string base_url, std::string username, std::string password);

  // The repository name upstream: Docker Hub wants "library/<name>" for one-component names.
  std::string UpstreamName(const std::string& name) const;
  const std::string& base_url() const { return base_; }

  // GET or HEAD of `path` (e.g. "/v2/<name>/manifests/<ref>") with auth for `repo`; the body is
  // read up to `max_body` bytes (kTooLarge beyond). kUnavailable when the upstream cannot be
  // reached.
  Result<UpstreamResponse> Fetch(const std::string& method, const std::string& repo,
                                 const std::string& path, const httplib::Headers& headers,
                                 size_t max_body);
  // GET streaming a 200 body to `on_data` (false from it aborts: kCancelled). Non-200 answers
  // are returned without their body.
  Result<UpstreamResponse> Stream(const std::string& repo, const std::string& path,
                                  const httplib::Headers& headers,
                                  const std::function<bool(const char*, size_t)>& on_data);

 private:
  std::unique_ptr<httplib::Client> NewClient(const std::string& scheme_host_port) const;
  // Adds the cached Authorization for `repo` (if any) to `headers`.
  void AddAuth(const std::string& repo, httplib::Headers* headers);
  // Handles a 401 challenge; true if a retry makes sense.
  bool Authenticate(const std::string& repo, const std::string& challenge);

  std::string base_;
  std::string username_, password_;
  bool docker_hub_ = false;

  std::mutex mu_;
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expiry;
  };
  std::map<std::string, Token> tokens_;  // by repo
  std::map<std::string, bool> basic_;    // repos whose upstream asked for Basic auth
};

}  // namespace ipfly::registry
