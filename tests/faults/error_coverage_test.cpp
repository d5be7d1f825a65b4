// error_coverage_test.cpp: every code of the error catalog has a test that provokes it
// (tests/faults/error_coverage.txt names it), and a code listed as pending is raised nowhere in
// src/. The suite fails when a code gains a raiser without a test, or a named test is gone.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.hpp"
#include "core/error_catalog.hpp"
#include "support/test_support.hpp"

namespace n3rlhf {
namespace {

namespace fs = std::filesystem;

struct Entry {
  bool pending = false;
  std::string file;
  std::string test;  // Suite.Name
  std::string reason;
};

std::map<std::string, Entry> read_coverage() {
  std::map<std::string, Entry> entries;
  std::ifstream in(testing::source_dir() + "/tests/faults/error_coverage.txt");
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string first;
    words >> first;
    Entry entry;
    std::string code = first;
    if (first == "pending") {
      entry.pending = true;
      words >> code;
      std::getline(words, entry.reason);
    } else {
      words >> entry.file >> entry.test;
    }
    EXPECT_EQ(entries.count(code), 0u) << code << " is listed twice";
    entries[code] = entry;
  }
  return entries;
}

// The text of test `suite.name` in `source`: from its TEST line to the next test's.
std::string test_body(const std::string& source, const std::string& suite_dot_name) {
  const std::string suite = suite_dot_name.substr(0, suite_dot_name.find('.'));
  const std::string name = suite_dot_name.substr(suite_dot_name.find('.') + 1);
  const std::regex start("\\bTEST(_F|_P)?\\(" + suite + ",\\s*" + name + "\\)");
  std::smatch match;
  if (!std::regex_search(source, match, start)) return "";
  const std::string rest = source.substr(static_cast<size_t>(match.position(0)) + 1);
  std::smatch next;
  static const std::regex any_test("\\bTEST(_F|_P)?\\(");
  if (std::regex_search(rest, next, any_test)) return rest.substr(0, static_cast<size_t>(next.position(0)));
  return rest;
}

// "kOutOfMemory" for 11, from the enum in error.hpp.
std::map<int, std::string> constant_names() {
  std::map<int, std::string> names;
  const std::string header = testing::read_file(testing::source_dir() + "/src/core/error.hpp");
  static const std::regex constant("(k\\w+) = (\\d+),");
  for (std::sregex_iterator it(header.begin(), header.end(), constant), end; it != end; ++it) {
    names[std::stoi((*it)[2])] = (*it)[1];
  }
  return names;
}

TEST(ErrorCoverage, EveryCatalogCodeHasATestThatProvokesIt) {
  const std::map<std::string, Entry> entries = read_coverage();
  const std::map<int, std::string> constants = constant_names();
  std::set<std::string> catalog_codes;
  for (const ErrorInfo& info : error_catalog()) {
    const std::string code = error_code_string(info.code);
    catalog_codes.insert(code);
    const auto found = entries.find(code);
    if (found == entries.end()) {
      ADD_FAILURE() << code << " (" << info.title << ") has no line in tests/faults/error_coverage.txt";
      continue;
    }
    const std::string constant = constants.at(static_cast<int>(info.code));
    if (found->second.pending) {
      // Raised nowhere: no ErrorCode::kX outside the taxonomy's own files.
      for (const auto& file : fs::recursive_directory_iterator(testing::source_dir() + "/src")) {
        const std::string path = file.path().string();
        if (!file.is_regular_file() || path.find("/core/error") != std::string::npos) continue;
        const std::string text = testing::read_file(path);
        EXPECT_EQ(text.find("ErrorCode::" + constant), std::string::npos)
            << code << " is listed as pending (" << found->second.reason << ") but " << path
            << " raises it: name the test that provokes it in tests/faults/error_coverage.txt";
      }
      continue;
    }
    const std::string source_path = testing::source_dir() + "/" + found->second.file;
    ASSERT_TRUE(fs::exists(source_path)) << code << ": " << found->second.file << " does not exist";
    const std::string body = test_body(testing::read_file(source_path), found->second.test);
    ASSERT_FALSE(body.empty()) << code << ": no test " << found->second.test << " in " << found->second.file;
    EXPECT_TRUE(body.find(code) != std::string::npos || body.find(constant) != std::string::npos)
        << code << ": " << found->second.test << " does not mention " << code << " or " << constant;
  }
  for (const auto& [code, entry] : entries) {
    EXPECT_TRUE(catalog_codes.count(code)) << code << " is in error_coverage.txt but not in the catalog";
  }
}

}  // namespace
}  // namespace n3rlhf
