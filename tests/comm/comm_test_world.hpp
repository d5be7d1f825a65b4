// comm_test_world.hpp: the world communicator a comm test binary runs against. The backend and
// device come from the environment (N3RLHF_TEST_BACKEND = auto|local|mpi|nccl,
// N3RLHF_TEST_DEVICE = cpu|cuda) so that one binary serves every backend: started plainly it is a
// world of one (local); under mpirun it is MPI; with the gpu variables, NCCL or MPI over CUDA.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "comm/communicator_factory.hpp"
#include "comm/mpi_environment.hpp"
#include "core/log.hpp"

namespace n3rlhf::testing {

class CommTestWorld : public ::testing::Environment {
 public:
  static CommTestWorld& get() {
    static CommTestWorld* world = static_cast<CommTestWorld*>(
        ::testing::AddGlobalTestEnvironment(new CommTestWorld));  // gtest owns it
    return *world;
  }

  void SetUp() override {
    mpi_ = std::make_unique<MpiEnvironment>(nullptr, nullptr);
    LogOptions log;
    log.rank = mpi_->rank();
    log.world_size = mpi_->world_size();
    configure_logging(log);
    const char* device = std::getenv("N3RLHF_TEST_DEVICE");
    const bool cuda = device != nullptr && std::string(device) == "cuda";
    device_ = device_for_local_rank(mpi_->local_rank(), cuda ? Device::kCuda : Device::kCpu);
    DistributedConfig config;
    config.collective_timeout_s = 120;  // a broken test fails with RLHF014 instead of hanging
    config.backend = backend_from_environment();
    world_ = make_world_communicator(*mpi_, config, device_);
  }

  void TearDown() override {
    world_.reset();
    mpi_.reset();
  }

  Communicator& world() { return *world_; }
  const MpiEnvironment& mpi() { return *mpi_; }
  const torch::Device& device() const { return device_; }

 private:
  static CommBackend backend_from_environment() {
    const char* name = std::getenv("N3RLHF_TEST_BACKEND");
    const std::string backend = name ? name : "auto";
    if (backend == "local") return CommBackend::kLocal;
    if (backend == "mpi") return CommBackend::kMpi;
    if (backend == "nccl") return CommBackend::kNccl;
    return CommBackend::kAuto;
  }

  std::unique_ptr<MpiEnvironment> mpi_;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<Communicator> world_;
};

}  // namespace n3rlhf::testing
