// main.cpp: n3rlhf-dist, the MPI-launched training entry point (mpirun -np N n3rlhf-dist job.n3).
#include "runtime/dist_command.hpp"

int main(int argc, char** argv) { return n3rlhf::run_dist_command(argc, argv); }
