// error_output.hpp: write_stderr_whole, how a binary's main prints an error: in one write(), so
// that the error lines of ranks sharing a terminal or mpirun's output forwarder never interleave
// mid-line, as separate `std::cerr <<` pieces can.
#pragma once

#include <string>

namespace n3rlhf {

// Writes `text` to standard error in one write() (a newline added when it lacks one).
void write_stderr_whole(std::string text);

}  // namespace n3rlhf
