// feedback_input.cpp: feedback request validation and the group committer.
#include "service/feedback_input.hpp"

#include <cmath>
#include <set>

#include "service/refusal.hpp"

namespace n3rlhf::service {

namespace {

std::string text_field(const nlohmann::json& body, const char* name, bool required, size_t limit, const std::string& where) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) {
    if (required) throw Refusal(400, where + name + " is required", {{"field", name}});
    return "";
  }
  if (!it->is_string()) throw Refusal(400, where + name + " must be a string", {{"field", name}});
  std::string value = it->get<std::string>();
  if (value.find('\0') != std::string::npos) {
    throw Refusal(400, where + name + " holds a NUL character, which the store cannot hold", {{"field", name}});
  }
  if (required && value.empty()) throw Refusal(400, where + name + " is empty", {{"field", name}});
  if (value.size() > limit) {
    throw Refusal(413, where + name + " is longer than " + std::to_string(limit) + " bytes", {{"field", name}});
  }
  return value;
}

bool has_control_characters(const std::string& text) {
  for (const unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

FeedbackRecord parse_feedback(const nlohmann::json& body, const RequestLimits& limits) {
  return [&] {
    if (!body.is_object()) throw Refusal(400, "a feedback item must be a JSON object");
    static const std::set<std::string> known = {"agent_id", "prompt", "response_chosen", "response_rejected",
                                                "score", "annotator_id", "metadata"};
    for (const auto& [key, value] : body.items()) {
      if (!known.count(key)) throw Refusal(400, "unknown field '" + key + "'", {{"field", key}});
    }
    FeedbackRecord row;
    const std::string where;
    row.agent_id = text_field(body, "agent_id", true, limits.max_id_bytes, where);
    if (has_control_characters(row.agent_id)) throw Refusal(400, "agent_id holds control characters", {{"field", "agent_id"}});
    row.prompt = text_field(body, "prompt", true, limits.max_text_bytes, where);
    row.response_chosen = text_field(body, "response_chosen", true, limits.max_text_bytes, where);
    row.response_rejected = text_field(body, "response_rejected", true, limits.max_text_bytes, where);
    row.annotator_id = text_field(body, "annotator_id", false, limits.max_id_bytes, where);
    if (has_control_characters(row.annotator_id)) {
      throw Refusal(400, "annotator_id holds control characters", {{"field", "annotator_id"}});
    }
    if (const auto it = body.find("score"); it != body.end() && !it->is_null()) {
      if (!it->is_number()) throw Refusal(400, "score must be a number", {{"field", "score"}});
      const double score = it->get<double>();
      if (!std::isfinite(score)) throw Refusal(400, "score must be finite", {{"field", "score"}});
      row.score = score;
    }
    if (const auto it = body.find("metadata"); it != body.end() && !it->is_null()) {
      if (!it->is_object()) throw Refusal(400, "metadata must be a JSON object", {{"field", "metadata"}});
      row.metadata = it->dump();
      // PostgreSQL's jsonb (and text) cannot hold U+0000; refuse it on every backend alike.
      if (row.metadata.find("\\u0000") != std::string::npos) {
        throw Refusal(400, "metadata holds a NUL character, which the store cannot hold", {{"field", "metadata"}});
      }
      if (row.metadata.size() > limits.max_metadata_bytes) {
        throw Refusal(413, "metadata is longer than " + std::to_string(limits.max_metadata_bytes) + " bytes",
                      {{"field", "metadata"}});
      }
    }
    return row;
  }();
}

std::vector<FeedbackRecord> parse_feedback_batch(const nlohmann::json& body, const RequestLimits& limits) {
  if (!body.is_object() || !body.contains("items") || !body["items"].is_array()) {
    throw Refusal(400, "a batch is {\"items\": [feedback, ...]}", {{"field", "items"}});
  }
  for (const auto& [key, value] : body.items()) {
    if (key != "items") throw Refusal(400, "unknown field '" + key + "'", {{"field", key}});
  }
  const nlohmann::json& items = body["items"];
  if (items.empty()) throw Refusal(400, "the batch has no items", {{"field", "items"}});
  if (items.size() > limits.max_batch_rows) {
    throw Refusal(413, "the batch has " + std::to_string(items.size()) + " items, more than " +
                           std::to_string(limits.max_batch_rows), {{"field", "items"}});
  }
  std::vector<FeedbackRecord> rows;
  rows.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    try {
      rows.push_back(parse_feedback(items[i], limits));
    } catch (const Refusal& refusal) {
      nlohmann::json detail = refusal.detail().is_object() ? refusal.detail() : nlohmann::json::object();
      detail["item"] = i;
      throw Refusal(refusal.status(), "items[" + std::to_string(i) + "]: " + refusal.reason(), detail);
    }
  }
  return rows;
}

FeedbackCommitter::FeedbackCommitter(FeedbackStore& store, size_t max_rows_per_commit)
    : store_(store), max_rows_(max_rows_per_commit) {}

std::vector<int64_t> FeedbackCommitter::insert(std::vector<FeedbackRecord> rows) {
  Pending mine;
  mine.rows = std::move(rows);
  std::unique_lock<std::mutex> lock(mutex_);
  queue_.push_back(&mine);
  while (!mine.done) {
    if (writing_) {
      done_.wait(lock);
      continue;
    }
    // This caller commits for everyone queued (up to max_rows_), itself included if it fits.
    writing_ = true;
    std::vector<Pending*> group;
    size_t total = 0;
    while (!queue_.empty() && (group.empty() || total + queue_.front()->rows.size() <= max_rows_)) {
      total += queue_.front()->rows.size();
      group.push_back(queue_.front());
      queue_.pop_front();
    }
    lock.unlock();
    std::vector<FeedbackRecord> combined;
    combined.reserve(total);
    const std::string stamp = now_timestamp();
    for (Pending* p : group) {
      for (FeedbackRecord& row : p->rows) {
        row.created_at = stamp;
        combined.push_back(row);
      }
    }
    std::exception_ptr error;
    std::vector<int64_t> ids;
    try {
      ids = store_.insert_feedback(combined);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    size_t next = 0;
    for (Pending* p : group) {
      if (error) {
        p->error = error;
      } else {
        p->ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(next),
                      ids.begin() + static_cast<std::ptrdiff_t>(next + p->rows.size()));
      }
      next += p->rows.size();
      p->done = true;
    }
    ++commits_;
    writing_ = false;
    done_.notify_all();
  }
  if (mine.error) std::rethrow_exception(mine.error);
  return mine.ids;
}

int64_t FeedbackCommitter::commits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return commits_;
}

}  // namespace n3rlhf::service
