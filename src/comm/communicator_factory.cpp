// communicator_factory.cpp: backend choice and device selection.
#include "comm/communicator_factory.hpp"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "comm/local_communicator.hpp"
#include "comm/mpi_communicator.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#ifdef N3RLHF_HAVE_NCCL
#include "comm/nccl_communicator.hpp"
#endif

namespace n3rlhf {

bool nccl_backend_available() {
#ifdef N3RLHF_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

torch::Device device_for_local_rank(int local_rank, Device preference) {
  const bool has_gpu = torch::cuda::is_available() && torch::cuda::device_count() > 0;
  if (preference == Device::kCuda && !has_gpu) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "hyperparameters.device is cuda but no GPU is visible",
                             {{"field", "hyperparameters.device"}});
  }
  if (preference == Device::kCpu || !has_gpu) return torch::Device(torch::kCPU);
  const int count = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % count));
}

int set_cpu_threads_for_rank(int local_size) {
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    torch::set_num_threads(std::max(1, cores / std::max(1, local_size)));
  }
  return torch::get_num_threads();
}

CommBackend resolve_backend(CommBackend requested, int world_size, bool mpi_initialized, const torch::Device& device) {
  auto refuse = [&](const std::string& why) -> CommBackend {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "distributed.backend " + enum_name(requested) + ": " + why,
                             {{"field", "distributed.backend"}});
  };
  switch (requested) {
    case CommBackend::kAuto:
      if (world_size == 1) return CommBackend::kLocal;
      if (device.is_cuda() && nccl_backend_available()) return CommBackend::kNccl;
      return CommBackend::kMpi;
    case CommBackend::kLocal:
      if (world_size != 1) refuse("a world of one, but the job has " + std::to_string(world_size) + " ranks");
      return CommBackend::kLocal;
    case CommBackend::kMpi:
      if (!mpi_initialized) refuse("MPI is not running; start the job with mpirun or srun");
      return CommBackend::kMpi;
    case CommBackend::kNccl:
      if (!nccl_backend_available()) refuse("this build has no NCCL (configure with CUDA and NCCL present)");
      if (!device.is_cuda()) refuse("NCCL moves CUDA tensors, but this rank's device is " + device.str());
      if (!mpi_initialized) refuse("NCCL is bootstrapped through MPI; start the job with mpirun or srun");
      return CommBackend::kNccl;
  }
  return CommBackend::kLocal;
}

std::unique_ptr<Communicator> make_world_communicator(const MpiEnvironment& mpi, const DistributedConfig& config,
                                                      const torch::Device& device) {
  CommunicatorOptions options;
  options.name = "world";
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(config.collective_timeout_s * 1000.0));
  const CommBackend backend = resolve_backend(config.backend, mpi.world_size(), mpi.initialized(), device);
  spdlog::debug("communicator: {} backend on {} for {} rank(s)", enum_name(backend), device.str(), mpi.world_size());
  switch (backend) {
    case CommBackend::kLocal:
      return std::make_unique<LocalCommunicator>(options);
    case CommBackend::kMpi: {
      std::unique_ptr<MpiCommunicator> world = MpiCommunicator::world(options);
      world->set_failure_relay(mpi.failure_relay());
      return world;
    }
    case CommBackend::kNccl:
#ifdef N3RLHF_HAVE_NCCL
    {
      std::unique_ptr<NcclCommunicator> world = NcclCommunicator::world(options, device.index());
      world->set_failure_relay(mpi.failure_relay());
      return world;
    }
#else
      break;
#endif
    case CommBackend::kAuto:
      break;
  }
  throw ConfigurationError(ErrorCode::kIncompatibleOptions, "no communicator backend fits this job");
}

}  // namespace n3rlhf
