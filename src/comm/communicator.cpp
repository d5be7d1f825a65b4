// communicator.cpp: the backend-independent half of Communicator: argument checks, collective
// numbering, traffic counting and the typed errors.
#include "comm/communicator.hpp"

#include <sstream>

#include "core/error.hpp"

namespace n3rlhf {

const char* comm_op_name(CommOp op) {
  switch (op) {
    case CommOp::kAllReduce: return "all_reduce";
    case CommOp::kReduceScatter: return "reduce_scatter";
    case CommOp::kAllGather: return "all_gather";
    case CommOp::kBroadcast: return "broadcast";
    case CommOp::kSend: return "send";
    case CommOp::kRecv: return "recv";
    case CommOp::kBarrier: return "barrier";
    case CommOp::kSplit: return "split";
  }
  return "?";
}

bool is_communicable_dtype(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
    case torch::kFloat64:
    case torch::kBFloat16:
    case torch::kFloat16:
    case torch::kInt64:
    case torch::kInt32:
    case torch::kInt8:
    case torch::kUInt8:
      return true;
    default:
      return false;
  }
}

bool is_floating_dtype(torch::ScalarType dtype) {
  return dtype == torch::kFloat32 || dtype == torch::kFloat64 || dtype == torch::kBFloat16 || dtype == torch::kFloat16;
}

OpTraffic TrafficSnapshot::total() const {
  OpTraffic sum;
  for (const OpTraffic& op : per_op) {
    sum.calls += op.calls;
    sum.bytes_sent += op.bytes_sent;
    sum.bytes_received += op.bytes_received;
  }
  return sum;
}

std::string TrafficSnapshot::to_string() const {
  std::ostringstream out;
  for (int i = 0; i < kCommOpCount; ++i) {
    const OpTraffic& op = per_op[i];
    if (op.calls == 0) continue;
    out << comm_op_name(static_cast<CommOp>(i)) << ": calls=" << op.calls << " sent=" << op.bytes_sent
        << " received=" << op.bytes_received << "\n";
  }
  return out.str();
}

Communicator::Communicator(CommunicatorOptions options) : options_(std::move(options)) {}
Communicator::~Communicator() = default;

void Communicator::fail(CommOp op, const std::string& reason) const {
  throw TrainingError(ErrorCode::kDistributedSyncFailure,
                      std::string(comm_op_name(op)) + " on group '" + name() + "': " + reason,
                      {{"operation", comm_op_name(op)}, {"group", name()}, {"backend", backend_name()},
                       {"rank", std::to_string(rank())}});
}

void Communicator::check_tensor(CommOp op, const torch::Tensor& tensor, const char* what) const {
  if (!tensor.defined()) fail(op, std::string(what) + " is an undefined tensor");
  if (!tensor.is_contiguous()) fail(op, std::string(what) + " is not contiguous (call .contiguous() first)");
  if (!is_communicable_dtype(tensor.scalar_type())) {
    fail(op, std::string(what) + " has dtype " + std::string(c10::toString(tensor.scalar_type())) +
                 "; supported: float32, float64, bfloat16, float16, int64, int32, int8, uint8");
  }
}

void Communicator::check_peer(CommOp op, int peer) const {
  if (peer < 0 || peer >= size()) {
    fail(op, "rank " + std::to_string(peer) + " is outside the group of " + std::to_string(size()));
  }
}

void Communicator::count(CommOp op, uint64_t sent, uint64_t received) {
  const size_t base = static_cast<size_t>(op) * 3;
  traffic_[base].fetch_add(1, std::memory_order_relaxed);
  traffic_[base + 1].fetch_add(sent, std::memory_order_relaxed);
  traffic_[base + 2].fetch_add(received, std::memory_order_relaxed);
}

TrafficSnapshot Communicator::traffic() const {
  TrafficSnapshot snapshot;
  for (int i = 0; i < kCommOpCount; ++i) {
    snapshot.per_op[i].calls = traffic_[i * 3].load(std::memory_order_relaxed);
    snapshot.per_op[i].bytes_sent = traffic_[i * 3 + 1].load(std::memory_order_relaxed);
    snapshot.per_op[i].bytes_received = traffic_[i * 3 + 2].load(std::memory_order_relaxed);
  }
  return snapshot;
}

void Communicator::reset_traffic() {
  for (auto& counter : traffic_) counter.store(0, std::memory_order_relaxed);
}

namespace {
uint64_t bytes_of(const torch::Tensor& tensor) { return static_cast<uint64_t>(tensor.numel()) * tensor.element_size(); }
}  // namespace

WorkHandle Communicator::all_reduce(torch::Tensor& tensor, const AllReduceOptions& options) {
  check_tensor(CommOp::kAllReduce, tensor, "tensor");
  if (options.op == ReduceOp::kAvg && !is_floating_dtype(tensor.scalar_type())) {
    fail(CommOp::kAllReduce, "avg needs a floating tensor, got " + std::string(c10::toString(tensor.scalar_type())));
  }
  const uint64_t n = size();
  const uint64_t moved = 2 * bytes_of(tensor) * (n - 1) / n;
  count(CommOp::kAllReduce, moved, moved);
  return do_all_reduce(tensor, options.op, resolve(options.timeout), next_sequence());
}

