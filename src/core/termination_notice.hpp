// termination_notice.hpp: what a rank says when it is terminated by a signal (SIGTERM, SIGINT,
// SIGHUP): mpirun ends every other rank with SIGTERM when one dies (SIGKILL, a crash), Slurm and
// the service's cancel send SIGTERM, and without a notice the survivors vanish without a word.
// Each rank prints one line, "n3rlhf-dist: rank R (roles): [RLHF014] terminated by SIGTERM during
// <phase> ...", with the layout's ranks and roles, so that the launcher's own message ("process
// rank 1 ... exited on signal 9") reads with the role and the phase. The handler only write(2)s a
// line prepared beforehand and then takes the signal's default action (the exit status stays
// "killed by the signal").
#pragma once

#include <string>

namespace n3rlhf {

// Installs the handlers. `who` names this rank ("rank 0 (policy)"); `layout` the job's ranks and
// roles ("" when every rank plays every role).
void install_termination_notice(const std::string& who, const std::string& layout);

// What the rank does now ("iteration 3 (scoring)"); safe to call often, from one thread.
void publish_phase(const std::string& phase);

// The line the handler would print for `signal_name` now (for tests and logs).
std::string termination_notice_text(const char* signal_name);

}  // namespace n3rlhf
