// communicator_factory.hpp: picks the backend for a job (DistributedConfig.backend and the
// device: auto = NCCL for CUDA, MPI for CPU, local for a world of one), builds the world
// communicator, and chooses each rank's device from its node-local rank.
#pragma once

#include <memory>

#include <torch/torch.h>

#include "comm/communicator.hpp"
#include "comm/mpi_environment.hpp"
#include "core/config.hpp"

namespace n3rlhf {

// Whether this build contains the NCCL backend (N3RLHF_WITH_NCCL at configure time).
bool nccl_backend_available();

// cuda:(local_rank % visible GPUs) when the preference allows CUDA and a GPU is visible (ranks
// share GPUs when there are more ranks than GPUs on a node), else cpu. Device::kCuda without a
// GPU is RLHF004.
torch::Device device_for_local_rank(int local_rank, Device preference);

// Intra-op threads for a rank that shares its node's cores with `local_size` ranks: cores /
// local_size (at least 1), so that N ranks on a node do not each start a thread per core and
// fight over them (libtorch's default; OpenMP's spin-waiting makes that several times slower).
// OMP_NUM_THREADS, when set, wins and nothing is changed. Returns the count in effect.
int set_cpu_threads_for_rank(int local_size);

// The backend that `requested` means for this world and device; RLHF004 when it cannot work
// (nccl for a CPU device or in a build without NCCL, local for several ranks, mpi without mpirun).
CommBackend resolve_backend(CommBackend requested, int world_size, bool mpi_initialized, const torch::Device& device);

// The world communicator of this process, named "world", with the job's collective timeout.
std::unique_ptr<Communicator> make_world_communicator(const MpiEnvironment& mpi, const DistributedConfig& config,
                                                      const torch::Device& device);

}  // namespace n3rlhf