WorkHandle Communicator::reduce_scatter(const torch::Tensor& input, torch::Tensor& output,
                                        const ReduceScatterOptions& options) {
  check_tensor(CommOp::kReduceScatter, input, "input");
  check_tensor(CommOp::kReduceScatter, output, "output");
  if (input.scalar_type() != output.scalar_type()) fail(CommOp::kReduceScatter, "input and output dtypes differ");
  if (input.device() != output.device()) fail(CommOp::kReduceScatter, "input and output are on different devices");
  if (input.numel() != output.numel() * size()) {
    fail(CommOp::kReduceScatter, "input has " + std::to_string(input.numel()) + " elements; equal shards need " +
                                     std::to_string(size()) + " x output (" + std::to_string(output.numel()) +
                                     "); pad the flat buffer with padded_shards()");
  }
  if (options.op == ReduceOp::kAvg && !is_floating_dtype(input.scalar_type())) {
    fail(CommOp::kReduceScatter, "avg needs a floating tensor");
  }
  const uint64_t moved = bytes_of(output) * (size() - 1);
  count(CommOp::kReduceScatter, moved, moved);
  return do_reduce_scatter(input, output, options.op, resolve(options.timeout), next_sequence());
}

WorkHandle Communicator::all_gather(const torch::Tensor& input, torch::Tensor& output,
                                    const AllGatherOptions& options) {
  check_tensor(CommOp::kAllGather, input, "input");
  check_tensor(CommOp::kAllGather, output, "output");
  if (input.scalar_type() != output.scalar_type()) fail(CommOp::kAllGather, "input and output dtypes differ");
  if (input.device() != output.device()) fail(CommOp::kAllGather, "input and output are on different devices");
  if (output.numel() != input.numel() * size()) {
    fail(CommOp::kAllGather, "output has " + std::to_string(output.numel()) + " elements; it needs " +
                                 std::to_string(size()) + " x input (" + std::to_string(input.numel()) + ")");
  }
  const uint64_t moved = bytes_of(input) * (size() - 1);
  count(CommOp::kAllGather, moved, moved);
  return do_all_gather(input, output, resolve(options.timeout), next_sequence());
}

WorkHandle Communicator::broadcast(torch::Tensor& tensor, const BroadcastOptions& options) {
  check_tensor(CommOp::kBroadcast, tensor, "tensor");
  check_peer(CommOp::kBroadcast, options.root);
  const uint64_t bytes = bytes_of(tensor);
  if (rank() == options.root) {
    count(CommOp::kBroadcast, bytes * (size() - 1), 0);
  } else {
    count(CommOp::kBroadcast, 0, bytes);
  }
  return do_broadcast(tensor, options.root, resolve(options.timeout), next_sequence());
}

WorkHandle Communicator::send(const torch::Tensor& tensor, const PointToPointOptions& options) {
  check_tensor(CommOp::kSend, tensor, "tensor");
  check_peer(CommOp::kSend, options.peer);
  count(CommOp::kSend, bytes_of(tensor), 0);
  torch::Tensor none;
  return do_send_recv(tensor, options.peer, none, -1, options.tag, resolve(options.timeout));
}

WorkHandle Communicator::recv(torch::Tensor& tensor, const PointToPointOptions& options) {
  check_tensor(CommOp::kRecv, tensor, "tensor");
  check_peer(CommOp::kRecv, options.peer);
  count(CommOp::kRecv, 0, bytes_of(tensor));
  return do_send_recv(torch::Tensor(), -1, tensor, options.peer, options.tag, resolve(options.timeout));
}

WorkHandle Communicator::send_recv(const torch::Tensor& to_send, int destination, torch::Tensor& to_receive,
                                   int source, const PointToPointOptions& options) {
  check_tensor(CommOp::kSend, to_send, "to_send");
  check_tensor(CommOp::kRecv, to_receive, "to_receive");
  check_peer(CommOp::kSend, destination);
  check_peer(CommOp::kRecv, source);
  count(CommOp::kSend, bytes_of(to_send), 0);
  count(CommOp::kRecv, 0, bytes_of(to_receive));
  return do_send_recv(to_send, destination, to_receive, source, options.tag, resolve(options.timeout));
}

WorkHandle Communicator::barrier(const BarrierOptions& options) {
  count(CommOp::kBarrier, 0, 0);
  return do_barrier(resolve(options.timeout), next_sequence());
}

std::unique_ptr<Communicator> Communicator::split(const SplitOptions& options) {
  if (options.color < SplitOptions::kNoGroup) {
    fail(CommOp::kSplit, "colour " + std::to_string(options.color) + " is negative (use SplitOptions::kNoGroup)");
  }
  CommunicatorOptions child = options_;
  child.name = options_.name + "/" + (options.name.empty() ? "color" + std::to_string(options.color) : options.name);
  count(CommOp::kSplit, 0, 0);
  return do_split(options.color, options.key, std::move(child), options_.timeout, next_sequence());
}

}  // namespace n3rlhf
