// communicator.hpp: the one interface every rank uses to move tensors: collectives, point to
// point, sub-groups, the Work handles they return, their options and the traffic counters.
// Backends (local, MPI, NCCL) implement the do_* hooks; this base checks arguments, numbers the
// collectives, counts traffic and turns a stuck operation into RLHF014.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace n3rlhf {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

// Operation kinds, for error messages and traffic counters.
enum class CommOp { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kSend, kRecv, kBarrier, kSplit };
constexpr int kCommOpCount = 8;
const char* comm_op_name(CommOp op);

using CommTimeout = std::chrono::milliseconds;

// Per-call options. An unset timeout means the communicator's default
// (DistributedConfig.collective_timeout_s).
struct AllReduceOptions {
  ReduceOp op = ReduceOp::kSum;
  std::optional<CommTimeout> timeout;
};
struct ReduceScatterOptions {
  ReduceOp op = ReduceOp::kSum;
  std::optional<CommTimeout> timeout;
};
struct AllGatherOptions {
  std::optional<CommTimeout> timeout;
};
struct BroadcastOptions {
  int root = 0;
  std::optional<CommTimeout> timeout;
};
struct PointToPointOptions {
  int peer = 0;  // the other rank, numbered in this communicator
  int tag = 0;   // 0 .. 32767 (the smallest upper bound MPI guarantees)
  std::optional<CommTimeout> timeout;
};
struct BarrierOptions {
  std::optional<CommTimeout> timeout;
};
struct SplitOptions {
  static constexpr int kNoGroup = -1;  // a rank that passes this colour joins no sub-group
  int color = 0;
  int key = 0;        // orders the ranks inside the new group (ties: by rank here)
  std::string name;   // appended to this group's name; empty: "color<c>"
};

// A started operation. wait() returns when the result may be used; what "used" means depends on
// is_blocking(): a blocking handle (local, MPI) has the data in the output tensors when wait()
// returns; a non-blocking one (NCCL) has made the caller's current CUDA stream wait for the
// collective, so kernels queued after wait() see the data, while the host runs on.
// Every handle has a deadline; passing it throws TrainingError RLHF014 naming the ranks that did
// not arrive, and leaves the communicator unusable.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Waits on the host up to `timeout` (or the deadline, whichever comes first); true once done.
  virtual bool wait_for(CommTimeout timeout) = 0;
  virtual bool is_completed() = 0;
  virtual bool is_blocking() const = 0;
  virtual CommOp operation() const = 0;
};
using WorkHandle = std::shared_ptr<Work>;

// Bytes per rank per operation kind. Collectives count what the bandwidth-optimal (ring)
// algorithm moves, whatever the library does inside, so numbers compare across backends and
// with theory: all-reduce 2*B*(N-1)/N each way, reduce-scatter and all-gather B*(N-1)/N each way
// (B = the full flat buffer), broadcast B*(N-1) sent by the root and B received by the others.
// Point to point counts the payload. A world of one moves nothing.
struct OpTraffic {
  uint64_t calls = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
};
struct TrafficSnapshot {
  std::array<OpTraffic, kCommOpCount> per_op{};
  const OpTraffic& operator[](CommOp op) const { return per_op[static_cast<size_t>(op)]; }
  OpTraffic total() const;
  std::string to_string() const;  // one "op: calls=.. sent=.. received=.." line per used kind
};

// The knobs a backend is built with.
struct CommunicatorOptions {
  std::string name = "world";              // groups are named world, world/policy, ...
  CommTimeout timeout = std::chrono::seconds(600);
};

class Communicator {
 public:
  explicit Communicator(CommunicatorOptions options);
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend_name() const = 0;
  // The world rank of this group's rank `group_rank` (for messages and role maps).
  virtual int world_rank_of(int group_rank) const = 0;
  const std::string& name() const { return options_.name; }

