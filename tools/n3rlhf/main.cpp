// main.cpp: the `n3rlhf` single-process tool (validate, explain, tokenize, generate, parity, ...).
#include "cli/cli.hpp"

int main(int argc, char** argv) { return n3rlhf::run_cli(argc, argv); }
