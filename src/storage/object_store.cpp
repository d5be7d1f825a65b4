// object_store.cpp: the S3 REST calls over libcurl: one request function with retries and
// backoff (request()), and the operations built on it. libcurl signs each request with AWS
// Signature Version 4 (CURLOPT_AWS_SIGV4); we give it the payload's SHA-256 in
// x-amz-content-sha256 (so the body is signed, not UNSIGNED-PAYLOAD) and the query string in
// canonical order, since libcurl 7.88 signs the query as it is given.
#include "storage/object_store.hpp"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/sha256.hpp"
#include "core/strings.hpp"
#include "storage/s3_xml.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

constexpr const char* kSha256Metadata = "x-amz-meta-sha256";
const std::string kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

void initialise_curl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// The canonical query string: parameters sorted by name, names and values encoded.
std::string canonical_query(std::vector<std::pair<std::string, std::string>> parameters) {
  std::sort(parameters.begin(), parameters.end());
  std::string query;
  for (const auto& [name, value] : parameters) {
    query += (query.empty() ? "" : "&") + percent_encode(name, false) + "=" + percent_encode(value, false);
  }
  return query;
}

class Md5 {
 public:
  Md5() : context_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) { EVP_DigestInit_ex(context_.get(), EVP_md5(), nullptr); }
  void update(const void* data, size_t size) { EVP_DigestUpdate(context_.get(), data, size); }
  std::string digest_bytes() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(context_.get(), digest, &size);
    return std::string(reinterpret_cast<const char*>(digest), size);
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context_;
};

std::string to_hex(std::string_view bytes) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(written));
  return out;
}

std::string md5_bytes(std::string_view bytes) {
  Md5 md5;
  md5.update(bytes.data(), bytes.size());
  return md5.digest_bytes();
}

std::string strip_quotes(std::string text) {
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') return text.substr(1, text.size() - 2);
  return text;
}

