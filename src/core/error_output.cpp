// error_output.cpp: one write() per error message on standard error.
#include "core/error_output.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>

namespace n3rlhf {

void write_stderr_whole(std::string text) {
  if (text.empty() || text.back() != '\n') text += '\n';
  std::cerr.flush();
  std::fflush(stderr);
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t done = ::write(2, text.data() + written, text.size() - written);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return;
    written += static_cast<size_t>(done);
  }
}

}  // namespace n3rlhf
