// log.hpp: the process-wide logger (spdlog) with host and rank in every line. Rank 0 logs at
// info by default, other ranks at warning, so that N ranks do not print N copies of progress.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace n3rlhf {

struct LogOptions {
  int rank = 0;
  int world_size = 1;
  std::string hostname;       // empty: read from the system
  std::string level;          // trace|debug|info|warn|error|off; empty: info on rank 0, warn elsewhere
  bool all_ranks = false;     // every rank at `level` (or info)
};

// Installs the default logger. Called once by each main; safe to call again (replaces it).
// N3RLHF_LOG_LEVEL in the environment overrides the default level.
void configure_logging(const LogOptions& options);

std::string local_hostname();

}  // namespace n3rlhf
