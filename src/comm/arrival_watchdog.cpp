// arrival_watchdog.cpp: queries and answers about who reached which collective.
#include "comm/arrival_watchdog.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/log.hpp"

namespace n3rlhf {

namespace {
constexpr int kQueryTag = 1;
constexpr int kReplyTag = 2;
// How often the watchdog looks for queries and drives MPI progress. Short enough that a query is
// answered well inside its window; long enough to cost nothing beside training.
constexpr auto kPollInterval = std::chrono::milliseconds(2);
constexpr int64_t kNoReply = -1;
}  // namespace

ArrivalChannel::ArrivalChannel(MPI_Comm group, std::shared_ptr<ArrivalWatchdog> watchdog)
    : watchdog_(std::move(watchdog)) {
  if (MPI_Comm_dup(group, &side_) != MPI_SUCCESS) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure, "MPI_Comm_dup of the side channel failed");
  }
  MPI_Comm_set_errhandler(side_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(side_, &rank_);
  MPI_Comm_size(side_, &size_);
  watchdog_->attach(this);
}

ArrivalChannel::~ArrivalChannel() {
  watchdog_->detach(this);
  MPI_Comm_free(&side_);
}

void ArrivalChannel::serve_queries() {
  for (;;) {
    if (query_request_ == MPI_REQUEST_NULL) {
      MPI_Irecv(&query_, 1, MPI_INT64_T, MPI_ANY_SOURCE, kQueryTag, side_, &query_request_);
    }
    int arrived = 0;
    MPI_Status status;
    MPI_Test(&query_request_, &arrived, &status);
    if (!arrived) return;
    int64_t answer = static_cast<int64_t>(entered_sequence());
    // Eight bytes go out eagerly, so this blocking send returns at once.
    MPI_Send(&answer, 1, MPI_INT64_T, status.MPI_SOURCE, kReplyTag, side_);
  }
}

std::vector<std::pair<int, int64_t>> ArrivalChannel::ask(const std::vector<int>& peers,
                                                         std::chrono::milliseconds window) {
  std::vector<int64_t> replies(peers.size(), kNoReply);
  std::vector<MPI_Request> receives(peers.size(), MPI_REQUEST_NULL);
  std::vector<MPI_Request> sends(peers.size(), MPI_REQUEST_NULL);
  int64_t question = 0;
  for (size_t i = 0; i < peers.size(); ++i) {
    MPI_Irecv(&replies[i], 1, MPI_INT64_T, peers[i], kReplyTag, side_, &receives[i]);
    MPI_Isend(&question, 1, MPI_INT64_T, peers[i], kQueryTag, side_, &sends[i]);
  }
  const auto deadline = std::chrono::steady_clock::now() + window;
  int all_done = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    MPI_Testall(static_cast<int>(receives.size()), receives.data(), &all_done, MPI_STATUSES_IGNORE);
    if (all_done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<std::pair<int, int64_t>> answers;
  for (size_t i = 0; i < peers.size(); ++i) {
    int done = 0;
    MPI_Test(&receives[i], &done, MPI_STATUS_IGNORE);
    if (!done) {
      // Cancel, then complete the request: the reply buffer lives on this stack frame.
      MPI_Cancel(&receives[i]);
      MPI_Wait(&receives[i], MPI_STATUS_IGNORE);
      replies[i] = kNoReply;
    }
    // Eight bytes leave eagerly, so the send completes locally even if the peer never reads it.
    MPI_Wait(&sends[i], MPI_STATUS_IGNORE);
    answers.emplace_back(peers[i], replies[i]);
  }
  return answers;
}

std::vector<int> ArrivalChannel::ranks_not_at(uint64_t sequence, std::chrono::milliseconds window) {
  std::vector<int> peers;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) peers.push_back(peer);
  }
  std::vector<int> absent;
  for (const auto& [peer, reached] : ask(peers, window)) {
    if (reached == kNoReply || static_cast<uint64_t>(reached) < sequence) absent.push_back(peer);
  }
  return absent;
}

std::vector<int> ArrivalChannel::unresponsive(const std::vector<int>& peers,
                                              std::chrono::milliseconds window) {
  std::vector<int> others;
  for (int peer : peers) {
    if (peer != rank_) others.push_back(peer);
  }
  std::vector<int> silent;
  for (const auto& [peer, reached] : ask(others, window)) {
    if (reached == kNoReply) silent.push_back(peer);
  }
  return silent;
}

ArrivalWatchdog::ArrivalWatchdog() : thread_([this] { run(); }) {}

ArrivalWatchdog::~ArrivalWatchdog() {
  {
    std::lock_guard<std::mutex> lock(stop_mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ArrivalWatchdog::attach(ArrivalChannel* channel) {
  std::lock_guard<std::mutex> lock(channels_mutex_);
  channels_.push_back(channel);
}

void ArrivalWatchdog::detach(ArrivalChannel* channel) {
  std::lock_guard<std::mutex> lock(channels_mutex_);
  channels_.erase(std::remove(channels_.begin(), channels_.end(), channel), channels_.end());
  if (channel->query_request_ != MPI_REQUEST_NULL) {
    MPI_Cancel(&channel->query_request_);
    MPI_Wait(&channel->query_request_, MPI_STATUS_IGNORE);
  }
}

int ArrivalWatchdog::add_poller(std::function<void()> poller) {
  std::lock_guard<std::mutex> lock(pollers_mutex_);
  pollers_.emplace_back(++next_poller_id_, std::move(poller));
  return next_poller_id_;
}

void ArrivalWatchdog::remove_poller(int id) {
  // Holding the pollers' lock also waits out a call of this poller that is under way.
  std::lock_guard<std::mutex> lock(pollers_mutex_);
  pollers_.erase(std::remove_if(pollers_.begin(), pollers_.end(), [id](const auto& p) { return p.first == id; }),
                 pollers_.end());
}

void ArrivalWatchdog::run() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(channels_mutex_);
      for (ArrivalChannel* channel : channels_) channel->serve_queries();
    }
    {
      std::lock_guard<std::mutex> lock(pollers_mutex_);
      for (auto& [id, poller] : pollers_) {
        try {
          poller();
        } catch (const std::exception& error) {
          spdlog::error("communication watchdog: {}", error.what());
        }
      }
    }
    std::unique_lock<std::mutex> lock(stop_mutex_);
    if (wake_.wait_for(lock, kPollInterval, [this] { return stop_; })) return;
  }
}

}  // namespace n3rlhf
