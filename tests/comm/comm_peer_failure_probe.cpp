// comm_peer_failure_probe.cpp: a small MPI program for the peer-failure test. Rank 1 fails in its
// own code and announces its error (an RLHF022) through the FailureRelay, as n3rlhf-dist does;
// rank 0 meanwhile waits in an all-reduce, reads the result on the host (with NCCL: a CUDA sync
// behind a collective that rank 1 never joins) and starts another. Rank 0 must end with rank 1's
// own error within seconds, not at the 120 s collective timeout. argv[1]: the backend, mpi (CPU
// tensors) or nccl (one GPU per rank; exit status 77, "needs N GPUs", where there are fewer).
#include <torch/cuda.h>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include "comm/communicator_factory.hpp"
#include "comm/mpi_environment.hpp"
#include "core/error.hpp"
#include "core/error_output.hpp"
#include "core/log.hpp"

int main(int argc, char** argv) {
  using namespace n3rlhf;
  const std::string backend = argc > 1 ? argv[1] : "mpi";
  MpiEnvironment mpi(&argc, &argv);
  LogOptions log;
  log.rank = mpi.rank();
  log.world_size = mpi.world_size();
  configure_logging(log);
  torch::Device device = torch::kCPU;
  if (backend == "nccl") {
    if (!nccl_backend_available()) {
      if (mpi.rank() == 0) std::cout << "needs 2 GPUs and NCCL; this build has no NCCL\n";
      return 77;
    }
    const int gpus = static_cast<int>(torch::cuda::device_count());
    if (gpus < mpi.world_size()) {
      if (mpi.rank() == 0) std::cout << "needs " << mpi.world_size() << " GPUs, this machine has " << gpus << "\n";
      return 77;
    }
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(mpi.local_rank()));
  }
  DistributedConfig config;
  config.collective_timeout_s = 120;
  config.backend = backend == "nccl" ? CommBackend::kNccl : CommBackend::kMpi;
  int status = 0;
  {
    std::unique_ptr<Communicator> world = make_world_communicator(mpi, config, device);
    world->barrier()->wait();
    const auto started = std::chrono::steady_clock::now();
    if (mpi.rank() == 1) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      const DatasetError failure(ErrorCode::kMissingColumns, "the data lacks the column \"rejected\"");
      mpi.announce_failure(failure.code(), failure.describe_with_causes());
      write_stderr_whole("rank 1: error[RLHF022]: " + std::string(failure.what()));
      status = 1;
    } else {
      try {
        torch::Tensor tensor = torch::ones({1024}, torch::TensorOptions().device(device));
        world->all_reduce(tensor)->wait();
        const double sum = tensor.sum().item<double>();  // NCCL: the host blocks here behind the collective
        world->all_reduce(tensor)->wait();
        std::cout << "rank 0: all_reduce finished without rank 1 (" << sum << ")\n";
      } catch (const RlhfError& error) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        write_stderr_whole("rank 0: error[" + error_code_string(error.code()) + "]: " + error.what() + " after " +
                           std::to_string(static_cast<int>(seconds)) + " s");
        status = 1;
      }
    }
    status = mpi.agree_on_exit_status(status, std::chrono::seconds(10));
  }
  write_stderr_whole("rank " + std::to_string(mpi.rank()) + ": exit status " + std::to_string(status));
  return status;
}
