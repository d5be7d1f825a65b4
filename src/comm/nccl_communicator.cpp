// nccl_communicator.cpp: NCCL set-up over MPI, the one private launch helper every operation
// goes through, stream/event ordering, and stuck-collective handling.
#include "comm/nccl_communicator.hpp"

#include <nccl.h>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <list>
#include <mutex>
#include <thread>

#include "comm/failure_relay.hpp"
#include "comm/mpi_communicator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace n3rlhf {

namespace {

ncclDataType_t nccl_datatype(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat64: return ncclFloat64;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kFloat16: return ncclFloat16;
    case torch::kInt64: return ncclInt64;
    case torch::kInt32: return ncclInt32;
    case torch::kInt8: return ncclInt8;
    case torch::kUInt8: return ncclUint8;
    default: return ncclFloat32;
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// Past the deadline, a waiting host reports first; the watchdog steps in only after this much
// more, for a rank whose host is stuck elsewhere (in a CUDA sync behind the collective).
constexpr auto kWatchdogGrace = std::chrono::seconds(5);

}  // namespace

class NcclWork;

struct NcclState {
  std::unique_ptr<MpiGroup> group;  // bootstrap, side channel, names
  ncclComm_t comm = nullptr;
  int device = 0;
  std::optional<c10::cuda::CUDAStream> stream;
  std::atomic<bool> aborted{false};
  std::mutex in_flight_mutex;
  std::list<std::weak_ptr<NcclWork>> in_flight;
  int poller = 0;

  void abort() {
    bool expected = false;
    if (aborted.compare_exchange_strong(expected, true) && comm != nullptr) ncclCommAbort(comm);
  }
  [[noreturn]] void fail_nccl(CommOp op, const char* call, ncclResult_t result) const {
    throw TrainingError(ErrorCode::kDistributedSyncFailure,
                        std::string(comm_op_name(op)) + " on group '" + group->name + "': " + call +
                            " failed: " + ncclGetErrorString(result),
                        {{"operation", comm_op_name(op)}, {"group", group->name}, {"backend", "nccl"}});
  }
  void watch();  // on the watchdog thread
  // A peer's announced failure or NCCL's asynchronous error, with collectives in flight: the
  // group is marked unusable and NCCL aborted (watchdog thread).
  bool abort_on_peer_failure(bool work_in_flight);
  // On the caller's thread: the failed peer's own error when one was announced, else RLHF014 for
  // a group that is unusable. Nothing when neither.
  void throw_if_failed(CommOp op) const {
    group->throw_if_peer_failed();
    group->check_usable(op);
  }
};

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, CommOp op, uint64_t sequence, std::vector<int> peers, CommTimeout timeout,
           std::vector<torch::Tensor> tensors)
      : state_(std::move(state)),
        op_(op),
        sequence_(sequence),
        peers_(std::move(peers)),
        timeout_(timeout),
        deadline_(std::chrono::steady_clock::now() + timeout),
        tensors_(std::move(tensors)) {}

  at::cuda::CUDAEvent& done() { return done_; }

  void wait() override {
    // A peer that failed will never come: its error, not a timeout (and not a wait on a stream
    // whose collective NCCL aborted).
    state_->throw_if_failed(op_);
    if (!is_completed() && std::chrono::steady_clock::now() >= deadline_) report_timeout();
    done_.block(c10::cuda::getCurrentCUDAStream(state_->device));
  }

  bool wait_for(CommTimeout timeout) override {
    const auto until = std::min(deadline_, std::chrono::steady_clock::now() + timeout);
    while (!is_completed()) {
      if (std::chrono::steady_clock::now() >= until) {
        if (until >= deadline_) report_timeout();
        return false;
      }
      state_->throw_if_failed(op_);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return true;
  }

  bool is_completed() override {
    if (state_->aborted.load()) state_->throw_if_failed(op_);
    return done_.query();
  }
  bool is_blocking() const override { return false; }
  CommOp operation() const override { return op_; }

  // True when the watchdog should act: overdue by more than the grace, and nobody reported.
  bool overdue() {
    return !reported_.load() && std::chrono::steady_clock::now() >= deadline_ + kWatchdogGrace && !done_.query();
  }

  [[noreturn]] void report_timeout() {
    reported_.store(true);
    try {
      state_->group->fail_timeout(op_, sequence_, timeout_, peers_);
    } catch (...) {
      // The GPU would otherwise spin in the collective for ever, holding the compute stream.
      state_->abort();
      throw;
    }
  }

 private:
  std::shared_ptr<NcclState> state_;
  CommOp op_;
  uint64_t sequence_;
  std::vector<int> peers_;
  CommTimeout timeout_;
  std::chrono::steady_clock::time_point deadline_;
  std::vector<torch::Tensor> tensors_;  // kept until the handle dies; the allocator knows the stream
  at::cuda::CUDAEvent done_;
  std::atomic<bool> reported_{false};
};

