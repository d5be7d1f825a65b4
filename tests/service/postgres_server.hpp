// postgres_server.hpp: a real PostgreSQL server for the service tests: initdb + pg_ctl in a
// temporary directory, listening on a free loopback port (as user nobody when run as root,
// since postgres refuses root), stopped and removed when the object dies.
#pragma once

#include <string>

namespace n3rlhf::testing {

class PostgresServer {
 public:
  // Starts the server; throws std::runtime_error with the log when it cannot.
  PostgresServer();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  int port() const { return port_; }
  // A new, empty database and its connection URL.
  std::string create_database(const std::string& name);
  // The whole suite shares one server (started on first use).
  static PostgresServer& shared();

 private:
  std::string run_as_owner(const std::string& command) const;
  std::string directory_;
  std::string bin_;
  int port_ = 0;
};


}  // namespace n3rlhf::testing
