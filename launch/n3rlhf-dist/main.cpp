// main.cpp: n3rlhf-dist, the MPI-launched training entry point (mpirun -np N n3rlhf-dist job.n3).
// feedback.export(...) in a job resolves against the feedback store (N3RLHF_FEEDBACK_STORE).
#include "runtime/dist_command.hpp"
#include "service/feedback_source.hpp"

int main(int argc, char** argv) {
  n3rlhf::service::install_feedback_source_resolver();
  return n3rlhf::run_dist_command(argc, argv);
}
