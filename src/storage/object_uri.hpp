// object_uri.hpp: object-store URIs (s3://bucket/key, gs://bucket/key): parsing, joining keys,
// and telling them apart from local paths.
#pragma once

#include <string>
#include <string_view>

namespace n3rlhf {

enum class ObjectScheme { kS3, kGs };

struct ObjectUri {
  ObjectScheme scheme = ObjectScheme::kS3;
  std::string bucket;
  std::string key;  // no leading '/'; "" for a whole bucket; a "prefix" ends with '/'

  // "s3://bucket/key"
  std::string str() const;
  // This URI with `relative` appended under it as a directory ("s3://b/run" / "a/b" -> "s3://b/run/a/b").
  ObjectUri child(std::string_view relative) const;
  // The key as a directory prefix: "" or ending with '/'.
  std::string directory_prefix() const;
};

// Whether `text` starts with "s3://" or "gs://" (other schemes are not object stores here).
bool is_object_uri(std::string_view text);
// ConfigurationError RLHF003 when `text` is not "s3://bucket[/key]" or "gs://bucket[/key]" with a
// valid bucket name.
ObjectUri parse_object_uri(std::string_view text);
std::string_view scheme_name(ObjectScheme scheme);

}  // namespace n3rlhf
