// termination_notice.cpp: the notice lines kept ready in two buffers (the handler reads the one
// published last; publish_phase writes the other and then flips), and the handlers.
#include "core/termination_notice.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGHUP};
constexpr const char* kSignalNames[] = {"SIGTERM", "SIGINT", "SIGHUP"};
constexpr size_t kSignalCount = sizeof(kSignals) / sizeof(kSignals[0]);
constexpr size_t kLineBytes = 1024;

struct NoticeLines {
  std::array<std::array<char, kLineBytes>, kSignalCount> lines{};
  std::array<size_t, kSignalCount> sizes{};
};

std::mutex state_mutex;  // publish_phase's callers (the handler never takes it)
std::string notice_who;
std::string notice_layout;
std::string notice_phase = "set-up";
NoticeLines buffers[2];
std::atomic<int> published{-1};  // the buffer the handler reads; -1: not installed

std::string line_for(const char* signal_name) {
  std::string line = "n3rlhf-dist: " + notice_who + ": [" + error_code_string(ErrorCode::kDistributedSyncFailure) +
                     "] terminated by " + signal_name + " during " + notice_phase +
                     ". mpirun ends every rank this way when one rank dies or fails (its own message names that rank); "
                     "Slurm and the service's cancel send it too.";
  if (!notice_layout.empty()) line += " Ranks: " + notice_layout + ".";
  return line + "\n";
}

void prepare(NoticeLines& buffer) {
  for (size_t i = 0; i < kSignalCount; ++i) {
    const std::string line = line_for(kSignalNames[i]);
    const size_t size = std::min(line.size(), kLineBytes);
    std::memcpy(buffer.lines[i].data(), line.data(), size);
    if (size == kLineBytes) buffer.lines[i][kLineBytes - 1] = '\n';
    buffer.sizes[i] = size;
  }
}

void on_signal(int signal_number) {
  const int index = published.load(std::memory_order_acquire);
  if (index >= 0) {
    for (size_t i = 0; i < kSignalCount; ++i) {
      if (kSignals[i] != signal_number) continue;
      const NoticeLines& buffer = buffers[index];
      ssize_t written = ::write(STDERR_FILENO, buffer.lines[i].data(), buffer.sizes[i]);
      (void)written;
    }
  }
  ::signal(signal_number, SIG_DFL);
  ::raise(signal_number);
}

void republish_locked() {
  const int next = published.load(std::memory_order_relaxed) == 0 ? 1 : 0;
  prepare(buffers[next]);
  published.store(next, std::memory_order_release);
}

}  // namespace

void install_termination_notice(const std::string& who, const std::string& layout) {
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    notice_who = who;
    notice_layout = layout;
    republish_locked();
  }
  for (int signal_number : kSignals) {
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    sigaction(signal_number, &action, nullptr);
  }
}

void publish_phase(const std::string& phase) {
  std::lock_guard<std::mutex> lock(state_mutex);
  if (phase == notice_phase && published.load(std::memory_order_relaxed) >= 0) return;
  notice_phase = phase;
  if (published.load(std::memory_order_relaxed) >= 0) republish_locked();
}

std::string termination_notice_text(const char* signal_name) {
  std::lock_guard<std::mutex> lock(state_mutex);
  return line_for(signal_name);
}

}  // namespace n3rlhf
