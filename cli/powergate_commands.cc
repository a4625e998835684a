#include "cli/powergate_commands.h"

#include <fcntl.h>
#include <httplib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/powergate/client.h"
#include "ipfs_fetch/powergate/cold_source.h"

namespace ipfly::cli {
namespace {

namespace pg = fetch::powergate;
using json = nlohmann::json;
using std::chrono::milliseconds;

struct PgEnv {
  std::unique_ptr<Env> env;
  std::shared_ptr<pg::Client> client;
  std::string state_dir;
};

Result<PgEnv> MakePgEnv(const GlobalOptions& g) {
  PgEnv p;
  p.env = IPFLY_TRY(Env::Make(g));
  const Config& c = p.env->config();
  if (c.powergate.address.empty()) {
    return InvalidArgument("[powergate] address is not set in the config (--config FILE)");
  }
  p.client = IPFLY_TRY(pg::Client::FromConfig(c.powergate));
  if (!p.client->has_token()) {
    return InvalidArgument("no Powergate token: set [powergate] token or $" +
                           c.powergate.token_env);
  }
  p.state_dir = fetch::PowergateStateDirOf(c);
  return p;
}

// <state_dir>/archive.json: the archive jobs started from this machine.
struct ArchiveRecord {
  std::string cid, job_id;
  int64_t started_unix = 0;
};

std::vector<ArchiveRecord> LoadArchives(const std::string& state_dir) {
  std::vector<ArchiveRecord> out;
  std::ifstream in(state_dir + "/archive.json", std::ios::binary);
  if (!in) return out;
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = json::parse(ss.str(), nullptr, false);
  if (!doc.is_object() || !doc["archives"].is_array()) return out;
  for (const auto& a : doc["archives"]) {
    if (!a.is_object()) continue;
    out.push_back({a.value("cid", std::string()), a.value("job_id", std::string()),
                   a.value("started_unix", int64_t{0})});
  }
  return out;
}

Status SaveArchives(const std::string& state_dir, const std::vector<ArchiveRecord>& recs) {
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) return IoError("create " + state_dir + ": " + ec.message());
  json doc;
  doc["archives"] = json::array();
  for (const auto& r : recs) {
    doc["archives"].push_back(
        {{"cid", r.cid}, {"job_id", r.job_id}, {"started_unix", r.started_unix}});
  }
  const std::string path = state_dir + "/archive.json", tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("create " + tmp, errno);
  std::string text = doc.dump(1) + "\n";
  Status st = WriteAll(fd, AsBytes(text));
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("fsync " + tmp, errno);
  ::close(fd);
  if (!st.ok()) return st;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename " + tmp, errno);
  return OkStatus();
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "REPO:TAG" / "REPO@DIGEST" → (repo, reference).
Result<std::pair<std::string, std::string>> SplitImageRef(const std::string& ref) {
  size_t at = ref.find('@');
  if (at != std::string::npos) return std::make_pair(ref.substr(0, at), ref.substr(at + 1));
  size_t colon = ref.rfind(':'), slash = ref.rfind('/');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) {
    return std::make_pair(ref, std::string("latest"));
  }
  if (colon == 0 || colon + 1 == ref.size()) return InvalidArgument("bad image reference " + ref);
  return std::make_pair(ref.substr(0, colon), ref.substr(colon + 1));
}

// The blob CIDs of the config and every layer of an image in an ipfly-registry, and the layers'
// index CIDs (all platforms of an index), from its resolver.
Result<std::vector<std::string>> ImageCids(const std::string& registry, const std::string& ref) {
  auto [repo, reference] = IPFLY_TRY(SplitImageRef(ref));
  httplib::Client http(registry);
  http.set_connection_timeout(5);
  http.set_read_timeout(30);
  httplib::Headers accept = {
      {"Accept",
       "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
       "application/vnd.docker.distribution.manifest.v2+json, "
       "application/vnd.docker.distribution.manifest.list.v2+json"}};
  auto get_json = [&](const std::string& path) -> Result<json> {
    auto r = http.Get(path, accept);
    if (!r) return Unavailable("cannot reach " + registry + ": " + httplib::to_string(r.error()));
    if (r->status == 404) return NotFound(registry + path + ": not found");
    if (r->status != 200) {
      return Unavailable(registry + path + ": HTTP " + std::to_string(r->status));
    }
    auto j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Corrupt(registry + path + ": not JSON");
    return j;
  };
  std::vector<json> manifests;
  json top = IPFLY_TRY(get_json("/v2/" + repo + "/manifests/" + reference));
  if (top.contains("manifests") && top["manifests"].is_array()) {
    for (const auto& m : top["manifests"]) {
      manifests.push_back(
          IPFLY_TRY(get_json("/v2/" + repo + "/manifests/" + m.value("digest", std::string()))));
    }
  } else {
    manifests.push_back(top);
  }
  std::vector<std::string> cids;
  std::set<std::string> seen;
  for (const auto& m : manifests) {
    if (!m.contains("layers") || !m["layers"].is_array()) {
      return Corrupt(ref + ": a manifest without layers");
    }
    // The config blob too: without it the image cannot be pulled back from Filecoin.
    std::vector<std::pair<std::string, std::string>> blobs;  // (what, digest)
    if (m.contains("config") && m["config"].is_object()) {
      blobs.emplace_back("config", m["config"].value("digest", std::string()));
    }
    for (const auto& l : m["layers"]) blobs.emplace_back("layer", l.value("digest", std::string()));
    for (const auto& [what, digest] : blobs) {
      auto r = http.Get("/ipfly/v1/layers/" + digest);
      if (!r || r->status != 200) {
        return NotFound(what + " " + digest + " of " + ref + " has no CID at " + registry +
                        " (not an ipfly-registry, or not imported into IPFS)");
      }
      auto j = json::parse(r->body, nullptr, false);
      for (const char* key : {"cid", "index_cid"}) {
        if (j.is_object() && j.contains(key) && j[key].is_string()) {
          std::string c = j[key].get<std::string>();
          if (!c.empty() && seen.insert(c).second) cids.push_back(c);
        }
      }
    }
  }
  return cids;
}

std::string RegistryOf(const Config& c, const std::string& flag) {
  std::string url = flag.empty() ? c.registry.listen : flag;
  if (url.find("://") == std::string::npos) url = "http://" + url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// Watches `jobs` (id → cid) until all are final or the deadline passes; prints each change.
// Returns the number of jobs that did not end in SUCCESS.
Result<size_t> WatchToEnd(pg::Client& client, const std::map<std::string, std::string>& jobs,
                          Deadline deadline) {
  std::map<std::string, pg::pb::JobStatus> state;
  for (const auto& [id, cid] : jobs) state[id] = pg::pb::JOB_STATUS_UNSPECIFIED;
  auto all_final = [&] {
    for (const auto& [id, s] : state) {
      if (!pg::IsFinal(s)) return false;
    }
    return true;
  };
  while (!all_final()) {
    if (fetch::Clock::now() >= deadline) return Timeout("jobs still running at the deadline");
    std::vector<std::string> ids;
    for (const auto& [id, s] : state) {
      if (!pg::IsFinal(s)) ids.push_back(id);
    }
    Status st = client.WatchStorageJobs(ids, deadline, [&](const pg::pb::StorageJob& j) {
      auto it = state.find(j.id());
      if (it != state.end() && it->second != j.status()) {
        it->second = j.status();
        std::printf("job %s (%s): %s%s\n", j.id().c_str(), jobs.at(j.id()).c_str(),
                    std::string(pg::JobStatusName(j.status())).c_str(),
                    j.error_cause().empty() ? "" : (": " + j.error_cause()).c_str());
        std::fflush(stdout);
      }
      return !all_final();
    });
    if (!st.ok() && st.error().code() != Errc::kTimeout) return std::move(st).error();
  }
  size_t bad = 0;
  for (const auto& [id, s] : state) bad += s == pg::pb::JOB_STATUS_SUCCESS ? 0 : 1;
  return bad;
}

}  // namespace

std::optional<CliError> CmdArchive(const GlobalOptions& g, const ArchiveOptions& o) {
  auto p = MakePgEnv(g);
  if (!p.ok()) return FromError(p.error());
  const Deadline dl = p->env->deadline();
  std::vector<std::string> cids;
  for (const auto& t : o.targets) {
    std::string s = t.starts_with("ipfs://") ? t.substr(7) : t;
    if (auto c = Cid::Parse(s); c.ok()) {
      cids.push_back(c->ToString());
      continue;
    }
    if (s.find(':') == std::string::npos && s.find('@') == std::string::npos &&
        s.find('/') == std::string::npos) {
      return CliError{kExitUsage, "'" + t + "' is neither a CID nor an image REPO:TAG"};
    }
    auto image = ImageCids(RegistryOf(p->env->config(), o.registry), s);
    if (!image.ok()) return FromError(image.error().With("resolving image " + t));
    std::printf("image %s: %zu CIDs (config, layer blobs and indexes)\n", t.c_str(), image->size());
    cids.insert(cids.end(), image->begin(), image->end());
  }
  auto def = p->client->DefaultStorageConfig(dl);
  if (!def.ok()) return FromError(def.error());
  auto records = LoadArchives(p->state_dir);
  std::map<std::string, std::string> jobs;
  for (const auto& cid : cids) {
    Status st = p->client->StageCid(cid, dl);
    if (!st.ok()) return FromError(st.error().With("staging " + cid));
    pg::pb::StorageConfig cfg = *def;
    cfg.mutable_cold()->set_enabled(true);
    cfg.mutable_hot()->set_enabled(o.hot);
    auto id = p->client->ApplyStorageConfig(cid, cfg, /*override_config=*/true, dl);
    if (!id.ok()) return FromError(id.error());
    std::printf("archive %s: job %s\n", cid.c_str(), id->c_str());
    records.push_back({cid, *id, UnixNow()});
    jobs[*id] = cid;
  }
  if (Status st = SaveArchives(p->state_dir, records); !st.ok()) return FromError(st.error());
  if (o.wait && !jobs.empty()) {
    auto bad = WatchToEnd(*p->client, jobs, dl);
    if (!bad.ok()) return FromError(bad.error());
    if (*bad) return CliError{kExitFailure, std::to_string(*bad) + " archive job(s) failed"};
  }
  return std::nullopt;
}

std::optional<CliError> CmdArchiveStatus(const GlobalOptions& g, const ArchiveStatusOptions& o) {
  auto p = MakePgEnv(g);
  if (!p.ok()) return FromError(p.error());
  const Deadline dl = p->env->deadline();
  auto archives = LoadArchives(p->state_dir);
  auto thaws = pg::PowergateSource::LoadJobs(p->state_dir);
  if (!thaws.ok()) return FromError(thaws.error());
  std::vector<std::string> cids;
  for (const auto& c : o.cids) {
    auto parsed = ParseCidArg(c);
    if (!parsed.ok()) return FromError(parsed.error());
    cids.push_back(parsed->ToString());
  }
  if (cids.empty()) {
    std::set<std::string> seen;
    for (const auto& a : archives) {
      if (seen.insert(a.cid).second) cids.push_back(a.cid);
    }
    for (const auto& t : *thaws) {
      if (seen.insert(t.cid).second) cids.push_back(t.cid);
    }
    if (cids.empty()) {
      std::printf("nothing archived or thawed from here yet (%s)\n", p->state_dir.c_str());
      return std::nullopt;
    }
  }
  bool any_error = false;
  for (const auto& cid : cids) {
    std::printf("%s\n", cid.c_str());
    auto info = p->client->CidInfo(cid, dl);
    if (!info.ok()) {
      std::printf("  %s\n", info.error().ToString().c_str());
      any_error = true;
      continue;
    }
    const auto& cur = info->current_storage_info();
    std::printf("  hot:  %s", cur.hot().enabled() ? "enabled" : "disabled");
    if (cur.hot().enabled()) {
      std::printf(" (%lld bytes)", static_cast<long long>(cur.hot().size()));
    }
    std::printf("\n  cold: %s", cur.cold().enabled() ? "enabled (Filecoin)" : "disabled");
    if (cur.cold().enabled()) {
      std::printf(", %d deal(s)", cur.cold().filecoin().proposals_size());
    }
    std::printf("\n");
    for (const auto& d : cur.cold().filecoin().proposals()) {
      std::printf("    deal %lld miner %s piece %s duration %lld%s\n",
                  static_cast<long long>(d.deal_id()), d.miner().c_str(), d.piece_cid().c_str(),
                  static_cast<long long>(d.duration()), d.renewed() ? " (renewed)" : "");
    }
    if (info->has_executing_storage_job()) {
      const auto& j = info->executing_storage_job();
      std::printf("  executing job %s %s\n", j.id().c_str(),
                  std::string(pg::JobStatusName(j.status())).c_str());
    }
    for (const auto& j : info->queued_storage_jobs()) {
      std::printf("  queued job %s\n", j.id().c_str());
    }
    auto show = [&](const char* kind, const std::string& id) {
      auto j = p->client->StorageJob(id, dl);
      if (!j.ok()) {
        std::printf("  %s job %s: %s\n", kind, id.c_str(), j.error().ToString().c_str());
        return;
      }
      std::printf("  %s job %s: %s%s\n", kind, id.c_str(),
                  std::string(pg::JobStatusName(j->status())).c_str(),
                  j->error_cause().empty() ? "" : (" (" + j->error_cause() + ")").c_str());
    };
    for (const auto& a : archives) {
      if (a.cid == cid) show("archive", a.job_id);
    }
    for (const auto& t : *thaws) {
      if (t.cid == cid) show("thaw", t.job_id);
    }
  }
  if (any_error) return CliError{kExitFailure, "some CIDs could not be queried"};
  return std::nullopt;
}

std::optional<CliError> CmdThaw(const GlobalOptions& g, const ThawOptions& o) {
  auto p = MakePgEnv(g);
  if (!p.ok()) return FromError(p.error());
  const Config& c = p->env->config();
  const Deadline dl = p->env->deadline();
  if (c.powergate.unfreeze_max_price == 0) {
    return CliError{kExitUsage,
                    "[powergate] unfreeze_max_price is 0: thaws (paid Filecoin retrievals) are "
                    "disabled"};
  }
  pg::ColdSourceOptions so;
  so.config = c.powergate;
  so.config.state_dir = p->state_dir;
  auto profile = unixfs::ImportProfile::ByName(c.profile);
  if (!profile.ok()) return FromError(profile.error());
  so.profile = *profile;
  so.watch_jobs = false;
  auto src = pg::PowergateSource::Open(p->client, so);
  if (!src.ok()) return FromError(src.error());
  std::map<std::string, std::string> jobs;
  for (const auto& arg : o.cids) {
    auto cid = ParseCidArg(arg);
    if (!cid.ok()) return FromError(cid.error());
    auto job = (*src)->Thaw(*cid, dl);
    if (!job.ok()) return FromError(job.error());
    if (job->job_id.empty()) {
      std::printf("%s is already in hot storage\n", job->cid.c_str());
      continue;
    }
    std::printf("thaw %s: job %s (%s)\n", job->cid.c_str(), job->job_id.c_str(),
                std::string(pg::JobStatusName(job->status)).c_str());
    jobs[job->job_id] = job->cid;
  }
  if (o.wait && !jobs.empty()) {
    // A source with a watcher keeps jobs.json current while we wait.
    src->reset();
    so.watch_jobs = true;
    auto watching = pg::PowergateSource::Open(p->client, so);
    if (!watching.ok()) return FromError(watching.error());
    auto bad = WatchToEnd(*p->client, jobs, dl);
    if (!bad.ok()) return FromError(bad.error());
    // Let the watcher record the final states.
    for (int i = 0; i < 50; ++i) {
      bool done = true;
      for (const auto& j : (*watching)->Jobs()) done = done && pg::IsFinal(j.status);
      if (done) break;
      std::this_thread::sleep_for(milliseconds(100));
    }
    if (*bad) return CliError{kExitFailure, std::to_string(*bad) + " thaw job(s) failed"};
  }
  return std::nullopt;
}

void PrintColdRetrievals(const Config& config, const std::string& metrics_url) {
  if (config.powergate.address.empty()) return;
  struct Row {
    std::string cid, job, state;
  };
  std::vector<Row> rows;
  std::string source = "snapshotter";
  auto label = [](const std::string& line, const std::string& key) {
    size_t p = line.find(key + "=\"");
    if (p == std::string::npos) return std::string();
    p += key.size() + 2;
    size_t e = line.find('"', p);
    return e == std::string::npos ? std::string() : line.substr(p, e - p);
  };
  if (!metrics_url.empty()) {
    httplib::Client http(metrics_url);
    http.set_connection_timeout(3);
    http.set_read_timeout(10);
    if (auto r = http.Get("/metrics"); r && r->status == 200) {
      std::istringstream in(r->body);
      for (std::string line; std::getline(in, line);) {
        if (line.starts_with("ipfly_powergate_thaw_job{")) {
          rows.push_back({label(line, "cid"), label(line, "job_id"), label(line, "state")});
        }
      }
    }
  }
  if (rows.empty()) {
    source = fetch::PowergateStateDirOf(config);
    auto jobs = fetch::powergate::PowergateSource::LoadJobs(source);
    if (jobs.ok()) {
      for (const auto& j : *jobs) {
        rows.push_back({j.cid, j.job_id, std::string(pg::JobStatusName(j.status))});
      }
    }
  }
  size_t in_flight = 0;
  for (const auto& r : rows) {
    in_flight += pg::IsFinal(pg::JobStatusFromName(r.state)) ? 0 : 1;
  }
  std::printf("\ncold retrievals (Powergate %s, from %s): %zu in flight\n",
              config.powergate.address.c_str(), source.c_str(), in_flight);
  if (rows.empty()) return;
  std::printf("%-62s %-24s %s\n", "CID", "JOB", "STATE");
  for (const auto& r : rows) {
    std::printf("%-62s %-24s %s\n", r.cid.c_str(), r.job.c_str(), r.state.c_str());
  }
}

}  // namespace ipfly::cli
