// error_catalog.hpp: what each RLHF code means and how to fix it; the text behind
// `n3rlhf explain CODE` and docs/errors.md (which a test keeps identical to this catalog).
#pragma once

#include <string>
#include <vector>

#include "core/error.hpp"

namespace n3rlhf {

struct ErrorInfo {
  ErrorCode code;
  const char* title;
  const char* meaning;
  const char* fix;
};

const std::vector<ErrorInfo>& error_catalog();
const ErrorInfo& error_info(ErrorCode code);
std::string explain_error(ErrorCode code);    // plain text for the terminal
std::string error_catalog_markdown();         // the whole of docs/errors.md

}  // namespace n3rlhf
