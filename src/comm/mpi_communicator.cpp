// mpi_communicator.cpp: MPI collectives behind Work handles, host staging, f32 accumulation of
// 16-bit floats, and the timeout report.
#include "comm/mpi_communicator.hpp"

#include <climits>
#include <functional>
#include <sstream>
#include <thread>

#include "comm/failure_relay.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace n3rlhf {

namespace {

// How long a timed-out rank waits for the others to say where they are.
CommTimeout query_window(CommTimeout timeout) {
  return std::clamp<CommTimeout>(timeout / 4, std::chrono::milliseconds(200), std::chrono::milliseconds(2000));
}

bool is_16bit_float(torch::ScalarType dtype) { return dtype == torch::kBFloat16 || dtype == torch::kFloat16; }

// 16-bit floats travel as raw 16-bit words; they are never reduced in that form.
MPI_Datatype mpi_datatype(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return MPI_FLOAT;
    case torch::kFloat64: return MPI_DOUBLE;
    case torch::kInt64: return MPI_INT64_T;
    case torch::kInt32: return MPI_INT32_T;
    case torch::kInt8: return MPI_INT8_T;
    case torch::kUInt8: return MPI_UINT8_T;
    case torch::kBFloat16:
    case torch::kFloat16: return MPI_UINT16_T;
    default: return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

// A host tensor MPI may read: the tensor itself when it is already a CPU tensor of that dtype,
// otherwise a copy (pinned when it comes from a GPU, so the copy is a straight DMA).
torch::Tensor host_view(const torch::Tensor& tensor, torch::ScalarType dtype) {
  if (tensor.is_cpu() && tensor.scalar_type() == dtype) return tensor;
  torch::Tensor host =
      torch::empty(tensor.sizes(), torch::TensorOptions().dtype(dtype).pinned_memory(tensor.is_cuda()));
  host.copy_(tensor);
  return host;
}

// A host tensor MPI may write, to be copied back into `tensor` when the operation ends.
torch::Tensor host_buffer(const torch::Tensor& tensor, torch::ScalarType dtype) {
  if (tensor.is_cpu() && tensor.scalar_type() == dtype) return tensor;
  return torch::empty(tensor.sizes(), torch::TensorOptions().dtype(dtype).pinned_memory(tensor.is_cuda()));
}

torch::ScalarType reduction_dtype(torch::ScalarType dtype) { return is_16bit_float(dtype) ? torch::kFloat32 : dtype; }

class MpiWork : public Work {
 public:
  MpiWork(std::shared_ptr<MpiGroup> group, CommOp op, uint64_t sequence, std::vector<int> peers, CommTimeout timeout)
      : group_(std::move(group)),
        op_(op),
        sequence_(sequence),
        peers_(std::move(peers)),
        timeout_(timeout),
        deadline_(std::chrono::steady_clock::now() + timeout) {}

  ~MpiWork() override {
    if (completed_ || requests_.empty()) return;
    if (!group_->broken()) {
      try {
        wait();
        return;
      } catch (const std::exception& error) {
        spdlog::warn("{} dropped before it finished: {}", comm_op_name(op_), error.what());
      }
    }
    // MPI may still write into these buffers; they must outlive the requests, which a broken
    // group never completes. The job is about to stop, so keeping them is the safe choice.
    new std::vector<torch::Tensor>(std::move(buffers_));
  }

  // The operation's MPI requests, the buffers MPI uses until they complete, and what to do
  // once all completed (copy back, divide for avg).
  void add_request(MPI_Request request) { requests_.push_back(request); }
  void keep(const torch::Tensor& tensor) { buffers_.push_back(tensor); }
  void on_finish(std::function<void()> finish) { finish_ = std::move(finish); }

  void wait() override {
    if (!wait_until(deadline_)) group_->fail_timeout(op_, sequence_, timeout_, peers_);
  }

  bool wait_for(CommTimeout timeout) override {
    const auto until = std::min(deadline_, std::chrono::steady_clock::now() + timeout);
    if (wait_until(until)) return true;
    if (std::chrono::steady_clock::now() >= deadline_) group_->fail_timeout(op_, sequence_, timeout_, peers_);
    return false;
  }

  bool is_completed() override { return poll(); }
  bool is_blocking() const override { return true; }
  CommOp operation() const override { return op_; }

 private:
  bool poll() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (completed_) return true;
    int done = 0;
    const int code =
        MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE);
    if (code != MPI_SUCCESS) group_->fail_call(op_, "MPI_Testall", code);
    if (!done) return false;
    if (finish_) finish_();
    completed_ = true;
    buffers_.clear();
    return true;
  }

