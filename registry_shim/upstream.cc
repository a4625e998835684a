#include "registry_shim/upstream.h"

#include <strings.h>

#include <nlohmann/json.hpp>

#include "core/base/log.h"

namespace ipfly::registry {
namespace {

std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string Base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += {kAlphabet[(v >> 18) & 63], kAlphabet[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += {kAlphabet[(v >> 18) & 63], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
  }
  return out;
}

// Parses `Scheme k1="v1",k2="v2"` into the scheme and its parameters.
std::map<std::string, std::string> ParseChallenge(const std::string& h, std::string* scheme) {
  std::map<std::string, std::string> out;
  size_t sp = h.find(' ');
  *scheme = h.substr(0, sp);
  if (sp == std::string::npos) return out;
  size_t i = sp + 1;
  while (i < h.size()) {
    while (i < h.size() && (h[i] == ' ' || h[i] == ',')) ++i;
    size_t eq = h.find('=', i);
    if (eq == std::string::npos) break;
    std::string key = h.substr(i, eq - i);
    i = eq + 1;
    std::string value;
    if (i < h.size() && h[i] == '"') {
      ++i;
      while (i < h.size() && h[i] != '"') {
        if (h[i] == '\\' && i + 1 < h.size()) ++i;
        value.push_back(h[i++]);
      }
      ++i;
    } else {
      size_t end = h.find(',', i);
      value = h.substr(i, end == std::string::npos ? std::string::npos : end - i);
      i = end == std::string::npos ? h.size() : end;
    }
    out[key] = value;
  }
  return out;
}

// Splits "scheme://host[:port]/path?query" into "scheme://host[:port]" and "/path?query".
void SplitUrl(const std::string& url, std::string* origin, std::string* path) {
  size_t scheme_end = url.find("://");
  size_t slash = url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
  *origin = url.substr(0, slash);
  *path = slash == std::string::npos ? "/" : url.substr(slash);
}

}  // namespace

std::string UpstreamResponse::Header(const std::string& key) const {
  for (const auto& [k, v] : headers) {
    if (strcasecmp(k.c_str(), key.c_str()) == 0) return v;
  }
  return "";
}

UpstreamClient::UpstreamClient(std::string base_url, std::string username, std::string password)
    : base_(std::move(base_url)), username_(std::move(username)), password_(std::move(password)) {
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
  docker_hub_ = base_.find("registry-1.docker.io") != std::string::npos ||
                base_.find("://docker.io") != std::string::npos ||
                base_.find("index.docker.io") != std::string::npos;
}

std::string UpstreamClient::UpstreamName(const std::string& name) const {
  if (docker_hub_ && name.find('/') == std::string::npos) return "library/" + name;
  return name;
}

std::unique_ptr<httplib::Client> UpstreamClient::NewClient(
    const std::string& scheme_host_port) const {
  auto c = std::make_unique<httplib::Client>(scheme_host_port);
  c->set_connection_timeout(10, 0);
  c->set_read_timeout(60, 0);
  c->set_write_timeout(60, 0);
  c->set_follow_location(true);
  return c;
}

void UpstreamClient::AddAuth(const std::string& repo, httplib::Headers* headers) {
  std::lock_guard lock(mu_);
  auto it = tokens_.find(repo);
  if (it != tokens_.end() && it->second.expiry > std::chrono::steady_clock::now()) {
    headers->emplace("Authorization", "Bearer " + it->second.value);
    return;
  }
  if (basic_.count(repo) && !username_.empty()) {
    headers->emplace("Authorization", "Basic " + Base64(username_ + ":" + password_));
  }
}

bool UpstreamClient::Authenticate(const std::string& repo, const std::string& challenge) {
  std::string scheme;
  auto params = ParseChallenge(challenge, &scheme);
  if (strcasecmp(scheme.c_str(), "Basic") == 0) {
    if (username_.empty()) return false;
    std::lock_guard lock(mu_);
    if (basic_.count(repo)) return false;  // already tried
    basic_[repo] = true;
    return true;
  }
  if (strcasecmp(scheme.c_str(), "Bearer") != 0 || params["realm"].empty()) return false;
  std::string scope = params.count("scope") ? params["scope"] : "repository:" + repo + ":pull";
  std::string url = params["realm"];
  url += url.find('?') == std::string::npos ? "?" : "&";
  url += "service=" + UrlEncode(params["service"]) + "&scope=" + UrlEncode(scope);
  std::string origin, path;
  SplitUrl(url, &origin, &path);
  auto client = NewClient(origin);
  if (!username_.empty()) client->set_basic_auth(username_, password_);
  auto r = client->Get(path);
  if (!r || r->status != 200) {
    IPFLY_LOG_WARN("upstream token from {} failed: {}", origin,
                   r ? std::to_string(r->status) : httplib::to_string(r.error()));
    return false;
  }
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  std::string token = j.value("token", "");
  if (token.empty()) token = j.value("access_token", "");
  if (token.empty()) return false;
  int expires = j.value("expires_in", 60);
  std::lock_guard lock(mu_);
  tokens_[repo] = {
      token, std::chrono::steady_clock::now() + std::chrono::seconds(std::max(expires - 10, 10))};
  return true;
}

Result<UpstreamResponse> UpstreamClient::Fetch(const std::string& method, const std::string& repo,
                                               const std::string& path,
                                               const httplib::Headers& headers, size_t max_body) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    httplib::Headers h = headers;
    AddAuth(repo, &h);
    auto client = NewClient(base_);
    httplib::Result r = method == "HEAD" ? client->Head(path, h) : client->Get(path, h);
    if (!r) {
      return Unavailable("upstream " + base_ + " unreachable: " + httplib::to_string(r.error()));
    }
    if (r->status == 401 && attempt == 0 &&
        Authenticate(repo, r->get_header_value("WWW-Authenticate"))) {
      continue;
    }
    if (r->body.size() > max_body) return TooLarge("upstream answer too large");
    UpstreamResponse out;
    out.status = r->status;
    out.headers = r->headers;
    out.body = std::move(r->body);
    return out;
  }
  return Internal("unreachable");
}

Result<UpstreamResponse> UpstreamClient::Stream(
    const std::string& repo, const std::string& path, const httplib::Headers& headers,
    const std::function<bool(const char*, size_t)>& on_data) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    httplib::Headers h = headers;
    AddAuth(repo, &h);
    auto client = NewClient(base_);
    UpstreamResponse out;
    bool data_failed = false;
    auto r = client->Get(
        path, h,
        [&](const httplib::Response& resp) {
          out.status = resp.status;
          out.headers = resp.headers;
          return resp.status == 200;
        },
        [&](const char* data, size_t len) {
          if (!on_data(data, len)) {
            data_failed = true;
            return false;
          }
          return true;
        });
    if (out.status == 401 && attempt == 0) {
      std::string challenge;
      for (const auto& [k, v] : out.headers) {
        if (strcasecmp(k.c_str(), "WWW-Authenticate") == 0) challenge = v;
      }
      if (Authenticate(repo, challenge)) continue;
    }
    if (out.status != 0 && out.status != 200) return out;
    if (data_failed) return Error(Errc::kCancelled, "stream consumer stopped");
    if (!r) {
      return Unavailable("upstream " + base_ +
                         " transfer failed: " + httplib::to_string(r.error()));
    }
    return out;
  }
  return Internal("unreachable");
}

}  // namespace ipfly::registry
