// mpi_environment.hpp: MPI start-up and shutdown for the launched binaries. Under mpirun (or
// srun with PMIx) it initialises MPI and finds each rank's node-local rank through a
// shared-memory split; started by hand it is a world of one and MPI is never touched.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace n3rlhf {

class FailureRelay;

class MpiEnvironment {
 public:
  MpiEnvironment(int* argc, char*** argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  // True when a launcher (mpirun, srun, an MPIJob) started this process.
  static bool launched_by_mpi_launcher();

  bool initialized() const { return initialized_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& hostname() const { return hostname_; }

  // Where ranks tell each other of a failure (null for a world of one); see failure_relay.hpp.
  FailureRelay* failure_relay() const { return failure_relay_.get(); }
  // Tells every other rank that this one failed, and why, so that they stop waiting for it and
  // report its error. Returns at once; does nothing in a world of one.
  void announce_failure(ErrorCode code, const std::string& description) const;

  // Every rank's text, in rank order, on rank 0 (other ranks get an empty vector).
  std::vector<std::string> gather_to_root(const std::string& text) const;
  // Agrees on one exit status: the largest of all ranks' (so one failing rank fails the job).
  // A rank with a non-zero status waits at most `failed_rank_wait` for the others: a rank stuck
  // elsewhere (in a collective, in its own code) must not hold the job, so after that it ends
  // the whole job with MPI_Abort and its status. A rank with status 0 waits as long as it takes.
  int agree_on_exit_status(int status, std::chrono::milliseconds failed_rank_wait = std::chrono::seconds(60)) const;
  // How long a failed rank waits in agree_on_exit_status for a job whose collectives time out
  // after `collective_timeout`: the others are either told of the failure at once or time out
  // themselves within that, so twice of it (5 s to 60 s) is enough.
  static std::chrono::milliseconds exit_wait_for(std::chrono::milliseconds collective_timeout);

 private:
  bool initialized_ = false;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  std::string hostname_;
  std::unique_ptr<FailureRelay> failure_relay_;
};

}  // namespace n3rlhf
