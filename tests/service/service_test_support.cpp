// service_test_support.cpp: backends as test parameters and the export peer.
#include "service/service_test_support.hpp"

#include <unistd.h>

#include <atomic>
#include <stdexcept>

#include "service/postgres_server.hpp"

namespace n3rlhf::testing {

std::string backend_name(Backend backend) { return backend == Backend::kSqlite ? "sqlite" : "postgresql"; }

std::string fresh_store_url(Backend backend, const TempDir& dir, const std::string& name) {
  static std::atomic<int> counter{0};
  const std::string unique = name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  if (backend == Backend::kSqlite) return "sqlite:" + dir.path() + "/" + unique + ".db";
  return PostgresServer::shared().create_database(unique);
}

nlohmann::json read_export_with_pandas(const std::string& path, const std::string& kind) {
  const CommandResult result = run_command(source_dir() + "/.venv/bin/python " + source_dir() +
                                           "/tests/service/read_export.py " + path + " " + kind);
  if (result.exit_status != 0) throw std::runtime_error("read_export.py failed: " + result.err);
  return nlohmann::json::parse(result.out);
}

}  // namespace n3rlhf::testing
