// object_store.hpp: the object-store client: GET / PUT / LIST / DELETE / HEAD on S3 and
// S3-compatible endpoints (and GCS through its S3-interoperable XML API), over libcurl, whose
// CURLOPT_AWS_SIGV4 signs every request. Large files go up as multipart uploads; transient
// failures (connection errors, HTTP 5xx and 429) are retried with exponential backoff; downloads
// are verified against the SHA-256 stored with the object (or the single-part ETag's MD5).
// Failures are StorageError RLHF050 naming the URI and the server's reason.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/object_uri.hpp"

namespace n3rlhf {

// Called after each object (or part of a multipart upload) went up, and after each download.
struct TransferProgress {
  ObjectUri uri;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  int part = 0;  // 1-based part of a multipart upload; 0 for a single request
};

struct ObjectStoreOptions {
  // "http://127.0.0.1:9000" for an S3-compatible server (path-style requests); empty: AWS
  // (https://BUCKET.s3.REGION.amazonaws.com) or, for gs://, https://storage.googleapis.com.
  std::string endpoint;
  std::string region = "us-east-1";
  // Empty access key: unsigned (anonymous) requests, for public buckets.
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  // Attempts per request (1 = no retry); the wait doubles from first_backoff_s up to max_backoff_s.
  int max_attempts = 5;
  double first_backoff_s = 0.25;
  double max_backoff_s = 8.0;
  double connect_timeout_s = 10.0;
  // A transfer that moves no byte for this long is abandoned (and retried).
  double stall_timeout_s = 60.0;
  // Files at least this large go up in parts of part_size bytes (S3's minimum part is 5 MiB).
  uint64_t multipart_threshold = 64ull << 20;
  uint64_t part_size = 16ull << 20;
  std::function<void(const TransferProgress&)> on_progress;
};

// Options for `scheme` from the environment:
//   s3://  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (or
//          AWS_DEFAULT_REGION), AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) for S3-compatible servers;
//   gs://  GCS HMAC keys in GCS_ACCESS_KEY_ID / GCS_SECRET_ACCESS_KEY (else the AWS_* pair),
//          GCS_ENDPOINT_URL (default https://storage.googleapis.com), region "auto".
// N3RLHF_STORAGE_MAX_ATTEMPTS and N3RLHF_STORAGE_STALL_TIMEOUT_S override the retry settings.
// ConfigurationError RLHF005 when a key is given without its secret, or when gs:// has only a
// service-account key (GCS_CREDENTIALS_PATH), which needs OAuth that n3rlhf does not do.
ObjectStoreOptions object_store_options_from_environment(ObjectScheme scheme);

struct ObjectInfo {
  ObjectUri uri;
  uint64_t size = 0;
  std::string etag;    // without quotes
  std::string sha256;  // x-amz-meta-sha256 when the object has it (HEAD only)
};

class ObjectStore {
 public:
  explicit ObjectStore(ObjectStoreOptions options);
  // A client for uri's scheme with object_store_options_from_environment().
  static ObjectStore for_uri(const ObjectUri& uri);

  const ObjectStoreOptions& options() const { return options_; }

  // nullopt when there is no such object (404).
  std::optional<ObjectInfo> head(const ObjectUri& uri) const;
  // The object's bytes, verified.
  std::string get(const ObjectUri& uri) const;
  // Streams the object into `path` (through path + ".part", renamed when verified); returns its info.
  ObjectInfo download(const ObjectUri& uri, const std::string& path) const;
  // One PUT of `bytes`, with its SHA-256 stored as x-amz-meta-sha256.
  void put(const ObjectUri& uri, std::string_view bytes) const;
  // The file at `path`: one PUT below multipart_threshold, else a multipart upload (aborted when a
  // part fails, so that no partial object is ever visible). The local file is never modified.
  void upload(const std::string& path, const ObjectUri& uri) const;
  // Every object whose key starts with uri.key (no delimiter: the whole tree), in key order.
  std::vector<ObjectInfo> list(const ObjectUri& prefix) const;
  // Deletes one object (deleting a missing object succeeds, as in S3).
  void remove(const ObjectUri& uri) const;
  // Creates the bucket (for tests and first-time set-up); an existing bucket of ours is fine.
  void create_bucket(const ObjectUri& uri) const;

 private:
  ObjectStoreOptions options_;
};

}  // namespace n3rlhf
