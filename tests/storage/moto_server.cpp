// moto_server.cpp: starting, stopping, freezing pip moto's S3 server for the tests.
#include "storage/moto_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "support/test_support.hpp"

namespace n3rlhf::testing {

namespace {

bool accepts_connections(int port) {
  const int descriptor = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool connected = ::connect(descriptor, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(descriptor);
  return connected;
}

}  // namespace

MotoServer::MotoServer(const std::string& log_directory) : port_(free_loopback_port()), log_(log_directory + "/moto.log") {
  pid_ = ::fork();
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test does not leave the server behind
    if (!std::freopen(log_.c_str(), "w", stdout) || !std::freopen(log_.c_str(), "a", stderr)) ::_exit(127);
    ::setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3", 1);  // moto checks signatures after the set-up calls
    const std::string python = source_dir() + "/.venv/bin/python";
    const std::string port = std::to_string(port_);
    ::execl(python.c_str(), python.c_str(), "-m", "moto.server", "-H", "127.0.0.1", "-p", port.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid_, pid_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!accepts_connections(port_)) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_ || std::chrono::steady_clock::now() > deadline) {
      pid_ = 0;
      throw std::runtime_error("moto's server did not start; its log:\n" + read_file(log_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const CommandResult keys = run_command(source_dir() + "/.venv/bin/python " + source_dir() +
                                         "/tests/storage/moto_credentials.py " + endpoint());
  const size_t space = keys.out.find(' ');
  if (keys.exit_status != 0 || space == std::string::npos) {
    kill();
    throw std::runtime_error("could not make test credentials on moto's server: " + keys.err);
  }
  access_key_id_ = keys.out.substr(0, space);
  secret_access_key_ = keys.out.substr(space + 1);
  while (!secret_access_key_.empty() && std::isspace(static_cast<unsigned char>(secret_access_key_.back()))) secret_access_key_.pop_back();
}

MotoServer::~MotoServer() { kill(); }

std::string MotoServer::endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

void MotoServer::kill() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGCONT);
  ::kill(-pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = 0;
}

void MotoServer::freeze() {
  if (pid_ > 0) ::kill(-pid_, SIGSTOP);
}

void MotoServer::thaw() {
  if (pid_ > 0) ::kill(-pid_, SIGCONT);
}

void MotoServer::export_environment() const {
  ::setenv("AWS_ENDPOINT_URL", endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", access_key_id_.c_str(), 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", secret_access_key_.c_str(), 1);
  ::setenv("AWS_REGION", "us-east-1", 1);
  ::unsetenv("AWS_SESSION_TOKEN");
  ::unsetenv("AWS_ENDPOINT_URL_S3");
}

}  // namespace n3rlhf::testing
