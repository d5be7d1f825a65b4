// postgres_server.cpp: starting and stopping the tests' PostgreSQL server.
#include "service/postgres_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include <pqxx/pqxx>

#include "support/test_support.hpp"

namespace n3rlhf::testing {

namespace fs = std::filesystem;

std::string PostgresServer::run_as_owner(const std::string& command) const {
  const std::string full = ::geteuid() == 0 ? "runuser -u nobody -- " + command : command;
  const CommandResult result = run_command(full + " 2>&1");
  if (result.exit_status != 0) {
    throw std::runtime_error("postgres: `" + full + "` failed:\n" + result.out + result.err);
  }
  return result.out;
}

PostgresServer::PostgresServer() {
  for (const char* version : {"17", "16", "15", "14", "13"}) {
    const std::string candidate = std::string("/usr/lib/postgresql/") + version + "/bin";
    if (fs::exists(candidate + "/pg_ctl")) {
      bin_ = candidate;
      break;
    }
  }
  if (bin_.empty()) throw std::runtime_error("postgres: no /usr/lib/postgresql/*/bin/pg_ctl (Debian package postgresql)");
  char pattern[] = "/tmp/n3rlhf-pg-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("postgres: mkdtemp failed");
  directory_ = pattern;
  if (::geteuid() == 0) run_command("chown nobody:nogroup " + directory_);
  port_ = free_loopback_port();
  run_as_owner(bin_ + "/initdb -D " + directory_ + "/data -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8");
  run_as_owner(bin_ + "/pg_ctl -D " + directory_ + "/data -l " + directory_ + "/server.log -w -t 60 start -o \"-p " +
               std::to_string(port_) + " -k " + directory_ + " -c listen_addresses=127.0.0.1 -c max_connections=200\"");
}

PostgresServer::~PostgresServer() {
  try {
    run_as_owner(bin_ + "/pg_ctl -D " + directory_ + "/data -w -t 60 -m fast stop");
  } catch (const std::exception&) {
  }
  std::error_code ignored;
  fs::remove_all(directory_, ignored);
}

std::string PostgresServer::create_database(const std::string& name) {
  const std::string base = "postgresql://postgres@127.0.0.1:" + std::to_string(port_);
  pqxx::connection connection(base + "/postgres");
  pqxx::nontransaction tx(connection);
  tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name));
  tx.exec("CREATE DATABASE " + tx.quote_name(name));
  return base + "/" + name;
}

PostgresServer& PostgresServer::shared() {
  // Never destroyed before exit: a static unique_ptr's deleter stops the server at exit.
  static std::unique_ptr<PostgresServer> server(new PostgresServer());
  return *server;
}

}  // namespace n3rlhf::testing
