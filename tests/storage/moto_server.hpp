// moto_server.hpp: a real S3-compatible server for the storage tests: pip moto's server mode
// (`python -m moto.server`) on a free loopback port, in a process group of its own, stopped when
// the object dies (pass or fail). Tests can kill it, or freeze and thaw it, mid-transfer. moto
// checks SigV4 signatures here: the server starts with INITIAL_NO_AUTH_ACTION_COUNT=3, and the
// three unsigned calls make an IAM user and the access key the tests sign with.
#pragma once

#include <string>

#include "support/test_support.hpp"  // free_loopback_port

namespace n3rlhf::testing {

class MotoServer {
 public:
  // Starts the server and waits until it answers (a few seconds); throws std::runtime_error when
  // it does not come up, with its log.
  explicit MotoServer(const std::string& log_directory);
  ~MotoServer();
  MotoServer(const MotoServer&) = delete;
  MotoServer& operator=(const MotoServer&) = delete;

  // "http://127.0.0.1:PORT", for AWS_ENDPOINT_URL.
  std::string endpoint() const;
  int port() const { return port_; }
  // SIGKILL: the server dies at once (with what it held in memory).
  void kill();
  // SIGSTOP / SIGCONT: the server stops answering, then carries on as it was.
  void freeze();
  void thaw();
  const std::string& access_key_id() const { return access_key_id_; }
  const std::string& secret_access_key() const { return secret_access_key_; }
  // Sets the AWS_* variables of this process so that the environment points at this server
  // (its access key, region us-east-1).
  void export_environment() const;

 private:
  int port_ = 0;
  int pid_ = 0;
  std::string log_;
  std::string access_key_id_;
  std::string secret_access_key_;
};

}  // namespace n3rlhf::testing
