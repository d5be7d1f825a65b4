// log.cpp: spdlog set-up with "host:rank" in each line, on stderr.
#include "core/log.hpp"

#include <unistd.h>

#include <cstdlib>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace n3rlhf {

std::string local_hostname() {
  char buffer[256] = {0};
  if (gethostname(buffer, sizeof buffer - 1) != 0) return "unknown-host";
  return buffer;
}

void configure_logging(const LogOptions& options) {
  std::string level = options.level;
  if (level.empty()) {
    if (const char* env = std::getenv("N3RLHF_LOG_LEVEL")) level = env;
  }
  spdlog::level::level_enum parsed = spdlog::level::info;
  if (!level.empty()) parsed = spdlog::level::from_str(level);
  if (!options.all_ranks && options.rank != 0 && parsed < spdlog::level::warn) parsed = spdlog::level::warn;

  // Replacing the logger: drop the old one by name first (dropping it after set_default_logger
  // would also clear the default logger).
  const std::string name = "n3rlhf-" + std::to_string(options.rank);
  spdlog::drop(name);
  auto logger = spdlog::stderr_color_mt(name);
  const std::string host = options.hostname.empty() ? local_hostname() : options.hostname;
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [" + host + ":" + std::to_string(options.rank) + "/" +
                      std::to_string(options.world_size) + "] [%^%l%$] %v");
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace n3rlhf