bool NcclState::abort_on_peer_failure(bool work_in_flight) {
  if (aborted.load() || comm == nullptr) return aborted.load();
  std::string why;
  if (group->failure_relay != nullptr) {
    if (const std::optional<PeerFailure> failure = group->failure_relay->received()) {
      why = "rank " + std::to_string(failure->rank) + " failed";
    }
  }
  if (why.empty()) {
    // NCCL's own finding (a peer's connection lost, a remote error): fatal for the communicator.
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
      const char* detail = ncclGetLastError(comm);
      why = std::string("NCCL reported an asynchronous error: ") + ncclGetErrorString(async) +
            (detail != nullptr && *detail != '\0' ? std::string(" (") + detail + ")" : "");
      work_in_flight = true;  // the communicator is unusable whether or not anything waits on it
    }
  }
  // With nothing in flight the next operation finds the failure on the caller's thread itself.
  if (why.empty() || !work_in_flight) return false;
  group->mark_broken(why);
  spdlog::error("NCCL communicator of group '{}' aborted: {}", group->name, why);
  abort();
  return true;
}

void NcclState::watch() {
  std::shared_ptr<NcclWork> stuck;
  bool work_in_flight = false;
  {
    std::lock_guard<std::mutex> lock(in_flight_mutex);
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      std::shared_ptr<NcclWork> work = it->lock();
      if (!work || work->done().query()) {
        it = in_flight.erase(it);
        continue;
      }
      work_in_flight = true;
      if (!stuck && work->overdue()) stuck = work;
      ++it;
    }
  }
  // A failed peer never arrives: the kernels waiting for it spin until NCCL is aborted, and a host
  // blocked behind them (in a CUDA sync) returns only then, to throw the peer's error.
  if (abort_on_peer_failure(work_in_flight)) return;
  if (!stuck || aborted.load()) return;
  // The host is not waiting on this collective (or it would have reported); it may be blocked
  // behind it in a CUDA call. Report from a thread of its own, so that this watchdog keeps
  // answering the other ranks' queries, then end the job as c10d does.
  std::thread([stuck] {
    try {
      stuck->report_timeout();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "n3rlhf: %s\n", error.what());
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));
    MPI_Abort(MPI_COMM_WORLD, static_cast<int>(ErrorCode::kDistributedSyncFailure));
  }).detach();
}

