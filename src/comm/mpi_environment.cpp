// mpi_environment.cpp: MPI_Init_thread/MPI_Finalize, the node-local rank, and small helpers
// the launcher needs before any communicator exists.
#include "comm/mpi_environment.hpp"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "comm/failure_relay.hpp"
#include "core/error.hpp"
#include "core/error_output.hpp"
#include "core/log.hpp"

namespace n3rlhf {

bool MpiEnvironment::launched_by_mpi_launcher() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(variable) != nullptr) return true;
  }
  return false;
}

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) : hostname_(local_hostname()) {
  if (!launched_by_mpi_launcher()) return;
  int provided = 0;
  // MULTIPLE: the communicator's progress thread may call MPI while the main thread computes.
  if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure, "MPI_Init_thread failed");
  }
  initialized_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
  if (world_size_ > 1) failure_relay_ = std::make_unique<FailureRelay>(MPI_COMM_WORLD);
}

MpiEnvironment::~MpiEnvironment() {
  if (!initialized_) return;
  failure_relay_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::vector<std::string> MpiEnvironment::gather_to_root(const std::string& text) const {
  if (!initialized_ || world_size_ == 1) return {text};
  int length = static_cast<int>(text.size());
  std::vector<int> lengths(rank_ == 0 ? world_size_ : 0);
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::vector<int> offsets(lengths.size());
  int total = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    offsets[i] = total;
    total += lengths[i];
  }
  std::string buffer(static_cast<size_t>(total), '\0');
  MPI_Gatherv(text.data(), length, MPI_CHAR, buffer.data(), lengths.data(), offsets.data(), MPI_CHAR, 0,
              MPI_COMM_WORLD);
  std::vector<std::string> result;
  for (size_t i = 0; i < lengths.size(); ++i) result.push_back(buffer.substr(offsets[i], lengths[i]));
  return result;
}

void MpiEnvironment::announce_failure(ErrorCode code, const std::string& description) const {
  if (failure_relay_) failure_relay_->announce(code, description);
}

std::chrono::milliseconds MpiEnvironment::exit_wait_for(std::chrono::milliseconds collective_timeout) {
  return std::clamp<std::chrono::milliseconds>(2 * collective_timeout, std::chrono::seconds(5), std::chrono::seconds(60));
}

int MpiEnvironment::agree_on_exit_status(int status, std::chrono::milliseconds failed_rank_wait) const {
  if (!initialized_) return status;
  int agreed = status;
  MPI_Request request;
  MPI_Iallreduce(&status, &agreed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &request);
  const auto deadline = std::chrono::steady_clock::now() + failed_rank_wait;
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return agreed;
    if (status != 0 && std::chrono::steady_clock::now() >= deadline) {
      write_stderr_whole("[" + hostname_ + ":" + std::to_string(rank_) + "] not every rank reached the end of the job within " +
                         std::to_string(failed_rank_wait.count()) + " ms; aborting it with status " + std::to_string(status));
      MPI_Abort(MPI_COMM_WORLD, status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace n3rlhf
