// mpi_communicator.hpp: the MPI backend. CPU tensors go straight into non-blocking MPI
// collectives; CUDA tensors are staged through pinned host memory (so several ranks can share
// one GPU in tests); bf16/f16 reductions are carried out in f32. A watchdog thread answers
// "which collective are you in?" on a duplicate communicator, so a timeout names the ranks that
// did not arrive.
#pragma once

#include <mpi.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/arrival_watchdog.hpp"
#include "comm/communicator.hpp"

namespace n3rlhf {

class FailureRelay;

// What an MPI group shares with the Work handles still in flight on it.
struct MpiGroup {
  MPI_Comm comm = MPI_COMM_NULL;
  std::string name;
  std::string backend;
  int rank = 0;
  int size = 1;
  std::vector<int> world_ranks;  // group rank -> MPI_COMM_WORLD rank
  std::shared_ptr<ArrivalWatchdog> watchdog;
  std::unique_ptr<ArrivalChannel> arrivals;
  FailureRelay* failure_relay = nullptr;  // MpiEnvironment's; null: none

  MpiGroup(MPI_Comm owned_comm, std::string group_name, std::string backend_name,
           std::shared_ptr<ArrivalWatchdog> shared_watchdog);
  ~MpiGroup();

  // Throws the RLHF014 of an earlier timeout when there was one: a group whose collectives
  // went out of step cannot be trusted again.
  void check_usable(CommOp op) const;
  bool broken() const;
  // Throws the error a failed peer announced (FailureRelay), after marking the group unusable.
  void throw_if_peer_failed();
  // Marks the group unusable for `why` (kept when it is unusable already): every later operation
  // on it throws RLHF014 saying so. For failures found off the caller's thread (NCCL's watchdog).
  void mark_broken(const std::string& why);
  // Finds the ranks that did not arrive, marks the group unusable and throws RLHF014.
  [[noreturn]] void fail_timeout(CommOp op, uint64_t sequence, CommTimeout timeout, const std::vector<int>& peers);
  [[noreturn]] void fail_call(CommOp op, const char* call, int code) const;
  std::string describe_rank(int group_rank) const;

 private:
  mutable std::mutex mutex_;
  std::string broken_;
};

class MpiCommunicator : public Communicator {
 public:
  // Takes ownership of `comm`. `watchdog` is shared by a world and its sub-groups; null: a new one.
  MpiCommunicator(MPI_Comm comm, CommunicatorOptions options, std::shared_ptr<ArrivalWatchdog> watchdog = nullptr);
  ~MpiCommunicator() override;
  // A duplicate of MPI_COMM_WORLD (MPI must be initialised).
  static std::unique_ptr<MpiCommunicator> world(CommunicatorOptions options);
  // Where other ranks' announced failures arrive (MpiEnvironment::failure_relay, which outlives
  // the communicator); waits then throw the failed rank's error instead of timing out. Splits
  // inherit it.
  void set_failure_relay(FailureRelay* relay);

  int rank() const override { return group_->rank; }
  int size() const override { return group_->size; }
  const char* backend_name() const override { return "mpi"; }
  int world_rank_of(int group_rank) const override { return group_->world_ranks.at(group_rank); }

 protected:
  WorkHandle do_all_reduce(torch::Tensor& tensor, ReduceOp op, CommTimeout timeout, uint64_t sequence) override;
  WorkHandle do_reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op, CommTimeout timeout,
                               uint64_t sequence) override;
  WorkHandle do_all_gather(const torch::Tensor& input, torch::Tensor& output, CommTimeout timeout,
                           uint64_t sequence) override;
  WorkHandle do_broadcast(torch::Tensor& tensor, int root, CommTimeout timeout, uint64_t sequence) override;
  WorkHandle do_send_recv(const torch::Tensor& to_send, int destination, torch::Tensor& to_receive, int source,
                          int tag, CommTimeout timeout) override;
  WorkHandle do_barrier(CommTimeout timeout, uint64_t sequence) override;
  std::unique_ptr<Communicator> do_split(int color, int key, CommunicatorOptions child, CommTimeout timeout,
                                         uint64_t sequence) override;

 private:
  std::shared_ptr<MpiGroup> group_;
};

}  // namespace n3rlhf
