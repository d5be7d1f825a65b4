// auth.cpp: token lookup, roles, the token file reader and the token-bucket rate limiter.
#include "service/auth.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace n3rlhf::service {

namespace {

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    difference |= static_cast<unsigned char>(x ^ y);
  }
  return difference == 0;
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::kAnnotator: return "annotator";
    case Role::kOperator: return "operator";
    case Role::kReader: return "reader";
  }
  return "unknown";
}

std::vector<TokenGrant> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigurationError(ErrorCode::kMissingField, "cannot read the token file", {{"file", path}});
  std::stringstream text;
  text << in.rdbuf();
  const auto fail = [&](const std::string& why) {
    throw ConfigurationError(ErrorCode::kMissingField, "token file: " + why, {{"file", path}});
  };
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& error) {
    fail(error.what());
  }
  if (!json.is_object() || !json.contains("tokens") || !json["tokens"].is_array()) fail("expected {\"tokens\": [...]}");
  std::vector<TokenGrant> grants;
  for (const auto& entry : json["tokens"]) {
    if (!entry.is_object() || !entry.contains("token") || !entry["token"].is_string() || !entry.contains("roles") ||
        !entry["roles"].is_array()) {
      fail("each token needs \"token\" (a string) and \"roles\" (a list)");
    }
    TokenGrant grant;
    grant.token = entry["token"].get<std::string>();
    if (grant.token.size() < 16) fail("a token shorter than 16 characters");
    grant.name = entry.value("name", std::string("token-") + std::to_string(grants.size() + 1));
    for (const auto& role : entry["roles"]) {
      const std::string name = role.is_string() ? role.get<std::string>() : "";
      if (name == "annotator") grant.roles.push_back(Role::kAnnotator);
      else if (name == "operator") grant.roles.push_back(Role::kOperator);
      else if (name == "reader") grant.roles.push_back(Role::kReader);
      else fail("unknown role '" + name + "' (annotator, operator, reader)");
    }
    grants.push_back(std::move(grant));
  }
  return grants;
}

Authenticator::Authenticator(std::vector<TokenGrant> tokens, bool allow_anonymous)
    : tokens_(std::move(tokens)), allow_anonymous_(allow_anonymous) {
  anonymous_.name = "anonymous";
  anonymous_.roles = {Role::kAnnotator, Role::kOperator, Role::kReader};
}

const TokenGrant* Authenticator::authenticate(const std::string& header) const {
  static const std::string prefix = "Bearer ";
  if (header.size() > prefix.size() && header.compare(0, prefix.size(), prefix) == 0) {
    const std::string token = header.substr(prefix.size());
    const TokenGrant* found = nullptr;
    for (const TokenGrant& grant : tokens_) {
      if (constant_time_equal(grant.token, token)) found = &grant;
    }
    if (found != nullptr) return found;
  }
  if (allow_anonymous_ && header.empty()) return &anonymous_;
  return nullptr;
}

bool Authenticator::has_role(const TokenGrant& grant, Role role) {
  return std::find(grant.roles.begin(), grant.roles.end(), role) != grant.roles.end();
}

RateLimiter::RateLimiter(double rate_per_second, double burst)
    : rate_(rate_per_second), burst_(burst > 0 ? burst : std::max(1.0, rate_per_second)) {}

bool RateLimiter::allow(const std::string& key, double* retry_after_seconds) {
  if (rate_ <= 0) return true;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{burst_, now});
  Bucket& bucket = it->second;
  if (!inserted) {
    const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
    bucket.tokens = std::min(burst_, bucket.tokens + elapsed * rate_);
    bucket.updated = now;
  }
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return true;
  }
  *retry_after_seconds = (1.0 - bucket.tokens) / rate_;
  return false;
}

}  // namespace n3rlhf::service
