// Logging facade over spdlog. Logs go to stderr; the level comes from IPFLY_LOG (trace, debug,
// info, warn, error, off) or from InitLogging. Thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace ipfly {

// Sets up the default logger ("ipfly", stderr, "[time] [level] message"). Idempotent.
// `level` empty means: IPFLY_LOG from the environment, else "warn" (the CLI stays quiet).
void InitLogging(std::string_view level = {});

}  // namespace ipfly

#define IPFLY_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define IPFLY_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define IPFLY_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define IPFLY_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
