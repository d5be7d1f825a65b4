// arrival_watchdog.hpp: the side channel that finds out which ranks did not arrive at a stuck
// collective. Each group publishes the sequence number of the last collective it entered; a
// watchdog thread per process answers "where are you?" queries on a duplicate of each group's
// MPI communicator, so a rank that is busy (or stuck) in its own code still answers. The same
// thread keeps MPI's non-blocking collectives progressing and runs backends' deadline pollers.
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace n3rlhf {

class ArrivalWatchdog;

// One group's view: its side communicator and the sequence this rank has reached.
class ArrivalChannel {
 public:
  // Duplicates `group` (a collective call over the group) and registers with the watchdog.
  ArrivalChannel(MPI_Comm group, std::shared_ptr<ArrivalWatchdog> watchdog);
  ~ArrivalChannel();
  ArrivalChannel(const ArrivalChannel&) = delete;
  ArrivalChannel& operator=(const ArrivalChannel&) = delete;

  void entered(uint64_t sequence) { entered_.store(sequence, std::memory_order_release); }
  uint64_t entered_sequence() const { return entered_.load(std::memory_order_acquire); }

  // The group ranks (other than this one) that have not entered collective `sequence`, asking
  // each and waiting at most `window` for answers; a rank that does not answer counts as absent.
  std::vector<int> ranks_not_at(uint64_t sequence, std::chrono::milliseconds window);
  // Those of `peers` that do not answer within `window` (for point-to-point timeouts, where
  // sequence numbers say nothing).
  std::vector<int> unresponsive(const std::vector<int>& peers, std::chrono::milliseconds window);

 private:
  friend class ArrivalWatchdog;
  void serve_queries();  // on the watchdog thread
  std::vector<std::pair<int, int64_t>> ask(const std::vector<int>& peers, std::chrono::milliseconds window);

  MPI_Comm side_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::atomic<uint64_t> entered_{0};
  std::shared_ptr<ArrivalWatchdog> watchdog_;
  // Watchdog-thread state: the posted receive for the next query.
  int64_t query_ = 0;
  MPI_Request query_request_ = MPI_REQUEST_NULL;
};

class ArrivalWatchdog : public std::enable_shared_from_this<ArrivalWatchdog> {
 public:
  ArrivalWatchdog();
  ~ArrivalWatchdog();
  ArrivalWatchdog(const ArrivalWatchdog&) = delete;
  ArrivalWatchdog& operator=(const ArrivalWatchdog&) = delete;

  void attach(ArrivalChannel* channel);
  void detach(ArrivalChannel* channel);
  // A function the thread calls every few milliseconds (NCCL deadline checks); returns an id.
  int add_poller(std::function<void()> poller);
  void remove_poller(int id);

 private:
  void run();

  std::mutex channels_mutex_;
  std::vector<ArrivalChannel*> channels_;
  std::mutex pollers_mutex_;
  std::vector<std::pair<int, std::function<void()>>> pollers_;
  int next_poller_id_ = 0;
  std::mutex stop_mutex_;
  bool stop_ = false;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace n3rlhf