  bool wait_until(std::chrono::steady_clock::time_point until) {
    // Spin briefly for small messages, then back off so that oversubscribed ranks (several per
    // core in tests) leave the core to the peers they are waiting for.
    // Once it backs off, a wait also looks for a peer's announced failure: a rank that failed
    // in its own code will never come, and its error is the one to report.
    for (int spins = 0;; ++spins) {
      if (poll()) return true;
      if (std::chrono::steady_clock::now() >= until) return false;
      if (spins > 64) {
        group_->throw_if_peer_failed();
        std::this_thread::sleep_for(std::chrono::microseconds(spins > 1024 ? 200 : 20));
      }
    }
  }

  std::shared_ptr<MpiGroup> group_;
  CommOp op_;
  uint64_t sequence_;
  std::vector<int> peers_;  // point to point: the other ranks; collectives: empty
  CommTimeout timeout_;
  std::chrono::steady_clock::time_point deadline_;
  std::mutex mutex_;
  std::vector<MPI_Request> requests_;
  std::vector<torch::Tensor> buffers_;
  std::function<void()> finish_;
  bool completed_ = false;
};

int checked_count(const MpiGroup& group, CommOp op, int64_t numel) {
  if (numel > INT_MAX) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure,
                        std::string(comm_op_name(op)) + " on group '" + group.name + "': " + std::to_string(numel) +
                            " elements exceed one MPI call; split the buffer into buckets",
                        {{"operation", comm_op_name(op)}, {"group", group.name}});
  }
  return static_cast<int>(numel);
}

std::vector<int> world_ranks_of(MPI_Comm comm, int size) {
  MPI_Group group;
  MPI_Group world;
  MPI_Comm_group(comm, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> ranks(size);
  std::vector<int> world_ranks(size);
  for (int i = 0; i < size; ++i) ranks[i] = i;
  MPI_Group_translate_ranks(group, size, ranks.data(), world, world_ranks.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  return world_ranks;
}

}  // namespace

// ---- MpiGroup ----

MpiGroup::MpiGroup(MPI_Comm owned_comm, std::string group_name, std::string backend_name,
                   std::shared_ptr<ArrivalWatchdog> shared_watchdog)
    : comm(owned_comm), name(std::move(group_name)), backend(std::move(backend_name)) {
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  world_ranks = world_ranks_of(comm, size);
  watchdog = shared_watchdog ? std::move(shared_watchdog) : std::make_shared<ArrivalWatchdog>();
  arrivals = std::make_unique<ArrivalChannel>(comm, watchdog);
}

MpiGroup::~MpiGroup() {
  arrivals.reset();
  MPI_Comm_free(&comm);
}

std::string MpiGroup::describe_rank(int group_rank) const {
  const int world = world_ranks.at(group_rank);
  if (world == group_rank) return "rank " + std::to_string(group_rank);
  return "rank " + std::to_string(group_rank) + " (world rank " + std::to_string(world) + ")";
}

void MpiGroup::check_usable(CommOp op) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (broken_.empty()) return;
  throw TrainingError(ErrorCode::kDistributedSyncFailure,
                      std::string(comm_op_name(op)) + " on group '" + name +
                          "' refused: the group is unusable after an earlier failure: " + broken_,
                      {{"operation", comm_op_name(op)}, {"group", name}});
}

bool MpiGroup::broken() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !broken_.empty();
}