NcclCommunicator::NcclCommunicator(MPI_Comm comm, CommunicatorOptions options, int device_index,
                                   std::shared_ptr<ArrivalWatchdog> watchdog)
    : Communicator(options), state_(std::make_shared<NcclState>()) {
  state_->group = std::make_unique<MpiGroup>(comm, options.name, "nccl", std::move(watchdog));
  state_->device = device_index;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index));
  ncclUniqueId id;
  if (state_->group->rank == 0) {
    const ncclResult_t result = ncclGetUniqueId(&id);
    if (result != ncclSuccess) state_->fail_nccl(CommOp::kSplit, "ncclGetUniqueId", result);
  }
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, state_->group->comm);
  const ncclResult_t result = ncclCommInitRank(&state_->comm, state_->group->size, id, state_->group->rank);
  if (result != ncclSuccess) state_->fail_nccl(CommOp::kSplit, "ncclCommInitRank", result);
  // High priority: communication should not queue behind the compute it overlaps with.
  state_->stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, static_cast<c10::DeviceIndex>(device_index));
  std::weak_ptr<NcclState> weak = state_;
  state_->poller = state_->group->watchdog->add_poller([weak] {
    if (auto state = weak.lock()) state->watch();
  });
}

NcclCommunicator::~NcclCommunicator() {
  state_->group->watchdog->remove_poller(state_->poller);
  if (state_->comm != nullptr) {
    if (state_->aborted.load()) {
      // ncclCommAbort already freed it.
    } else {
      ncclCommDestroy(state_->comm);
    }
  }
}

void NcclCommunicator::set_failure_relay(FailureRelay* relay) { state_->group->failure_relay = relay; }

std::unique_ptr<NcclCommunicator> NcclCommunicator::world(CommunicatorOptions options, int device_index) {
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  return std::make_unique<NcclCommunicator>(comm, std::move(options), device_index);
}

int NcclCommunicator::rank() const { return state_->group->rank; }
int NcclCommunicator::size() const { return state_->group->size; }
int NcclCommunicator::world_rank_of(int group_rank) const { return state_->group->world_ranks.at(group_rank); }

template <typename Launch>
WorkHandle NcclCommunicator::launch(CommOp op, uint64_t sequence, std::vector<int> peers, CommTimeout timeout,
                                    std::vector<torch::Tensor> tensors, Launch&& call) {
  state_->throw_if_failed(op);
  for (const torch::Tensor& tensor : tensors) {
    if (!tensor.is_cuda() || tensor.get_device() != state_->device) {
      fail(op, "NCCL needs tensors on cuda:" + std::to_string(state_->device) + ", got " + tensor.device().str());
    }
  }
  if (sequence != 0) state_->group->arrivals->entered(sequence);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
  const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(state_->device);
  const c10::cuda::CUDAStream comm_stream = *state_->stream;
  // The inputs are written by kernels queued on the compute stream: start after them.
  at::cuda::CUDAEvent inputs_ready;
  inputs_ready.record(compute);
  inputs_ready.block(comm_stream);
  // The caching allocator must not hand these blocks out again until the comm stream is done.
  for (const torch::Tensor& tensor : tensors) {
    if (tensor.numel() > 0) c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), comm_stream);
  }
  auto work = std::make_shared<NcclWork>(state_, op, sequence, std::move(peers), timeout, std::move(tensors));
  const ncclResult_t result = call(comm_stream.stream());
  if (result != ncclSuccess) state_->fail_nccl(op, "NCCL call", result);
  work->done().record(comm_stream);
  {
    std::lock_guard<std::mutex> lock(state_->in_flight_mutex);
    state_->in_flight.push_back(work);
  }
  return work;
}

WorkHandle NcclCommunicator::do_all_reduce(torch::Tensor& tensor, ReduceOp op, CommTimeout timeout, uint64_t sequence) {
  ncclComm_t comm = state_->comm;
  return launch(CommOp::kAllReduce, sequence, {}, timeout, {tensor}, [&](cudaStream_t stream) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_datatype(tensor.scalar_type()),
                         nccl_op(op), comm, stream);
  });
}

WorkHandle NcclCommunicator::do_reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op,
                                               CommTimeout timeout, uint64_t sequence) {
  ncclComm_t comm = state_->comm;
  return launch(CommOp::kReduceScatter, sequence, {}, timeout, {input, output}, [&](cudaStream_t stream) {
    return ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), nccl_datatype(input.scalar_type()),
                             nccl_op(op), comm, stream);
  });
}

