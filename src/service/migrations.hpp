// migrations.hpp: the numbered schema migrations of the service's database (the seed's
// rlhf_feedback and rlhf_jobs tables and their indexes), one SQL text per backend each. A store
// applies, in order and each in its own transaction, those above the version recorded in
// schema_migrations.
#pragma once

#include <string>
#include <vector>

namespace n3rlhf::service {

struct Migration {
  int version;
  std::string name;
  std::string sqlite_sql;
  std::string postgresql_sql;
};

const std::vector<Migration>& migrations();

}  // namespace n3rlhf::service
