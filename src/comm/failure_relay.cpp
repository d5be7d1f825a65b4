// failure_relay.cpp: one eager message per peer, a posted receive, and the rethrow.
#include "comm/failure_relay.hpp"

#include <cstdint>
#include <cstring>
#include <string_view>

namespace n3rlhf {

namespace {
constexpr int kFailureTag = 17;
constexpr size_t kHeaderBytes = 2 * sizeof(int32_t);
}  // namespace

FailureRelay::FailureRelay(MPI_Comm world) {
  MPI_Comm_dup(world, &comm_);
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Irecv(incoming_.data(), static_cast<int>(kMessageBytes), MPI_BYTE, MPI_ANY_SOURCE, kFailureTag, comm_, &receive_);
}

FailureRelay::~FailureRelay() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (receive_ != MPI_REQUEST_NULL) {
    MPI_Cancel(&receive_);
    MPI_Wait(&receive_, MPI_STATUS_IGNORE);
  }
  bool delivered = true;
  for (MPI_Request& send : sends_) {
    int done = 0;
    MPI_Test(&send, &done, MPI_STATUS_IGNORE);
    if (!done) {
      MPI_Request_free(&send);  // MPI finishes it on its own; the buffer must outlive it
      delivered = false;
    }
  }
  if (!delivered) outgoing_.release();  // deliberately kept: MPI may still read it
  MPI_Comm_free(&comm_);
}

void FailureRelay::announce(ErrorCode code, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (announced_ || size_ <= 1) return;
  announced_ = true;
  if (poll_locked()) return;  // a peer failed first: this rank's error is its echo
  outgoing_ = std::make_unique<Message>();
  const int32_t header[2] = {rank_, static_cast<int32_t>(code)};
  std::memcpy(outgoing_->data(), header, kHeaderBytes);
  // "[RLHF021] text": the code travels in the header; the text without it.
  std::string_view text = message;
  if (text.size() > 10 && text.substr(0, 5) == "[RLHF" && text.substr(8, 2) == "] ") text.remove_prefix(10);
  const size_t length = std::min(text.size(), kMessageBytes - kHeaderBytes - 1);
  std::memcpy(outgoing_->data() + kHeaderBytes, text.data(), length);
  (*outgoing_)[kHeaderBytes + length] = '\0';
  const int bytes = static_cast<int>(kHeaderBytes + length + 1);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    MPI_Request request = MPI_REQUEST_NULL;
    // One small eager message: it leaves at once, whether or not the peer is alive.
    if (MPI_Isend(outgoing_->data(), bytes, MPI_BYTE, peer, kFailureTag, comm_, &request) == MPI_SUCCESS) {
      sends_.push_back(request);
    }
  }
}

std::optional<PeerFailure> FailureRelay::poll_locked() {
  if (first_ || receive_ == MPI_REQUEST_NULL) return first_;
  int arrived = 0;
  MPI_Status status;
  if (MPI_Test(&receive_, &arrived, &status) != MPI_SUCCESS || !arrived) return std::nullopt;
  receive_ = MPI_REQUEST_NULL;  // the first failure is the one that counts: no new receive
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  PeerFailure failure;
  failure.rank = status.MPI_SOURCE;
  if (count >= static_cast<int>(kHeaderBytes)) {
    int32_t header[2];
    std::memcpy(header, incoming_.data(), kHeaderBytes);
    ErrorCode code = ErrorCode::kDistributedSyncFailure;
    failure.code = parse_error_code(std::to_string(header[1]), &code) ? code : ErrorCode::kDistributedSyncFailure;
    const size_t text_bytes = static_cast<size_t>(count) - kHeaderBytes;
    failure.message.assign(incoming_.data() + kHeaderBytes, strnlen(incoming_.data() + kHeaderBytes, text_bytes));
  }
  first_ = failure;
  return first_;
}

std::optional<PeerFailure> FailureRelay::received() {
  std::lock_guard<std::mutex> lock(mutex_);
  return poll_locked();
}

void FailureRelay::throw_if_peer_failed() {
  const std::optional<PeerFailure> failure = received();
  if (!failure) return;
  throw_error(failure->code, "rank " + std::to_string(failure->rank) + " failed: " + failure->message,
              {{"failed_rank", std::to_string(failure->rank)}, {"rank", std::to_string(rank_)}});
}

}  // namespace n3rlhf
