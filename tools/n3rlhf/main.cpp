// main.cpp: the `n3rlhf` single-process tool (validate, explain, tokenize, generate, parity, serve, ...).
// feedback.export(...) in a job resolves against the feedback store (N3RLHF_FEEDBACK_STORE).
#include "cli/cli.hpp"
#include "service/feedback_source.hpp"

int main(int argc, char** argv) {
  n3rlhf::service::install_feedback_source_resolver();
  return n3rlhf::run_cli(argc, argv);
}