bool is_md5_etag(const std::string& etag) {
  return etag.size() == 32 && std::all_of(etag.begin(), etag.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

const char* environment(const char* name) {
  const char* value = std::getenv(name);
  return (value != nullptr && *value != '\0') ? value : nullptr;
}

// One HTTP request to the store, described independently of libcurl.
struct Request {
  std::string method;  // GET, HEAD, PUT, POST, DELETE
  std::string bucket;
  std::string key;
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::string> headers;  // "Name: value"
  std::string_view body;
  // Streams a 2xx response body somewhere else than Response::body (downloads); reset at each attempt.
  std::function<void(const char*, size_t)> sink;
  std::function<void()> reset_sink;
};

struct Response {
  long status = 0;
  std::string body;                            // the body (or, with a sink, only an error's body)
  std::map<std::string, std::string> headers;  // names in lowercase
};

struct TransferState {
  CURL* easy = nullptr;
  const Request* request = nullptr;
  Response* response = nullptr;
  size_t body_offset = 0;
};

size_t write_callback(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t bytes = size * count;
  long status = 0;
  curl_easy_getinfo(state->easy, CURLINFO_RESPONSE_CODE, &status);
  if (state->request->sink && status >= 200 && status < 300) {
    state->request->sink(data, bytes);
  } else {
    state->response->body.append(data, bytes);
  }
  return bytes;
}

size_t header_callback(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t bytes = size * count;
  std::string line(data, bytes);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    state->response->headers.clear();  // a new response (after 100 Continue or a redirect)
  } else if (const size_t colon = line.find(':'); colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    size_t start = colon + 1;
    while (start < line.size() && line[start] == ' ') ++start;
    state->response->headers[name] = line.substr(start);
  }
  return bytes;
}

size_t read_callback(char* buffer, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const std::string_view body = state->request->body;
  const size_t bytes = std::min(size * count, body.size() - state->body_offset);
  std::copy_n(body.data() + state->body_offset, bytes, buffer);
  state->body_offset += bytes;
  return bytes;
}

// "HTTP 404 NoSuchKey: The specified key does not exist." from an S3 error response.
std::string server_reason(const Response& response) {
  std::string reason = "HTTP " + std::to_string(response.status);
  const std::string code = xml_element_text(response.body, "Code");
  const std::string message = xml_element_text(response.body, "Message");
  if (!code.empty()) reason += " " + code;
  if (!message.empty()) reason += ": " + message;
  if (code.empty() && message.empty() && !response.body.empty()) reason += ": " + response.body.substr(0, 200);
  return reason;
}

bool retryable_curl_error(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

bool retryable_status(long status) { return status >= 500 || status == 429 || status == 408; }

class StoreClient {
 public:
  explicit StoreClient(const ObjectStoreOptions& options, ObjectScheme scheme) : options_(options), scheme_(scheme) {}

  std::string url(const Request& request) const {
    const std::string key = percent_encode(request.key, true);
    std::string base;
    if (!options_.endpoint.empty()) {
      std::string endpoint = options_.endpoint;
      while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
      base = endpoint + "/" + request.bucket + (key.empty() ? "" : "/" + key);
    } else if (scheme_ == ObjectScheme::kGs) {
      base = "https://storage.googleapis.com/" + request.bucket + (key.empty() ? "" : "/" + key);
    } else {
      base = "https://" + request.bucket + ".s3." + options_.region + ".amazonaws.com/" + key;
    }
    const std::string query = canonical_query(request.query);
    return query.empty() ? base : base + "?" + query;
  }

  // Sends the request, retrying transient failures; throws RLHF050 (naming `what` and the
  // store's reason) when it cannot be done. Statuses in `accepted` (besides 2xx) are returned.
  Response send(const Request& request, const ObjectUri& uri, const std::string& what, std::vector<long> accepted = {}) const {
    const int attempts = std::max(1, options_.max_attempts);
    std::string reason;
    long last_status = 0;
    for (int attempt = 1; attempt <= attempts; ++attempt) {
      if (attempt > 1) {
        const double backoff = std::min(options_.max_backoff_s, options_.first_backoff_s * static_cast<double>(1 << std::min(attempt - 2, 20)));
        static thread_local std::mt19937 random(std::random_device{}());
        const double jittered = backoff * std::uniform_real_distribution<double>(0.75, 1.25)(random);
        spdlog::warn("{} {}: {}; retrying in {:.2f} s (attempt {} of {})", what, uri.str(), reason, jittered, attempt, attempts);
        std::this_thread::sleep_for(std::chrono::duration<double>(jittered));
      }
      if (request.reset_sink) request.reset_sink();
      Response response;
      CURLcode code = CURLE_OK;
      std::string curl_message;
      perform(request, &response, &code, &curl_message);
      if (code != CURLE_OK) {
        reason = curl_message;
        last_status = 0;
        if (retryable_curl_error(code)) continue;
        break;
      }
      last_status = response.status;
      if ((response.status >= 200 && response.status < 300) ||
          std::find(accepted.begin(), accepted.end(), response.status) != accepted.end()) {
        // CompleteMultipartUpload can fail after its 200 header: the error is then in the body.
        if (request.method == "POST" && response.body.find("<Error>") != std::string::npos) {
          reason = server_reason(response);
          if (xml_element_text(response.body, "Code") == "InternalError" || xml_element_text(response.body, "Code") == "SlowDown") continue;
          break;
        }
        return response;
      }
      reason = server_reason(response);
      if (!retryable_status(response.status)) break;
    }
    ErrorContext context = {{"uri", uri.str()}, {"operation", what}, {"reason", reason}};
    if (last_status != 0) context.push_back({"status", std::to_string(last_status)});
    throw StorageError(ErrorCode::kUploadFailure, what + " " + uri.str() + " failed: " + reason, context);
  }

 private:
  void perform(const Request& request, Response* response, CURLcode* code, std::string* message) const {
    initialise_curl();
    std::unique_ptr<CURL, void (*)(CURL*)> easy(curl_easy_init(), &curl_easy_cleanup);
    TransferState state;
    state.easy = easy.get();
    state.request = &request;
    state.response = response;
    char error_buffer[CURL_ERROR_SIZE] = {0};
    const std::string address = url(request);
    CURL* handle = easy.get();
    curl_easy_setopt(handle, CURLOPT_URL, address.c_str());
    curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout_s * 1000));
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, std::max(1L, static_cast<long>(options_.stall_timeout_s)));
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, write_callback);
    curl_easy_setopt(handle, CURLOPT_WRITEDATA, &state);
    curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, header_callback);
    curl_easy_setopt(handle, CURLOPT_HEADERDATA, &state);

    // The payload's hash is signed with the request (and checked by the store).
    Sha256 payload_hash;
    payload_hash.update(request.body);
    const std::string payload_sha = request.body.empty() ? kEmptySha256 : payload_hash.hex_digest();
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, &curl_slist_free_all);
    const auto add_header = [&](const std::string& header) { headers.reset(curl_slist_append(headers.release(), header.c_str())); };
    for (const std::string& header : request.headers) add_header(header);
    add_header("x-amz-content-sha256: " + payload_sha);
    // No "Expect:" header to suppress 100-continue: libcurl 7.88 would sign the empty header it
    // then does not send, and the store would refuse the signature.
    if (!options_.session_token.empty()) add_header("x-amz-security-token: " + options_.session_token);

    if (request.method == "GET") {
      curl_easy_setopt(handle, CURLOPT_HTTPGET, 1L);
    } else if (request.method == "HEAD") {
      curl_easy_setopt(handle, CURLOPT_NOBODY, 1L);
    } else if (request.method == "PUT") {
      curl_easy_setopt(handle, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(handle, CURLOPT_READFUNCTION, read_callback);
      curl_easy_setopt(handle, CURLOPT_READDATA, &state);
      curl_easy_setopt(handle, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    } else if (request.method == "POST") {
      curl_easy_setopt(handle, CURLOPT_POST, 1L);
      curl_easy_setopt(handle, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
      // One Content-Type only: libcurl signs every header line given, and the store would see one.
      const bool typed = std::any_of(request.headers.begin(), request.headers.end(),
                                     [](const std::string& header) { return header.rfind("Content-Type:", 0) == 0; });
      if (!typed) add_header("Content-Type: application/xml");
    } else {
      curl_easy_setopt(handle, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers.get());

    std::string signing;
    std::string user;
    if (!options_.access_key_id.empty()) {
      signing = "aws:amz:" + options_.region + ":s3";
      user = options_.access_key_id + ":" + options_.secret_access_key;
      curl_easy_setopt(handle, CURLOPT_AWS_SIGV4, signing.c_str());
      curl_easy_setopt(handle, CURLOPT_USERPWD, user.c_str());
    }
    *code = curl_easy_perform(handle);
    if (*code != CURLE_OK) {
      *message = std::string(curl_easy_strerror(*code)) + (error_buffer[0] ? std::string(" (") + error_buffer + ")" : "");
      return;
    }
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response->status);
  }

  const ObjectStoreOptions& options_;
  ObjectScheme scheme_;
};

Request request_for(std::string method, const ObjectUri& uri) {
  Request request;
  request.method = std::move(method);
  request.bucket = uri.bucket;
  request.key = uri.key;
  return request;
}

void report(const ObjectStoreOptions& options, const ObjectUri& uri, uint64_t done, uint64_t total, int part) {
  if (options.on_progress) options.on_progress(TransferProgress{uri, done, total, part});
}

}  // namespace

