// failure_relay.hpp: FailureRelay, the side channel that tells every rank within milliseconds
// that one rank failed, with that rank's own error. Without it a rank that fails during set-up
// (data preparation, tokenizer or model load) leaves the others waiting in a barrier until the
// collective timeout, which then blames the failed rank with RLHF014 instead of its real error.
//
// Each rank keeps one small receive posted on a duplicate of MPI_COMM_WORLD; a failing rank sends
// its error (code and text, one eager message) to every other rank and never waits for delivery.
// The MPI backend's waits poll the relay and throw the first rank's error as their own.
#pragma once

#include <mpi.h>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace n3rlhf {

struct PeerFailure {
  int rank = -1;  // the world rank that failed
  ErrorCode code = ErrorCode::kDistributedSyncFailure;
  std::string message;  // its error as it described it (cut to fit one message)
};

class FailureRelay {
 public:
  // Duplicates `world` (collective over it) and posts the first receive.
  explicit FailureRelay(MPI_Comm world);
  ~FailureRelay();
  FailureRelay(const FailureRelay&) = delete;
  FailureRelay& operator=(const FailureRelay&) = delete;

  // Sends this rank's failure to every other rank; returns at once. Only the first call of a rank
  // sends, and a rank that learnt of another's failure first stays quiet (its error is an echo).
  void announce(ErrorCode code, const std::string& message);
  // The first failure another rank announced, once it has arrived (polls MPI; any thread).
  std::optional<PeerFailure> received();
  // Throws the failure a peer announced, as this rank's error: the same code, "rank N failed:
  // ...", naming the failed rank in the context. Does nothing while none has arrived.
  void throw_if_peer_failed();

 private:
  static constexpr size_t kMessageBytes = 1024;  // below every transport's eager limit
  using Message = std::array<char, kMessageBytes>;

  std::optional<PeerFailure> poll_locked();

  std::mutex mutex_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  Message incoming_{};
  MPI_Request receive_ = MPI_REQUEST_NULL;
  std::optional<PeerFailure> first_;
  bool announced_ = false;
  std::unique_ptr<Message> outgoing_;
  std::vector<MPI_Request> sends_;
};

}  // namespace n3rlhf
