#include "ipfs_fetch/gateway_source.h"

#include <strings.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "core/base/log.h"
#include "core/codec/car.h"
#include "ipfs_fetch/retry_hint.h"

namespace ipfly::fetch {
namespace {

constexpr char kRawType[] = "application/vnd.ipld.raw";
constexpr char kCarType[] = "application/vnd.ipld.car";
constexpr char kCarAccept[] = "application/vnd.ipld.car; version=1; order=dfs; dups=y";

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

std::string RangeParam(EntityRange r) {
  std::string to = r.to == EntityRange::kToEnd ? "*" : std::to_string(r.to);
  return std::to_string(r.from) + ":" + to;
}

int Rank(Errc c) {
  switch (c) {
    case Errc::kUnavailable:
      return 0;
    case Errc::kTimeout:
      return 1;
    case Errc::kCorrupt:
      return 2;
    case Errc::kTooLarge:
      return 3;
    case Errc::kCancelled:
      return 5;
    case Errc::kNotFound:
      return 6;
    default:
      return 4;
  }
}

}  // namespace

GatewayOptions GatewayOptions::FromConfig(const FetchConfig& config) {
  GatewayOptions o;
  o.stall_timeout = std::chrono::milliseconds(config.stall_timeout_ms);
  return o;
}

GatewaySource::GatewaySource(std::string base_url, std::shared_ptr<HttpClient> http,
                             GatewayOptions options)
    : base_url_(std::move(base_url)),
      http_(http ? std::move(http) : HttpClient::Default()),
      options_(options) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
}

Error GatewaySource::StatusError(const HttpResponse& r, const std::string& what) const {
  Error e = HttpStatusError(r, name() + ": " + what);
  switch (r.status) {
    case 412:  // only-if-cached miss: this gateway does not have it locally
      return NotFound(e.message());
    case 406:
    case 501:
      return Unsupported(e.message());
    default:
      return e;
  }
}

Result<Block> GatewaySource::Get(const mf::Cid& cid, Deadline deadline) {
  return Get(cid, deadline, nullptr);
}

Result<Block> GatewaySource::Get(const mf::Cid& cid, Deadline deadline,
                                 std::shared_ptr<CancelToken> cancel) {
  if (cid.is_identity()) {
    // Identity blocks are their own digest; no gateway is asked (the spec says none sends them).
    return Block::Verify(cid, cid.multihash().digest());
  }
  const std::string cid_str = cid.ToString();
  HttpRequest req;
  req.url = base_url_ + "/ipfs/" + cid_str + "?format=raw";
  req.headers = {{"Accept", kRawType}};
  req.deadline = deadline;
  req.connect_timeout = options_.connect_timeout;
  req.stall_timeout = options_.stall_timeout;
  req.max_body_bytes = kMaxBlockSize;
  req.cancel = std::move(cancel);
  auto resp = http_->Fetch(req);
  if (!resp.ok()) {
    Error e = std::move(resp).error();
    if (e.code() == Errc::kTooLarge) {
      return TooLarge(name() + ": block " + cid_str + " is larger than 2 MiB");
    }
    return e.With(name());
  }
  if (resp->status != 200) return StatusError(*resp, "GET raw " + cid_str);
  auto block = Block::Verify(cid, std::move(resp->body));
  if (!block.ok()) {
    std::string msg = name() + " sent bad bytes for " + cid_str;
    auto ct = resp->headers.Get("Content-Type");
    if (ct && !StartsWithNoCase(*ct, kRawType)) {
      msg += " (Content-Type " + *ct + ": the gateway may not support format=raw)";
    }
    return block.error().With(msg);
  }
  return block;
}

Status GatewaySource::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                                const std::function<Status(const Block&)>& on_block) {
  return StreamDag(root, range, deadline, on_block, nullptr);
}