ObjectStoreOptions object_store_options_from_environment(ObjectScheme scheme) {
  ObjectStoreOptions options;
  const auto value = [](const char* name) { const char* v = environment(name); return v ? std::string(v) : std::string(); };
  if (scheme == ObjectScheme::kGs) {
    options.region = "auto";
    options.endpoint = value("GCS_ENDPOINT_URL");
    options.access_key_id = value("GCS_ACCESS_KEY_ID");
    options.secret_access_key = value("GCS_SECRET_ACCESS_KEY");
    if (options.access_key_id.empty()) {
      options.access_key_id = value("AWS_ACCESS_KEY_ID");
      options.secret_access_key = value("AWS_SECRET_ACCESS_KEY");
    }
    if (options.access_key_id.empty() && environment("GCS_CREDENTIALS_PATH")) {
      throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                               "gs:// is reached through Cloud Storage's S3-interoperable XML API, which needs an HMAC key: "
                               "GCS_CREDENTIALS_PATH names a service-account key, which needs OAuth tokens that n3rlhf does "
                               "not obtain",
                               {{"set", "GCS_ACCESS_KEY_ID and GCS_SECRET_ACCESS_KEY (gcloud storage hmac create SERVICE_ACCOUNT)"},
                                {"GCS_CREDENTIALS_PATH", value("GCS_CREDENTIALS_PATH")}});
    }
  } else {
    options.endpoint = value("AWS_ENDPOINT_URL_S3");
    if (options.endpoint.empty()) options.endpoint = value("AWS_ENDPOINT_URL");
    options.access_key_id = value("AWS_ACCESS_KEY_ID");
    options.secret_access_key = value("AWS_SECRET_ACCESS_KEY");
    options.session_token = value("AWS_SESSION_TOKEN");
    const std::string region = value("AWS_REGION").empty() ? value("AWS_DEFAULT_REGION") : value("AWS_REGION");
    if (!region.empty()) options.region = region;
  }
  if (!options.access_key_id.empty() && options.secret_access_key.empty()) {
    throw ConfigurationError(ErrorCode::kMissingEnvironmentVariable,
                             std::string(scheme_name(scheme)) + ":// has an access key id but no secret access key in the environment",
                             {{"set", scheme == ObjectScheme::kGs ? "GCS_SECRET_ACCESS_KEY" : "AWS_SECRET_ACCESS_KEY"}});
  }
  if (const char* attempts = environment("N3RLHF_STORAGE_MAX_ATTEMPTS")) options.max_attempts = std::max(1, std::atoi(attempts));
  if (const char* stall = environment("N3RLHF_STORAGE_STALL_TIMEOUT_S")) options.stall_timeout_s = std::max(1.0, std::atof(stall));
  return options;
}