void MpiGroup::throw_if_peer_failed() {
  if (failure_relay == nullptr) return;
  const std::optional<PeerFailure> failure = failure_relay->received();
  if (!failure) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (broken_.empty()) broken_ = "rank " + std::to_string(failure->rank) + " failed";
  }
  failure_relay->throw_if_peer_failed();
}

void MpiGroup::mark_broken(const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (broken_.empty()) broken_ = why;
}

void MpiGroup::fail_call(CommOp op, const char* call, int code) const {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw TrainingError(ErrorCode::kDistributedSyncFailure,
                      std::string(comm_op_name(op)) + " on group '" + name + "': " + call + " failed: " + text,
                      {{"operation", comm_op_name(op)}, {"group", name}, {"backend", backend}});
}

void MpiGroup::fail_timeout(CommOp op, uint64_t sequence, CommTimeout timeout, const std::vector<int>& peers) {
  check_usable(op);  // a second handle of a broken group: the first report says it all
  std::vector<int> absent;
  std::string what;
  const bool collective = peers.empty();
  if (collective) {
    absent = arrivals->ranks_not_at(sequence, query_window(timeout));
  } else {
    // Point to point: the peers are the ones that did not match; say whether they still answer.
    absent = peers;
  }
  std::ostringstream ranks;
  std::ostringstream world;
  for (size_t i = 0; i < absent.size(); ++i) {
    ranks << (i ? "," : "") << absent[i];
    world << (i ? "," : "") << world_ranks.at(absent[i]);
  }
  std::ostringstream message;
  const double seconds = std::chrono::duration<double>(timeout).count();
  message << comm_op_name(op);
  if (collective) message << " #" << sequence;
  message << " on group '" << name << "' (" << backend << ", " << size << " ranks) did not finish within " << seconds
          << " s";
  if (absent.empty()) {
    message << "; every rank entered it, so the transfer itself stalled";
  } else {
    message << "; " << (collective ? "ranks that did not arrive: " : "peer that did not match it: ");
    for (size_t i = 0; i < absent.size(); ++i) message << (i ? ", " : "") << describe_rank(absent[i]);
    if (!collective) {
      const std::vector<int> silent = arrivals->unresponsive(peers, query_window(timeout));
      if (!silent.empty()) message << " (it does not answer at all: hung or dead)";
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    broken_ = message.str();
  }
  spdlog::error("[RLHF014] {}", message.str());
  throw TrainingError(ErrorCode::kDistributedSyncFailure, message.str(),
                      {{"operation", comm_op_name(op)},
                       {"group", name},
                       {"sequence", std::to_string(sequence)},
                       {"timeout_s", std::to_string(seconds)},
                       {"missing_ranks", ranks.str()},
                       {"missing_world_ranks", world.str()},
                       {"rank", std::to_string(rank)}});
}

// ---- MpiCommunicator ----

MpiCommunicator::MpiCommunicator(MPI_Comm comm, CommunicatorOptions options, std::shared_ptr<ArrivalWatchdog> watchdog)
    : Communicator(options), group_(std::make_shared<MpiGroup>(comm, options.name, "mpi", std::move(watchdog))) {}

void MpiCommunicator::set_failure_relay(FailureRelay* relay) { group_->failure_relay = relay; }

MpiCommunicator::~MpiCommunicator() = default;

std::unique_ptr<MpiCommunicator> MpiCommunicator::world(CommunicatorOptions options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             "the mpi communicator needs MPI: start the program with mpirun (or srun)");
  }
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  return std::make_unique<MpiCommunicator>(comm, std::move(options));
}

