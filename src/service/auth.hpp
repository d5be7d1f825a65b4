// auth.hpp: bearer-token authentication with roles, and the per-token rate limiter (a token
// bucket each). Tokens are compared in constant time.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "service/service_options.hpp"

namespace n3rlhf::service {

class Authenticator {
 public:
  Authenticator(std::vector<TokenGrant> tokens, bool allow_anonymous);
  // The grant of an "Authorization: Bearer <token>" header value; null when it names none.
  const TokenGrant* authenticate(const std::string& authorization_header) const;
  static bool has_role(const TokenGrant& grant, Role role);

 private:
  std::vector<TokenGrant> tokens_;
  bool allow_anonymous_;
  TokenGrant anonymous_;
};

class RateLimiter {
 public:
  RateLimiter(double rate_per_second, double burst);
  // True when `key` may make one more request now; otherwise false and the seconds to wait.
  bool allow(const std::string& key, double* retry_after_seconds);
  bool enabled() const { return rate_ > 0; }

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point updated;
  };
  double rate_;
  double burst_;
  std::mutex mutex_;
  std::map<std::string, Bucket> buckets_;
};

}  // namespace n3rlhf::service
