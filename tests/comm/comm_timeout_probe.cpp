// comm_timeout_probe.cpp: a small MPI program for the timeout test. The last rank skips one
// all-reduce; the others must report RLHF014 naming it within the (short) timeout, and the job
// must end with a non-zero status. Modes: "late" (the skipper is busy for a while, then reaches
// the end) and "stuck" (the skipper never returns, so the others must end the job themselves).
#include <string>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>

#include "comm/mpi_communicator.hpp"
#include "comm/mpi_environment.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

int main(int argc, char** argv) {
  using namespace n3rlhf;
  const bool stuck = argc > 1 && std::strcmp(argv[1], "stuck") == 0;
  MpiEnvironment mpi(&argc, &argv);
  LogOptions log;
  log.rank = mpi.rank();
  log.world_size = mpi.world_size();
  configure_logging(log);
  const int skipper = mpi.world_size() - 1;
  int status = 0;
  {
    CommunicatorOptions options;
    // 5 s: the waiting ranks must both be in the all-reduce before the first of them gives up,
    // also on a loaded 2-core CI machine (2 s once let rank 0 name rank 1 too, still on its way).
    options.timeout = std::chrono::seconds(5);
    auto world = MpiCommunicator::world(options);
    world->barrier()->wait();
    if (mpi.rank() == skipper) {
      // Busy in its own code: its watchdog still answers the others' questions.
      std::this_thread::sleep_for(stuck ? std::chrono::hours(1) : std::chrono::seconds(8));
    } else {
      torch::Tensor tensor = torch::ones({16});
      try {
        world->all_reduce(tensor)->wait();
        std::cout << "rank " << mpi.rank() << ": all_reduce finished without the skipper\n";
      } catch (const TrainingError& error) {
        // One write per line: the ranks share the pipe, and piecewise writes interleave.
        const std::string line = "rank " + std::to_string(mpi.rank()) + ": error[" + error_code_string(error.code()) +
                                 "]: " + error.what() + "\n";
        std::cerr << line << std::flush;
        status = 1;
      }
    }
  }
  // A late rank gets time to reach the end; a stuck one must not hold the job for long.
  status = mpi.agree_on_exit_status(status, stuck ? std::chrono::seconds(3) : std::chrono::seconds(60));
  const std::string line = "rank " + std::to_string(mpi.rank()) + ": exit status " + std::to_string(status) + "\n";
  std::cerr << line << std::flush;
  return status;
}