WorkHandle NcclCommunicator::do_all_gather(const torch::Tensor& input, torch::Tensor& output, CommTimeout timeout,
                                           uint64_t sequence) {
  ncclComm_t comm = state_->comm;
  return launch(CommOp::kAllGather, sequence, {}, timeout, {input, output}, [&](cudaStream_t stream) {
    return ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(), nccl_datatype(input.scalar_type()), comm,
                         stream);
  });
}

WorkHandle NcclCommunicator::do_broadcast(torch::Tensor& tensor, int root, CommTimeout timeout, uint64_t sequence) {
  ncclComm_t comm = state_->comm;
  return launch(CommOp::kBroadcast, sequence, {}, timeout, {tensor}, [&](cudaStream_t stream) {
    return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), nccl_datatype(tensor.scalar_type()),
                         root, comm, stream);
  });
}

WorkHandle NcclCommunicator::do_send_recv(const torch::Tensor& to_send, int destination, torch::Tensor& to_receive,
                                          int source, int, CommTimeout timeout) {
  // NCCL has no tags: messages between two ranks match in issue order.
  ncclComm_t comm = state_->comm;
  std::vector<torch::Tensor> tensors;
  std::vector<int> peers;
  if (to_send.defined()) {
    tensors.push_back(to_send);
    peers.push_back(destination);
  }
  if (to_receive.defined()) {
    tensors.push_back(to_receive);
    if (source != destination || !to_send.defined()) peers.push_back(source);
  }
  const CommOp op = to_send.defined() ? CommOp::kSend : CommOp::kRecv;
  return launch(op, 0, peers, timeout, tensors, [&](cudaStream_t stream) {
    // Grouped, so that a ring of simultaneous sends and receives cannot deadlock.
    ncclResult_t result = ncclGroupStart();
    if (result == ncclSuccess && to_send.defined()) {
      result = ncclSend(to_send.data_ptr(), to_send.numel(), nccl_datatype(to_send.scalar_type()), destination, comm,
                        stream);
    }
    if (result == ncclSuccess && to_receive.defined()) {
      result = ncclRecv(to_receive.data_ptr(), to_receive.numel(), nccl_datatype(to_receive.scalar_type()), source,
                        comm, stream);
    }
    const ncclResult_t ended = ncclGroupEnd();
    return result != ncclSuccess ? result : ended;
  });
}

WorkHandle NcclCommunicator::do_barrier(CommTimeout timeout, uint64_t sequence) {
  // A one-element all-reduce on the comm stream, as c10d does: it orders the GPU work too.
  torch::Tensor token =
      torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA, state_->device));
  ncclComm_t comm = state_->comm;
  return launch(CommOp::kBarrier, sequence, {}, timeout, {token}, [&](cudaStream_t stream) {
    return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm, stream);
  });
}

std::unique_ptr<Communicator> NcclCommunicator::do_split(int color, int key, CommunicatorOptions child,
                                                         CommTimeout timeout, uint64_t sequence) {
  MpiGroup& group = *state_->group;
  state_->throw_if_failed(CommOp::kSplit);
  group.arrivals->entered(sequence);
  // Everyone must be here before the blocking MPI_Comm_split; an Ibarrier under the timeout says so.
  MPI_Request request;
  MPI_Ibarrier(group.comm, &request);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int done = 0; !done;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done && std::chrono::steady_clock::now() >= deadline) group.fail_timeout(CommOp::kSplit, sequence, timeout, {});
    if (!done) {
      group.throw_if_peer_failed();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(group.comm, color == SplitOptions::kNoGroup ? MPI_UNDEFINED : color, key, &sub);
  if (sub == MPI_COMM_NULL) return nullptr;
  auto split = std::make_unique<NcclCommunicator>(sub, std::move(child), state_->device, group.watchdog);
  split->set_failure_relay(group.failure_relay);
  return split;
}

}  // namespace n3rlhf