ObjectStore::ObjectStore(ObjectStoreOptions options) : options_(std::move(options)) {
  if (options_.part_size < (5ull << 20)) options_.part_size = 5ull << 20;  // S3's smallest part (but the last)
}

ObjectStore ObjectStore::for_uri(const ObjectUri& uri) { return ObjectStore(object_store_options_from_environment(uri.scheme)); }

std::optional<ObjectInfo> ObjectStore::head(const ObjectUri& uri) const {
  const Response response = StoreClient(options_, uri.scheme).send(request_for("HEAD", uri), uri, "HEAD", {404});
  if (response.status == 404) return std::nullopt;
  ObjectInfo info;
  info.uri = uri;
  if (auto length = response.headers.find("content-length"); length != response.headers.end()) info.size = std::stoull(length->second);
  if (auto etag = response.headers.find("etag"); etag != response.headers.end()) info.etag = strip_quotes(etag->second);
  if (auto sha = response.headers.find(kSha256Metadata); sha != response.headers.end()) info.sha256 = sha->second;
  return info;
}

namespace {

// The checks a downloaded body must pass: its stored SHA-256, else a single-part ETag's MD5.
// Returns the reason it fails, or "" when it passes (or there is nothing to check against).
std::string verify_download(const Response& response, const std::string& sha256_hex, const std::string& md5_hex) {
  if (auto sha = response.headers.find(kSha256Metadata); sha != response.headers.end()) {
    if (sha->second != sha256_hex) return "SHA-256 " + sha256_hex + " but the object's x-amz-meta-sha256 is " + sha->second;
    return "";
  }
  if (auto etag = response.headers.find("etag"); etag != response.headers.end()) {
    const std::string value = strip_quotes(etag->second);
    if (is_md5_etag(value) && value != md5_hex) return "MD5 " + md5_hex + " but the object's ETag is " + value;
  }
  return "";
}

}  // namespace

std::string ObjectStore::get(const ObjectUri& uri) const {
  std::string failure;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const Response response = StoreClient(options_, uri.scheme).send(request_for("GET", uri), uri, "GET");
    Md5 md5;
    md5.update(response.body.data(), response.body.size());
    failure = verify_download(response, sha256_hex(response.body), to_hex(md5.digest_bytes()));
    if (failure.empty()) return response.body;
    spdlog::warn("GET {}: the bytes received do not match the object's checksum ({}); fetching again", uri.str(), failure);
  }
  throw StorageError(ErrorCode::kArtifactCorruption, "GET " + uri.str() + ": the bytes received do not match the object's checksum: " + failure,
                     {{"uri", uri.str()}});
}

