// fault_injection.cpp: parsing N3RLHF_FAULT_AT and raising the signal.
#include "core/fault_injection.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace n3rlhf {

namespace {

int signal_named(const std::string& name) {
  if (name == "KILL") return SIGKILL;
  if (name == "STOP") return SIGSTOP;
  if (name == "TERM") return SIGTERM;
  if (name == "SEGV") return SIGSEGV;
  return 0;
}

}  // namespace

void fault_point(const char* point, int rank, int64_t step) {
  const char* setting = std::getenv("N3RLHF_FAULT_AT");
  if (setting == nullptr || *setting == '\0') return;
  std::vector<std::string> parts;
  std::stringstream text(setting);
  for (std::string part; std::getline(text, part, ':');) parts.push_back(part);
  if (parts.size() < 3 || parts[0] != point) return;
  if (std::atoi(parts[1].c_str()) != rank) return;
  if (parts.size() > 3 && std::atoll(parts[3].c_str()) != step) return;
  const int signal = signal_named(parts[2]);
  if (signal != 0) ::kill(::getpid(), signal);
}

}  // namespace n3rlhf
