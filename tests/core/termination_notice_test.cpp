// termination_notice_test.cpp: a process with the notice installed, terminated by a real signal,
// prints its one line (rank, roles, the phase published last, the layout) and still ends by that
// signal; before installation a signal ends it silently as before.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "core/termination_notice.hpp"

namespace n3rlhf {
namespace {

struct Ended {
  std::string stderr_text;
  int signal_number = 0;
};

// Forks a child whose stderr is a pipe; the child runs `body` and then waits for `signal_number`,
// which the parent sends once the child has said it is ready.
template <typename Body>
Ended run_child(Body body, int signal_number) {
  int output[2];
  int ready[2];
  if (pipe(output) != 0 || pipe(ready) != 0) ADD_FAILURE() << "pipe";
  const pid_t child = fork();
  if (child == 0) {
    dup2(output[1], STDERR_FILENO);
    close(output[0]);
    close(ready[0]);
    body();
    const char byte = 'r';
    if (write(ready[1], &byte, 1) != 1) _exit(3);
    for (;;) pause();
  }
  close(output[1]);
  close(ready[1]);
  char byte = 0;
  EXPECT_EQ(read(ready[0], &byte, 1), 1);
  kill(child, signal_number);
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = read(output[0], buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<size_t>(n));
  int status = 0;
  waitpid(child, &status, 0);
  close(output[0]);
  close(ready[0]);
  return {text, WIFSIGNALED(status) ? WTERMSIG(status) : 0};
}

TEST(TerminationNotice, ASignalledRankSaysWhatItWasAndWhatItDidAndStillEndsByTheSignal) {
  const Ended ended = run_child(
      [] {
        install_termination_notice("rank 0 (policy+reference)", "0 policy+reference, 1 rollout+reward");
        publish_phase("iteration 1 (generation)");
        publish_phase("iteration 2 (scoring)");
      },
      SIGTERM);
  EXPECT_EQ(ended.signal_number, SIGTERM);
  EXPECT_EQ(ended.stderr_text,
            "n3rlhf-dist: rank 0 (policy+reference): [RLHF014] terminated by SIGTERM during iteration 2 (scoring). "
            "mpirun ends every rank this way when one rank dies or fails (its own message names that rank); Slurm and "
            "the service's cancel send it too. Ranks: 0 policy+reference, 1 rollout+reward.\n");
}

TEST(TerminationNotice, SigintIsNamedAndAColocatedJobListsNoLayout) {
  const Ended ended = run_child([] { install_termination_notice("rank 3 (policy+rollout+reference+reward)", ""); }, SIGINT);
  EXPECT_EQ(ended.signal_number, SIGINT);
  EXPECT_NE(ended.stderr_text.find("rank 3 (policy+rollout+reference+reward): [RLHF014] terminated by SIGINT during set-up."),
            std::string::npos)
      << ended.stderr_text;
  EXPECT_EQ(ended.stderr_text.find("Ranks:"), std::string::npos) << ended.stderr_text;
}

TEST(TerminationNotice, WithoutInstallationASignalEndsTheProcessSilently) {
  const Ended ended = run_child([] { publish_phase("step 1"); }, SIGTERM);
  EXPECT_EQ(ended.signal_number, SIGTERM);
  EXPECT_EQ(ended.stderr_text, "");
}

}  // namespace
}  // namespace n3rlhf