WorkHandle MpiCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op, CommTimeout timeout, uint64_t sequence) {
  group_->check_usable(CommOp::kAllReduce);
  group_->arrivals->entered(sequence);
  auto work = std::make_shared<MpiWork>(group_, CommOp::kAllReduce, sequence, std::vector<int>{}, timeout);
  const torch::ScalarType dtype = reduction_dtype(tensor.scalar_type());
  torch::Tensor host = host_view(tensor, dtype);
  MPI_Request request;
  const int code = MPI_Iallreduce(MPI_IN_PLACE, host.data_ptr(), checked_count(*group_, CommOp::kAllReduce, host.numel()),
                                  mpi_datatype(dtype), mpi_op(op), group_->comm, &request);
  if (code != MPI_SUCCESS) group_->fail_call(CommOp::kAllReduce, "MPI_Iallreduce", code);
  work->add_request(request);
  work->keep(host);
  const int size = this->size();
  work->on_finish([tensor, host, op, size]() mutable {
    if (op == ReduceOp::kAvg) host.div_(size);
    if (!host.is_same(tensor)) tensor.copy_(host);
  });
  return work;
}

WorkHandle MpiCommunicator::do_reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op,
                                              CommTimeout timeout, uint64_t sequence) {
  group_->check_usable(CommOp::kReduceScatter);
  group_->arrivals->entered(sequence);
  auto work = std::make_shared<MpiWork>(group_, CommOp::kReduceScatter, sequence, std::vector<int>{}, timeout);
  const torch::ScalarType dtype = reduction_dtype(input.scalar_type());
  torch::Tensor host_in = host_view(input, dtype);
  torch::Tensor host_out = host_buffer(output, dtype);
  MPI_Request request;
  const int code = MPI_Ireduce_scatter_block(host_in.data_ptr(), host_out.data_ptr(),
                                             checked_count(*group_, CommOp::kReduceScatter, host_out.numel()),
                                             mpi_datatype(dtype), mpi_op(op), group_->comm, &request);
  if (code != MPI_SUCCESS) group_->fail_call(CommOp::kReduceScatter, "MPI_Ireduce_scatter_block", code);
  work->add_request(request);
  work->keep(host_in);
  work->keep(host_out);
  const int size = this->size();
  work->on_finish([output, host_out, op, size]() mutable {
    if (op == ReduceOp::kAvg) host_out.div_(size);
    if (!host_out.is_same(output)) output.copy_(host_out);
  });
  return work;
}

WorkHandle MpiCommunicator::do_all_gather(const torch::Tensor& input, torch::Tensor& output, CommTimeout timeout,
                                          uint64_t sequence) {
  group_->check_usable(CommOp::kAllGather);
  group_->arrivals->entered(sequence);
  auto work = std::make_shared<MpiWork>(group_, CommOp::kAllGather, sequence, std::vector<int>{}, timeout);
  const torch::ScalarType dtype = input.scalar_type();
  torch::Tensor host_in = host_view(input, dtype);
  torch::Tensor host_out = host_buffer(output, dtype);
  const int count = checked_count(*group_, CommOp::kAllGather, host_in.numel());
  checked_count(*group_, CommOp::kAllGather, host_out.numel());
  MPI_Request request;
  const int code = MPI_Iallgather(host_in.data_ptr(), count, mpi_datatype(dtype), host_out.data_ptr(), count,
                                  mpi_datatype(dtype), group_->comm, &request);
  if (code != MPI_SUCCESS) group_->fail_call(CommOp::kAllGather, "MPI_Iallgather", code);
  work->add_request(request);
  work->keep(host_in);
  work->keep(host_out);
  work->on_finish([output, host_out]() mutable {
    if (!host_out.is_same(output)) output.copy_(host_out);
  });
  return work;
}

WorkHandle MpiCommunicator::do_broadcast(torch::Tensor& tensor, int root, CommTimeout timeout, uint64_t sequence) {
  group_->check_usable(CommOp::kBroadcast);
  group_->arrivals->entered(sequence);
  auto work = std::make_shared<MpiWork>(group_, CommOp::kBroadcast, sequence, std::vector<int>{}, timeout);
  const torch::ScalarType dtype = tensor.scalar_type();
  torch::Tensor host = rank() == root ? host_view(tensor, dtype) : host_buffer(tensor, dtype);
  MPI_Request request;
  const int code = MPI_Ibcast(host.data_ptr(), checked_count(*group_, CommOp::kBroadcast, host.numel()),
                              mpi_datatype(dtype), root, group_->comm, &request);
  if (code != MPI_SUCCESS) group_->fail_call(CommOp::kBroadcast, "MPI_Ibcast", code);
  work->add_request(request);
  work->keep(host);
  work->on_finish([tensor, host]() mutable {
    if (!host.is_same(tensor)) tensor.copy_(host);
  });
  return work;
}

