// feedback_input.hpp: a feedback request body checked against the API's rules and limits
// (required fields, types, lengths, UTF-8, no unknown fields), and the group committer that
// lets concurrent requests share one database transaction.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/service_options.hpp"
#include "service/store.hpp"

namespace n3rlhf::service {

// One feedback object; Refusal 400 naming the field (413 for a field over its limit).
FeedbackRecord parse_feedback(const nlohmann::json& body, const RequestLimits& limits);
// {"items": [ ... ]} with 1..max_batch_rows objects; the message names the item at fault.
std::vector<FeedbackRecord> parse_feedback_batch(const nlohmann::json& body, const RequestLimits& limits);

// Requests that arrive while a commit is in flight are inserted together by the next one (a
// transaction each, in arrival order); each caller returns once its own rows are committed.
class FeedbackCommitter {
 public:
  explicit FeedbackCommitter(FeedbackStore& store, size_t max_rows_per_commit = 4096);
  std::vector<int64_t> insert(std::vector<FeedbackRecord> rows);
  int64_t commits() const;

 private:
  struct Pending {
    std::vector<FeedbackRecord> rows;
    std::vector<int64_t> ids;
    std::exception_ptr error;
    bool done = false;
  };
  FeedbackStore& store_;
  size_t max_rows_;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::deque<Pending*> queue_;
  bool writing_ = false;
  int64_t commits_ = 0;
};

}  // namespace n3rlhf::service
