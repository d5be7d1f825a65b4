// nccl_communicator.hpp: the NCCL backend for CUDA tensors. The NCCL unique id travels over MPI;
// collectives run on the communicator's own CUDA stream, ordered after the caller's compute
// stream with an event, and Work::wait() orders the caller's stream after them (non-blocking
// for the host). The MPI group it was built from stays as the side channel that names the ranks
// that did not arrive, and a watchdog aborts NCCL (then the job) when a collective is stuck and
// nobody is waiting on the host to report it. The same watchdog polls the FailureRelay and NCCL's
// asynchronous error: when a peer announced its failure (or NCCL reports one, a peer's connection
// lost) while a collective is in flight, it aborts the NCCL communicator, so that the kernels
// spinning for the dead peer end and a host blocked behind them returns; the next operation then
// throws the failed rank's own error (or RLHF014 with NCCL's). Compiled only with N3RLHF_HAVE_NCCL.
#pragma once

#include <mpi.h>

#include <memory>

#include "comm/arrival_watchdog.hpp"
#include "comm/communicator.hpp"

namespace n3rlhf {

struct NcclState;

class FailureRelay;

class NcclCommunicator : public Communicator {
 public:
  // Collective over `comm` (owned); `device_index` is this rank's GPU.
  NcclCommunicator(MPI_Comm comm, CommunicatorOptions options, int device_index,
                   std::shared_ptr<ArrivalWatchdog> watchdog = nullptr);
  ~NcclCommunicator() override;
  static std::unique_ptr<NcclCommunicator> world(CommunicatorOptions options, int device_index);
  // Where other ranks' announced failures arrive (MpiEnvironment::failure_relay, which outlives
  // the communicator): operations throw the failed rank's error, and a collective in flight is
  // aborted. Splits inherit it.
  void set_failure_relay(FailureRelay* relay);

  int rank() const override;
  int size() const override;
  const char* backend_name() const override { return "nccl"; }
  int world_rank_of(int group_rank) const override;

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
  template <typename Launch>
  WorkHandle launch(CommOp op, uint64_t sequence, std::vector<int> peers, CommTimeout timeout,
                    std::vector<torch::Tensor> tensors, Launch&& call);

  std::shared_ptr<NcclState> state_;
};

}  // namespace n3rlhf
