#include "core/base/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <mutex>
#include <string>

namespace ipfly {

void InitLogging(std::string_view level) {
  static std::once_flag once;
  std::call_once(once, [] {
    auto logger = spdlog::stderr_logger_mt("ipfly");
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
  });
  std::string lvl(level);
  if (lvl.empty()) {
    const char* env = std::getenv("IPFLY_LOG");
    lvl = env ? env : "warn";
  }
  spdlog::set_level(spdlog::level::from_str(lvl));
}

}  // namespace ipfly
