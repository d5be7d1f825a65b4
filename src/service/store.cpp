// store.cpp: job status names, canonical timestamps, and open_store()'s choice of backend.
#include "service/store.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <regex>

#include "core/error.hpp"
#include "service/store_backends.hpp"

namespace n3rlhf::service {

namespace {

struct StatusName {
  JobStatus status;
  const char* name;
};
constexpr StatusName kStatusNames[] = {
    {JobStatus::kQueued, "queued"},       {JobStatus::kRunning, "running"}, {JobStatus::kSucceeded, "succeeded"},
    {JobStatus::kFailed, "failed"},       {JobStatus::kCancelled, "cancelled"}, {JobStatus::kLost, "lost"},
    {JobStatus::kRendered, "rendered"},
};

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

}  // namespace

const char* job_status_name(JobStatus status) {
  for (const StatusName& entry : kStatusNames) {
    if (entry.status == status) return entry.name;
  }
  return "unknown";
}

JobStatus parse_job_status(const std::string& name) {
  for (const StatusName& entry : kStatusNames) {
    if (name == entry.name) return entry.status;
  }
  throw StorageError(ErrorCode::kStoreUnavailable, "the store holds an unknown job status", {{"status", name}});
}

bool job_status_final(JobStatus status) {
  return status == JobStatus::kSucceeded || status == JobStatus::kFailed || status == JobStatus::kCancelled ||
         status == JobStatus::kLost || status == JobStatus::kRendered;
}

std::string format_timestamp(int64_t micros) {
  int64_t seconds = micros / 1000000;
  int64_t fraction = micros % 1000000;
  if (fraction < 0) {
    fraction += 1000000;
    seconds -= 1;
  }
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[40];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<long long>(fraction));
  return text;
}

std::string now_timestamp() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return format_timestamp(std::chrono::duration_cast<std::chrono::microseconds>(now).count());
}

bool canonical_timestamp(const std::string& text, std::string* canonical) {
  static const std::regex pattern(
      R"(^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})?)?$)");
  std::smatch match;
  if (text.size() > 40 || !std::regex_match(text, match, pattern)) return false;
  const int year = std::stoi(match[1]);
  const unsigned month = static_cast<unsigned>(std::stoi(match[2]));
  const unsigned day = static_cast<unsigned>(std::stoi(match[3]));
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > 31) return false;
  const int64_t days = days_from_civil(year, month, day);
  // A day that does not exist (Feb 30) does not round-trip.
  if (days_from_civil(year, month, 1) + day - 1 != days || (month < 12 && days >= days_from_civil(year, month + 1, 1))) {
    return false;
  }
  int hour = 0, minute = 0, second = 0;
  int64_t micros = 0;
  if (match[4].matched) {
    hour = std::stoi(match[4]);
    minute = std::stoi(match[5]);
    second = std::stoi(match[6]);
    if (hour > 23 || minute > 59 || second > 60) return false;
    if (match[7].matched) {
      std::string digits = match[7].str().substr(0, 6);
      while (digits.size() < 6) digits += '0';
      micros = std::stoll(digits);
    }
  }
  int64_t offset_seconds = 0;
  if (match[8].matched && match[8].str() != "Z" && match[8].str() != "z") {
    const std::string offset = match[8];
    const int sign = offset[0] == '-' ? -1 : 1;
    const int oh = std::stoi(offset.substr(1, 2));
    const int om = std::stoi(offset.substr(4, 2));
    if (oh > 23 || om > 59) return false;
    offset_seconds = sign * (oh * 3600 + om * 60);
  }
  const int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_seconds;
  *canonical = format_timestamp(seconds * 1000000 + micros);
  return true;
}

std::string store_url_from_environment() {
  const char* value = std::getenv("N3RLHF_FEEDBACK_STORE");
  return value == nullptr ? std::string() : std::string(value);
}

std::string redact_url(const std::string& url) {
  static const std::regex password(R"(^([a-z]+://[^:/@]*:)[^@]*@)");
  std::string redacted = std::regex_replace(url, password, "$1***@");
  static const std::regex keyword(R"(password=[^ &]*)");
  return std::regex_replace(redacted, keyword, "password=***");
}

std::unique_ptr<Store> open_store(const StoreOptions& options) {
  const std::string& url = options.url;
  if (starts_with(url, "postgresql://") || starts_with(url, "postgres://") || starts_with(url, "postgresql:") ) {
    return open_postgresql_store(url, options);
  }
  if (starts_with(url, "sqlite:")) return open_sqlite_store(url.substr(7), options);
  const auto ends_with = [&](const std::string& suffix) {
    return url.size() > suffix.size() && url.compare(url.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".db") || ends_with(".sqlite") || ends_with(".sqlite3")) return open_sqlite_store(url, options);
  throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                           "the store URL names no backend: use sqlite:PATH or postgresql://user@host:port/db",
                           {{"url", redact_url(url)}});
}

}  // namespace n3rlhf::service
