// service_test_support.hpp: what the service suites share: the two backends as a test
// parameter (a fresh SQLite file or a fresh database on the suite's PostgreSQL server), and
// running the Python peer that reads exports.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "service/store.hpp"
#include "support/test_support.hpp"

namespace n3rlhf::testing {

enum class Backend { kSqlite, kPostgresql };
std::string backend_name(Backend backend);

// A new, empty store of the backend (its URL in *url when given).
std::string fresh_store_url(Backend backend, const TempDir& dir, const std::string& name);

// tests/service/read_export.py on a file: {"columns", "rows", "schema"}.
nlohmann::json read_export_with_pandas(const std::string& path, const std::string& kind);

}  // namespace n3rlhf::testing