Status GatewaySource::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                                const std::function<Status(const Block&)>& on_block,
                                std::shared_ptr<CancelToken> cancel) {
  const std::string root_str = root.ToString();
  HttpRequest req;
  req.url = base_url_ + "/ipfs/" + root_str + "?format=car&dag-scope=entity";
  if (!range.whole()) req.url += "&entity-bytes=" + RangeParam(range);
  req.headers = {{"Accept", kCarAccept}};
  req.deadline = deadline;
  req.connect_timeout = options_.connect_timeout;
  req.stall_timeout = options_.stall_timeout;
  req.cancel = std::move(cancel);

  // Errors raised inside the parser's block callback. They are returned as they are (a
  // verification failure must stay kCorrupt, not become a transport error).
  uint64_t delivered = 0;
  codec::CarParser parser(
      [](const codec::CarHeader&) { return OkStatus(); },  // roots are ignored (spec)
      [&](mf::Cid cid, Bytes data) -> Status {
        auto block = Block::Verify(cid, std::move(data));
        if (!block.ok()) {
          return block.error().With(name() + " sent bad bytes in the CAR for " + root_str);
        }
        IPFLY_RETURN_IF_ERROR(on_block(*block));
        ++delivered;
        return OkStatus();
      });
  auto check_type = [&](const HttpResponse& r) -> Status {
    auto ct = r.headers.Get("Content-Type");
    if (!ct || !StartsWithNoCase(*ct, kCarType)) {
      return Unsupported(name() + ": CAR request for " + root_str + " answered with Content-Type " +
                         ct.value_or("(none)"));
    }
    return OkStatus();
  };
  auto resp = http_->Stream(
      req, [&](ByteView chunk) { return parser.Feed(chunk); }, check_type);
  if (!resp.ok()) {
    Error e = std::move(resp).error();
    // Parser and callback errors already name the gateway; transport errors do not.
    if (e.message().find(base_url_) == std::string::npos) e = std::move(e).With(name());
    if (delivered > 0) {
      IPFLY_LOG_DEBUG("{}: CAR for {} ended after {} blocks: {}", name(), root_str, delivered,
                      e.ToString());
    }
    return e;
  }
  if (resp->status != 200) {
    return StatusError(*resp, "GET car " + root_str + " entity-bytes=" + RangeParam(range));
  }
  if (Status s = parser.Finish(); !s.ok()) {
    return std::move(s).error().With(name() + ": CAR for " + root_str);
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------
// MultiGatewaySource

Error CombineSourceErrors(const std::vector<Error>& errors, std::string_view what) {
  if (errors.empty()) return NotFound(std::string(what) + ": no sources configured");
  const Error* best = &errors.front();
  for (const Error& e : errors) {
    if (Rank(e.code()) < Rank(best->code())) best = &e;
  }
  std::string msg(what);
  msg += ": ";
  for (size_t i = 0; i < errors.size(); ++i) {
    if (i > 0) msg += "; ";
    msg += errors[i].message();
  }
  Error out(best->code(), std::move(msg));
  // Keep the best error's retry hint last, so RetryAfterHint() picks it.
  if (auto hint = RetryAfterHint(*best)) out = WithRetryAfter(std::move(out), *hint);
  return out;
}

MultiGatewaySource::MultiGatewaySource(std::vector<std::shared_ptr<GatewaySource>> gateways,
                                       std::chrono::milliseconds hedge)
    : gateways_(std::move(gateways)), hedge_(hedge) {}

std::unique_ptr<MultiGatewaySource> MultiGatewaySource::FromConfig(
    const std::vector<SourceSpec>& sources, const FetchConfig& config,
    std::shared_ptr<HttpClient> http) {
  std::vector<std::shared_ptr<GatewaySource>> gws;
  for (const auto& s : sources) {
    if (s.kind != SourceSpec::Kind::kGateway) continue;
    gws.push_back(std::make_shared<GatewaySource>(s.url, http, GatewayOptions::FromConfig(config)));
  }
  return std::make_unique<MultiGatewaySource>(std::move(gws),
                                              std::chrono::milliseconds(config.hedge_ms));
}

std::string MultiGatewaySource::name() const {
  std::string out = "gateways [";
  for (size_t i = 0; i < gateways_.size(); ++i) {
    if (i > 0) out += ", ";
    out += gateways_[i]->base_url();
  }
  return out + "]";
}

Result<Block> MultiGatewaySource::Get(const mf::Cid& cid, Deadline deadline) {
  if (hedge_.count() > 0 && gateways_.size() > 1) return GetHedged(cid, deadline);
  std::vector<Error> errors;
  for (const auto& gw : gateways_) {
    auto r = gw->Get(cid, deadline);
    if (r.ok()) return r;
    errors.push_back(std::move(r).error());
    if (Clock::now() >= deadline) break;
  }
  return CombineSourceErrors(errors, "get " + cid.ToString());
}

Result<Block> MultiGatewaySource::GetHedged(const mf::Cid& cid, Deadline deadline) {
  struct Race {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Block> winner;
    std::vector<std::optional<Error>> errors;
    size_t running = 0;
  };
  auto race = std::make_shared<Race>();
  race->errors.resize(gateways_.size());
  auto cancel = std::make_shared<CancelToken>();
  std::vector<std::thread> threads;
  threads.reserve(gateways_.size());
  size_t next = 0;
  Clock::time_point last_start;

  // Called with race->mu held.
  auto launch = [&] {
    size_t i = next++;
    ++race->running;
    last_start = Clock::now();
    std::shared_ptr<GatewaySource> gw = gateways_[i];
    threads.emplace_back([race, gw, i, cid, deadline, cancel] {
      auto r = gw->Get(cid, deadline, cancel);
      std::lock_guard lock(race->mu);
      if (r.ok()) {
        if (!race->winner) race->winner = std::move(r).value();
      } else {
        race->errors[i] = std::move(r).error();
      }
      --race->running;
      race->cv.notify_all();
    });
  };

  {
    std::unique_lock lock(race->mu);
    launch();
    while (!race->winner) {
      if (race->running == 0) {
        if (next == gateways_.size()) break;  // everyone failed
        launch();  // the running ones failed before the hedge delay: fail over now
        continue;
      }
      if (next < gateways_.size()) {
        auto hedge_at = std::min(last_start + hedge_, deadline);
        if (!race->cv.wait_until(lock, hedge_at,
                                 [&] { return race->winner || race->running == 0; })) {
          if (Clock::now() >= deadline) break;
          IPFLY_LOG_DEBUG("hedging {} on {}", cid.ToString(), gateways_[next]->name());
          launch();
        }
      } else {
        // Every gateway has been started; the requests end by themselves at the deadline.
        race->cv.wait(lock, [&] { return race->winner || race->running == 0; });
      }
    }
  }
  // Abort the losers (or everyone, on timeout) and join: no thread outlives this call.
  cancel->Cancel();
  for (auto& t : threads) t.join();

  std::lock_guard lock(race->mu);
  if (race->winner) return std::move(*race->winner);
  std::vector<Error> errors;
  for (auto& e : race->errors) {
    if (e) errors.push_back(std::move(*e));
  }
  if (Clock::now() >= deadline && errors.size() < gateways_.size()) {
    errors.push_back(Timeout("deadline passed"));
  }
  return CombineSourceErrors(errors, "get " + cid.ToString());
}

Status MultiGatewaySource::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                                     const std::function<Status(const Block&)>& on_block) {
  std::vector<Error> errors;
  for (const auto& gw : gateways_) {
    uint64_t delivered = 0;
    Status s = gw->StreamDag(root, range, deadline, [&](const Block& b) {
      ++delivered;
      return on_block(b);
    });
    if (s.ok()) return s;
    if (delivered > 0) return s;  // partial delivery: the caller fills the gaps with Get
    errors.push_back(std::move(s).error());
    if (Clock::now() >= deadline) break;
  }
  return CombineSourceErrors(errors, "stream " + root.ToString());
}

}  // namespace ipfly::fetch
