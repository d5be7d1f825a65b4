// local_communicator.cpp: the world-of-one backend.
#include "comm/local_communicator.hpp"

#include "core/error.hpp"

namespace n3rlhf {

LocalCommunicator::LocalCommunicator(CommunicatorOptions options) : Communicator(std::move(options)) {}

WorkHandle LocalCommunicator::do_all_reduce(torch::Tensor&, ReduceOp, CommTimeout, uint64_t) {
  // Sum, max, min and the average of one value are the value itself.
  return std::make_shared<CompletedWork>(CommOp::kAllReduce);
}

WorkHandle LocalCommunicator::do_reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp,
                                                CommTimeout, uint64_t) {
  if (!output.is_same(input)) output.copy_(input.view_as(output));
  return std::make_shared<CompletedWork>(CommOp::kReduceScatter);
}

WorkHandle LocalCommunicator::do_all_gather(const torch::Tensor& input, torch::Tensor& output, CommTimeout,
                                            uint64_t) {
  if (!output.is_same(input)) output.view(-1).copy_(input.view(-1));
  return std::make_shared<CompletedWork>(CommOp::kAllGather);
}

WorkHandle LocalCommunicator::do_broadcast(torch::Tensor&, int, CommTimeout, uint64_t) {
  return std::make_shared<CompletedWork>(CommOp::kBroadcast);
}

// A receive that waits for a later send to self.
struct LocalCommunicator::PendingReceive : Work {
  PendingReceive(torch::Tensor buffer, std::string group, int tag)
      : buffer(std::move(buffer)), group(std::move(group)), tag(tag) {}
  void wait() override {
    // With one rank and this thread blocked, nothing could ever arrive.
    if (!done) {
      throw TrainingError(ErrorCode::kDistributedSyncFailure,
                          "recv on group '" + group + "': waited on a receive from self (tag " + std::to_string(tag) +
                              ") that no send matched; in a world of one it would wait for ever",
                          {{"operation", "recv"}, {"group", group}, {"backend", "local"}});
    }
  }
  bool wait_for(CommTimeout) override { return done; }
  bool is_completed() override { return done; }
  bool is_blocking() const override { return true; }
  CommOp operation() const override { return CommOp::kRecv; }
  bool deliver(const torch::Tensor& message) {
    if (message.numel() != buffer.numel() || message.scalar_type() != buffer.scalar_type()) return false;
    buffer.view(-1).copy_(message.view(-1));
    done = true;
    return true;
  }
  torch::Tensor buffer;
  std::string group;
  int tag;
  bool done = false;
};

WorkHandle LocalCommunicator::do_send_recv(const torch::Tensor& to_send, int, torch::Tensor& to_receive, int,
                                           int tag, CommTimeout) {
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  if (to_send.defined()) {
    auto waiting = pending_.find(tag);
    if (waiting != pending_.end() && !waiting->second.empty()) {
      std::shared_ptr<PendingReceive> receive = waiting->second.front();
      waiting->second.pop_front();
      if (!receive->deliver(to_send)) {
        fail(CommOp::kSend, "the send to self (tag " + std::to_string(tag) + ") does not match the size or dtype of "
                            "the receive posted for it");
      }
    } else {
      mailbox_[tag].push_back(to_send.clone());
    }
  }
  if (!to_receive.defined()) return std::make_shared<CompletedWork>(CommOp::kSend);
  auto receive = std::make_shared<PendingReceive>(to_receive, name(), tag);
  auto box = mailbox_.find(tag);
  if (box == mailbox_.end() || box->second.empty()) {
    pending_[tag].push_back(receive);
    return receive;
  }
  torch::Tensor message = std::move(box->second.front());
  box->second.pop_front();
  if (!receive->deliver(message)) {
    fail(CommOp::kRecv, "the message sent to self has " + std::to_string(message.numel()) + " elements of " +
                            c10::toString(message.scalar_type()) + "; the receive buffer differs");
  }
  return receive;
}

WorkHandle LocalCommunicator::do_barrier(CommTimeout, uint64_t) {
  return std::make_shared<CompletedWork>(CommOp::kBarrier);
}

std::unique_ptr<Communicator> LocalCommunicator::do_split(int color, int, CommunicatorOptions child, CommTimeout,
                                                          uint64_t) {
  if (color == SplitOptions::kNoGroup) return nullptr;
  return std::make_unique<LocalCommunicator>(std::move(child));
}

}  // namespace n3rlhf