ObjectInfo ObjectStore::download(const ObjectUri& uri, const std::string& path) const {
  const std::string partial = path + ".part";
  std::error_code ignored;
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path(), ignored);
  std::string failure;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(nullptr, &std::fclose);
    std::unique_ptr<Sha256> sha;
    std::unique_ptr<Md5> md5;
    uint64_t bytes = 0;
    bool write_failed = false;
    Request request = request_for("GET", uri);
    request.reset_sink = [&] {
      file.reset(std::fopen(partial.c_str(), "wb"));
      sha = std::make_unique<Sha256>();
      md5 = std::make_unique<Md5>();
      bytes = 0;
      write_failed = file == nullptr;
    };
    request.sink = [&](const char* data, size_t size) {
      if (!file || std::fwrite(data, 1, size, file.get()) != size) write_failed = true;
      sha->update(data, size);
      md5->update(data, size);
      bytes += size;
    };
    const Response response = StoreClient(options_, uri.scheme).send(request, uri, "GET");
    if (!file || std::fflush(file.get()) != 0 || write_failed) {
      fs::remove(partial, ignored);
      throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot write the download of " + uri.str() + " to " + partial,
                         {{"uri", uri.str()}, {"file", partial}});
    }
    file.reset();
    failure = verify_download(response, sha->hex_digest(), to_hex(md5->digest_bytes()));
    if (failure.empty()) {
      fs::rename(partial, path);
      ObjectInfo info;
      info.uri = uri;
      info.size = bytes;
      if (auto etag = response.headers.find("etag"); etag != response.headers.end()) info.etag = strip_quotes(etag->second);
      if (auto stored = response.headers.find(kSha256Metadata); stored != response.headers.end()) info.sha256 = stored->second;
      report(options_, uri, bytes, bytes, 0);
      return info;
    }
    spdlog::warn("GET {}: the bytes received do not match the object's checksum ({}); fetching again", uri.str(), failure);
  }
  fs::remove(partial, ignored);
  throw StorageError(ErrorCode::kArtifactCorruption,
                     "GET " + uri.str() + ": the bytes received do not match the object's checksum: " + failure,
                     {{"uri", uri.str()}, {"file", path}});
}

void ObjectStore::put(const ObjectUri& uri, std::string_view bytes) const {
  Request request = request_for("PUT", uri);
  request.body = bytes;
  request.headers.push_back(std::string(kSha256Metadata) + ": " + sha256_hex(bytes));
  request.headers.push_back("Content-MD5: " + base64(md5_bytes(bytes)));
  request.headers.push_back("Content-Type: application/octet-stream");
  StoreClient(options_, uri.scheme).send(request, uri, "PUT");
  report(options_, uri, bytes.size(), bytes.size(), 0);
}

namespace {

std::string read_range(const std::string& path, uint64_t offset, uint64_t size, const ObjectUri& uri) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (!in || static_cast<uint64_t>(in.gcount()) != size) {
    throw StorageError(ErrorCode::kUploadFailure, "cannot read " + path + " to upload it", {{"uri", uri.str()}, {"file", path}});
  }
  return bytes;
}

}  // namespace

