// refusal.hpp: Refusal, what a handler throws to answer a request with a 4xx status and a reason
// (and, for job files, the RLHF diagnostics); the server turns it into the JSON error body.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace n3rlhf::service {

class Refusal : public std::runtime_error {
 public:
  Refusal(int status, std::string reason, nlohmann::json detail = nullptr)
      : std::runtime_error(reason), status_(status), reason_(std::move(reason)), detail_(std::move(detail)) {}
  int status() const { return status_; }
  const std::string& reason() const { return reason_; }
  const nlohmann::json& detail() const { return detail_; }

 private:
  int status_;
  std::string reason_;
  nlohmann::json detail_;
};

}  // namespace n3rlhf::service
