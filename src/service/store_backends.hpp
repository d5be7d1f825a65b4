// store_backends.hpp: the two Store backends' constructors (sqlite_store.cpp,
// postgresql_store.cpp) and the helpers they share; open_store() is their only caller.
#pragma once

#include <memory>
#include <string>

#include "service/store.hpp"

namespace n3rlhf::service {

std::unique_ptr<Store> open_sqlite_store(const std::string& path, const StoreOptions& options);
std::unique_ptr<Store> open_postgresql_store(const std::string& url, const StoreOptions& options);

// A connection URL with its password replaced by "***", for messages.
std::string redact_url(const std::string& url);

}  // namespace n3rlhf::service
