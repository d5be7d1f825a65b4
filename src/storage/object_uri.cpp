// object_uri.cpp: parsing and joining object-store URIs.
#include "storage/object_uri.hpp"

#include <cctype>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

// S3's and GCS's common bucket rules: 3-63 (GCS: up to 222 with dots) lowercase letters, digits,
// dots and hyphens, starting and ending with a letter or digit.
bool valid_bucket(std::string_view bucket) {
  if (bucket.size() < 3 || bucket.size() > 222) return false;
  for (char c : bucket) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-' ||
          c == '_')) {
      return false;
    }
  }
  return std::isalnum(static_cast<unsigned char>(bucket.front())) && std::isalnum(static_cast<unsigned char>(bucket.back()));
}

}  // namespace

std::string_view scheme_name(ObjectScheme scheme) { return scheme == ObjectScheme::kS3 ? "s3" : "gs"; }

bool is_object_uri(std::string_view text) { return text.rfind("s3://", 0) == 0 || text.rfind("gs://", 0) == 0; }

ObjectUri parse_object_uri(std::string_view text) {
  if (!is_object_uri(text)) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "not an object-store URI (s3://bucket/key or gs://bucket/key)",
                             {{"uri", std::string(text)}});
  }
  ObjectUri uri;
  uri.scheme = text[0] == 's' ? ObjectScheme::kS3 : ObjectScheme::kGs;
  std::string_view rest = text.substr(5);
  const size_t slash = rest.find('/');
  uri.bucket = std::string(rest.substr(0, slash));
  if (slash != std::string_view::npos) uri.key = std::string(rest.substr(slash + 1));
  if (!valid_bucket(uri.bucket)) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "\"" + uri.bucket + "\" is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')",
                             {{"uri", std::string(text)}});
  }
  return uri;
}

std::string ObjectUri::str() const { return std::string(scheme_name(scheme)) + "://" + bucket + (key.empty() ? "" : "/" + key); }

std::string ObjectUri::directory_prefix() const {
  if (key.empty() || key.back() == '/') return key;
  return key + "/";
}

ObjectUri ObjectUri::child(std::string_view relative) const {
  ObjectUri uri = *this;
  while (!relative.empty() && relative.front() == '/') relative.remove_prefix(1);
  uri.key = directory_prefix() + std::string(relative);
  return uri;
}

}  // namespace n3rlhf
