// local_communicator.hpp: the world of one: every collective is an identity (or a copy), no MPI
// is needed, and a send to oneself waits in a mailbox for the matching receive. Single-process
// runs (colocated PPO on one rank, `n3rlhf` tools) use it so that code above never special-cases
// "not distributed". A receive posted before its send completes when the send comes.
#pragma once

#include <deque>
#include <map>
#include <mutex>

#include "comm/communicator.hpp"

namespace n3rlhf {

class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(CommunicatorOptions options = {});

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend_name() const override { return "local"; }
  int world_rank_of(int group_rank) const override { return group_rank; }

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
  struct PendingReceive;
  std::mutex mailbox_mutex_;
  std::map<int, std::deque<torch::Tensor>> mailbox_;  // sends not yet received, by tag
  std::map<int, std::deque<std::shared_ptr<PendingReceive>>> pending_;  // receives not yet matched
};

}  // namespace n3rlhf