WorkHandle MpiCommunicator::do_send_recv(const torch::Tensor& to_send, int destination, torch::Tensor& to_receive,
                                         int source, int tag, CommTimeout timeout) {
  const CommOp op = to_send.defined() ? CommOp::kSend : CommOp::kRecv;
  group_->check_usable(op);
  std::vector<int> peers;
  if (to_send.defined()) peers.push_back(destination);
  if (to_receive.defined() && source != destination) peers.push_back(source);
  auto work = std::make_shared<MpiWork>(group_, op, 0, peers, timeout);
  if (to_receive.defined()) {
    torch::Tensor host = host_buffer(to_receive, to_receive.scalar_type());
    MPI_Request request;
    const int code = MPI_Irecv(host.data_ptr(), checked_count(*group_, CommOp::kRecv, host.numel()),
                               mpi_datatype(host.scalar_type()), source, tag, group_->comm, &request);
    if (code != MPI_SUCCESS) group_->fail_call(CommOp::kRecv, "MPI_Irecv", code);
    work->add_request(request);
    work->keep(host);
    work->on_finish([to_receive, host]() mutable {
      if (!host.is_same(to_receive)) to_receive.copy_(host);
    });
  }
  if (to_send.defined()) {
    torch::Tensor host = host_view(to_send, to_send.scalar_type());
    MPI_Request request;
    const int code = MPI_Isend(host.data_ptr(), checked_count(*group_, CommOp::kSend, host.numel()),
                               mpi_datatype(host.scalar_type()), destination, tag, group_->comm, &request);
    if (code != MPI_SUCCESS) group_->fail_call(CommOp::kSend, "MPI_Isend", code);
    work->add_request(request);
    work->keep(host);
  }
  return work;
}

WorkHandle MpiCommunicator::do_barrier(CommTimeout timeout, uint64_t sequence) {
  group_->check_usable(CommOp::kBarrier);
  group_->arrivals->entered(sequence);
  auto work = std::make_shared<MpiWork>(group_, CommOp::kBarrier, sequence, std::vector<int>{}, timeout);
  MPI_Request request;
  const int code = MPI_Ibarrier(group_->comm, &request);
  if (code != MPI_SUCCESS) group_->fail_call(CommOp::kBarrier, "MPI_Ibarrier", code);
  work->add_request(request);
  return work;
}

std::unique_ptr<Communicator> MpiCommunicator::do_split(int color, int key, CommunicatorOptions child,
                                                        CommTimeout timeout, uint64_t sequence) {
  group_->check_usable(CommOp::kSplit);
  group_->arrivals->entered(sequence);
  // MPI_Comm_split blocks with no timeout, so first make sure, under one, that every rank came.
  auto work = std::make_shared<MpiWork>(group_, CommOp::kSplit, sequence, std::vector<int>{}, timeout);
  MPI_Request request;
  const int code = MPI_Ibarrier(group_->comm, &request);
  if (code != MPI_SUCCESS) group_->fail_call(CommOp::kSplit, "MPI_Ibarrier", code);
  work->add_request(request);
  work->wait();
  MPI_Comm sub = MPI_COMM_NULL;
  const int split_code =
      MPI_Comm_split(group_->comm, color == SplitOptions::kNoGroup ? MPI_UNDEFINED : color, key, &sub);
  if (split_code != MPI_SUCCESS) group_->fail_call(CommOp::kSplit, "MPI_Comm_split", split_code);
  if (sub == MPI_COMM_NULL) return nullptr;
  auto split = std::make_unique<MpiCommunicator>(sub, std::move(child), group_->watchdog);
  split->set_failure_relay(group_->failure_relay);
  return split;
}

}  // namespace n3rlhf