void ObjectStore::upload(const std::string& path, const ObjectUri& uri) const {
  std::error_code error;
  const uint64_t size = fs::file_size(path, error);
  if (error) {
    throw StorageError(ErrorCode::kUploadFailure, "cannot upload " + path + ": " + error.message(), {{"uri", uri.str()}, {"file", path}});
  }
  if (size < options_.multipart_threshold) {
    put(uri, read_range(path, 0, size, uri));
    return;
  }
  // Multipart: the object appears only when CompleteMultipartUpload succeeds; a failed part
  // aborts the upload, so that the store drops the parts already sent.
  const StoreClient client(options_, uri.scheme);
  Request initiate = request_for("POST", uri);
  initiate.query = {{"uploads", ""}};
  initiate.headers.push_back(std::string(kSha256Metadata) + ": " + sha256_file_hex(path));
  initiate.headers.push_back("Content-Type: application/octet-stream");
  const std::string upload_id = xml_element_text(client.send(initiate, uri, "CreateMultipartUpload").body, "UploadId");
  if (upload_id.empty()) {
    throw StorageError(ErrorCode::kUploadFailure, "CreateMultipartUpload " + uri.str() + " returned no UploadId", {{"uri", uri.str()}});
  }
  std::string parts_xml;
  try {
    int part = 0;
    for (uint64_t offset = 0; offset < size; offset += options_.part_size) {
      ++part;
      const std::string bytes = read_range(path, offset, std::min<uint64_t>(options_.part_size, size - offset), uri);
      Request upload_part = request_for("PUT", uri);
      upload_part.query = {{"partNumber", std::to_string(part)}, {"uploadId", upload_id}};
      upload_part.body = bytes;
      upload_part.headers.push_back("Content-MD5: " + base64(md5_bytes(bytes)));
      const Response response = client.send(upload_part, uri, "UploadPart " + std::to_string(part));
      const auto etag = response.headers.find("etag");
      if (etag == response.headers.end()) {
        throw StorageError(ErrorCode::kUploadFailure, "UploadPart " + std::to_string(part) + " of " + uri.str() + " returned no ETag",
                           {{"uri", uri.str()}});
      }
      parts_xml += "<Part><PartNumber>" + std::to_string(part) + "</PartNumber><ETag>" + xml_escape(etag->second) + "</ETag></Part>";
      report(options_, uri, offset + bytes.size(), size, part);
    }
    Request complete = request_for("POST", uri);
    complete.query = {{"uploadId", upload_id}};
    const std::string body = "<CompleteMultipartUpload>" + parts_xml + "</CompleteMultipartUpload>";
    complete.body = body;
    client.send(complete, uri, "CompleteMultipartUpload");
  } catch (const StorageError&) {
    ObjectStoreOptions once = options_;
    once.max_attempts = 1;
    once.connect_timeout_s = std::min(once.connect_timeout_s, 5.0);
    once.stall_timeout_s = std::min(once.stall_timeout_s, 5.0);
    Request abort = request_for("DELETE", uri);
    abort.query = {{"uploadId", upload_id}};
    try {
      StoreClient(once, uri.scheme).send(abort, uri, "AbortMultipartUpload", {404});
    } catch (const StorageError& abort_error) {
      spdlog::warn("the failed multipart upload {} of {} could not be aborted ({}); the store drops its parts by its own "
                   "lifecycle rules, and no object was created",
                   upload_id, uri.str(), abort_error.message());
    }
    throw;
  }
}

std::vector<ObjectInfo> ObjectStore::list(const ObjectUri& prefix) const {
  std::vector<ObjectInfo> objects;
  std::string token;
  const StoreClient client(options_, prefix.scheme);
  ObjectUri bucket = prefix;
  bucket.key.clear();
  do {
    Request request = request_for("GET", bucket);
    request.query = {{"list-type", "2"}, {"prefix", prefix.key}};
    if (!token.empty()) request.query.push_back({"continuation-token", token});
    const Response response = client.send(request, prefix, "LIST");
    for (std::string_view contents : xml_elements(response.body, "Contents")) {
      ObjectInfo info;
      info.uri = bucket;
      info.uri.key = xml_element_text(contents, "Key");
      const std::string size = xml_element_text(contents, "Size");
      info.size = size.empty() ? 0 : std::stoull(size);
      info.etag = strip_quotes(xml_element_text(contents, "ETag"));
      objects.push_back(std::move(info));
    }
    token = xml_element_text(response.body, "IsTruncated") == "true" ? xml_element_text(response.body, "NextContinuationToken") : "";
  } while (!token.empty());
  std::sort(objects.begin(), objects.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.uri.key < b.uri.key; });
  return objects;
}

void ObjectStore::remove(const ObjectUri& uri) const {
  StoreClient(options_, uri.scheme).send(request_for("DELETE", uri), uri, "DELETE", {404});
}

void ObjectStore::create_bucket(const ObjectUri& uri) const {
  ObjectUri bucket = uri;
  bucket.key.clear();
  Request request = request_for("PUT", bucket);
  std::string body;
  if (uri.scheme == ObjectScheme::kS3 && options_.region != "us-east-1") {
    body = "<CreateBucketConfiguration><LocationConstraint>" + options_.region + "</LocationConstraint></CreateBucketConfiguration>";
  }
  request.body = body;
  const Response response = StoreClient(options_, uri.scheme).send(request, bucket, "CreateBucket", {409});
  if (response.status == 409 && xml_element_text(response.body, "Code") != "BucketAlreadyOwnedByYou") {
    throw StorageError(ErrorCode::kUploadFailure, "CreateBucket " + bucket.str() + " failed: " + server_reason(response),
                       {{"uri", bucket.str()}, {"reason", server_reason(response)}});
  }
}

}  // namespace n3rlhf