  // Tensors: contiguous; f32, f64, bf16, f16, i64, i32, i8 or u8; empty tensors are valid.
  // In place on `tensor`. avg is for floating types.
  WorkHandle all_reduce(torch::Tensor& tensor, const AllReduceOptions& options = {});
  // Equal shards: input.numel() == size() * output.numel(); rank r receives the reduction of
  // elements [r * output.numel(), (r + 1) * output.numel()). Pad flat buffers with
  // padded_shards() (comm/padded_shards.hpp) to meet this.
  WorkHandle reduce_scatter(const torch::Tensor& input, torch::Tensor& output,
                            const ReduceScatterOptions& options = {});
  // output.numel() == size() * input.numel(); rank r's input lands at r * input.numel().
  WorkHandle all_gather(const torch::Tensor& input, torch::Tensor& output, const AllGatherOptions& options = {});
  WorkHandle broadcast(torch::Tensor& tensor, const BroadcastOptions& options = {});
  WorkHandle send(const torch::Tensor& tensor, const PointToPointOptions& options);
  WorkHandle recv(torch::Tensor& tensor, const PointToPointOptions& options);
  // A send and a receive started together (NCCL needs them grouped, or a ring deadlocks).
  WorkHandle send_recv(const torch::Tensor& to_send, int destination, torch::Tensor& to_receive, int source,
                       const PointToPointOptions& options = {});
  WorkHandle barrier(const BarrierOptions& options = {});
  // Collective over this group. Ranks with the same colour form a new communicator (nullptr for
  // SplitOptions::kNoGroup); it inherits the backend, the timeout and the device.
  std::unique_ptr<Communicator> split(const SplitOptions& options);

  TrafficSnapshot traffic() const;
  void reset_traffic();

 protected:
  // The hooks receive checked arguments and the resolved timeout. `sequence` numbers this
  // group's collectives (1, 2, ...) identically on every rank, so a stuck rank can be found.
  virtual WorkHandle do_all_reduce(torch::Tensor& tensor, ReduceOp op, CommTimeout timeout, uint64_t sequence) = 0;
  virtual WorkHandle do_reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op,
                                       CommTimeout timeout, uint64_t sequence) = 0;
  virtual WorkHandle do_all_gather(const torch::Tensor& input, torch::Tensor& output, CommTimeout timeout,
                                   uint64_t sequence) = 0;
  virtual WorkHandle do_broadcast(torch::Tensor& tensor, int root, CommTimeout timeout, uint64_t sequence) = 0;
  // to_send and to_receive may be undefined (a lone recv or send).
  virtual WorkHandle do_send_recv(const torch::Tensor& to_send, int destination, torch::Tensor& to_receive,
                                  int source, int tag, CommTimeout timeout) = 0;
  virtual WorkHandle do_barrier(CommTimeout timeout, uint64_t sequence) = 0;
  virtual std::unique_ptr<Communicator> do_split(int color, int key, CommunicatorOptions child, CommTimeout timeout,
                                                 uint64_t sequence) = 0;

  // Throws RLHF014 naming this group and the operation (bad arguments, a backend failure).
  [[noreturn]] void fail(CommOp op, const std::string& reason) const;

 private:
  uint64_t next_sequence() { return ++sequence_; }
  CommTimeout resolve(const std::optional<CommTimeout>& timeout) const { return timeout ? *timeout : options_.timeout; }
  void check_tensor(CommOp op, const torch::Tensor& tensor, const char* what) const;
  void check_peer(CommOp op, int peer) const;
  void count(CommOp op, uint64_t sent, uint64_t received);

  CommunicatorOptions options_;
  uint64_t sequence_ = 0;
  std::array<std::atomic<uint64_t>, kCommOpCount * 3> traffic_{};
};

// A handle for work already finished when it was returned (local backend, empty operations).
class CompletedWork : public Work {
 public:
  explicit CompletedWork(CommOp op) : op_(op) {}
  void wait() override {}
  bool wait_for(CommTimeout) override { return true; }
  bool is_completed() override { return true; }
  bool is_blocking() const override { return true; }
  CommOp operation() const override { return op_; }

 private:
  CommOp op_;
};

// Element size and support of a dtype for communication.
bool is_communicable_dtype(torch::ScalarType dtype);
bool is_floating_dtype(torch::ScalarType dtype);

}  // namespace n3rlhf
