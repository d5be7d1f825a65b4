// serve_main.cpp: `service_serve serve ...`, the `n3rlhf serve` command (the same
// src/cli/command_serve.cpp) in a binary without libtorch, so that the service checks and the
// benchmark run without building the whole tool.
#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

int main(int argc, char** argv) {
  n3rlhf::configure_logging(n3rlhf::LogOptions{});
  if (argc < 2 || std::string(argv[1]) != "serve") {
    std::cerr << "usage: service_serve serve [options]\n";
    return 2;
  }
  try {
    return n3rlhf::serve_command(std::vector<std::string>(argv + 2, argv + argc));
  } catch (const n3rlhf::RlhfError& error) {
    std::cerr << "n3rlhf serve: " << error.describe_with_causes() << "\n";
    return 1;
  }
}
