// dist_command.hpp: the whole of `n3rlhf-dist FILE [--job NAME] [--set k=v]... [--resume]
// [--dry-run]`, the MPI-launched main; launch/n3rlhf-dist/main.cpp only calls it.
#pragma once

namespace n3rlhf {

// Exit status: 0 success, 2 invalid command line or job file, 1 any other failure. Every rank
// returns the same status.
int run_dist_command(int argc, char** argv);

}  // namespace n3rlhf
