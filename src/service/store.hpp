// store.hpp: the service's records (a feedback row, a job row), the FeedbackStore and JobStore
// interfaces that the HTTP layer, the exporter and feedback.export(...) use, and open_store(),
// which picks the SQLite or PostgreSQL backend from a store URL. Every statement a backend runs
// is a fixed text with bound parameters; no SQL is built from request data.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace n3rlhf::service {

// One preference judgement: the seed's rlhf_feedback row. created_at is set by the store
// (RFC 3339 UTC with microseconds, "2025-01-31T12:00:00.000000Z").
struct FeedbackRecord {
  int64_t id = 0;
  std::string agent_id;
  std::string prompt;
  std::string response_chosen;
  std::string response_rejected;
  std::optional<double> score;
  std::string annotator_id;
  std::string metadata = "{}";  // a JSON object, as text
  std::string created_at;
};

// Which rows an export or a count takes: one agent, optionally a [since, until) time window
// (canonical timestamps, see canonical_timestamp()), at most `limit` rows (0: all), oldest first.
struct FeedbackQuery {
  std::string agent_id;
  std::string since;
  std::string until;
  int64_t limit = 0;
};

// The three columns an export writes; the views are valid only during the visit.
struct PreferencePair {
  std::string_view prompt;
  std::string_view chosen;
  std::string_view rejected;
};

struct AgentCount {
  std::string agent_id;
  int64_t count = 0;
};

class FeedbackStore {
 public:
  virtual ~FeedbackStore() = default;
  // Inserts the rows in one transaction (all or none) and returns their ids in order. When this
  // returns, the rows are committed durably.
  virtual std::vector<int64_t> insert_feedback(const std::vector<FeedbackRecord>& rows) = 0;
  // Calls `visit` for each matching row, oldest first, without holding them all in memory.
  virtual void scan_feedback(const FeedbackQuery& query, const std::function<void(const FeedbackRecord&)>& visit) = 0;
  // The same rows as scan_feedback, only the columns an export writes (no copies, nothing else
  // read or converted): what the exports use.
  virtual void scan_preference_pairs(const FeedbackQuery& query,
                                     const std::function<void(const PreferencePair&)>& visit) = 0;
  virtual int64_t count_feedback(const FeedbackQuery& query) = 0;
  virtual std::vector<AgentCount> feedback_counts() = 0;
};

enum class JobStatus { kQueued, kRunning, kSucceeded, kFailed, kCancelled, kLost, kRendered };
const char* job_status_name(JobStatus status);
JobStatus parse_job_status(const std::string& name);
bool job_status_final(JobStatus status);

// One training job: the seed's rlhf_jobs row plus what the runner needs to find it again.
struct JobRecord {
  int64_t id = 0;
  std::string job_name;
  std::string algorithm;
  std::string base_model;
  std::string dataset_path;
  std::string config = "{}";     // the resolved configuration (JSON text)
  std::string job_text;          // the N3 job file the job runs
  std::string launcher = "local";  // "local" (mpirun child) or "kubernetes" (a rendered MPIJob)
  JobStatus status = JobStatus::kQueued;
  std::string created_at;
  std::string started_at;
  std::string finished_at;
  int64_t pid = 0;
  int64_t pid_start_time = 0;    // /proc/<pid>/stat field 22, to tell a reused pid apart
  std::optional<int64_t> exit_code;
  std::string error;
  std::string work_dir;          // the job's own directory: job.n3, stdout/stderr logs
  std::string output_dir;        // output.dir of the job
  std::string metrics_path;      // <log_dir>/metrics.jsonl
  std::string manifest;          // the rendered Kubernetes MPIJob (launcher "kubernetes")
};

// The fields a status change writes; unset fields are kept.
struct JobUpdate {
  std::optional<JobStatus> status;
  std::optional<std::string> started_at;
  std::optional<std::string> finished_at;
  std::optional<int64_t> pid;
  std::optional<int64_t> pid_start_time;
  std::optional<int64_t> exit_code;
  std::optional<std::string> error;
};

class JobStore {
 public:
  virtual ~JobStore() = default;
  // Inserts the job (id and created_at are set by the store) and returns its id.
  virtual int64_t insert_job(const JobRecord& job) = 0;
  virtual void update_job(int64_t id, const JobUpdate& update) = 0;
  virtual std::optional<JobRecord> find_job(int64_t id) = 0;
  // Newest first; at most `limit` rows.
  virtual std::vector<JobRecord> list_jobs(int64_t limit) = 0;
  virtual std::vector<JobRecord> jobs_with_status(JobStatus status) = 0;
};

// Both interfaces on one database, plus what the service asks about the database itself.
class Store : public FeedbackStore, public JobStore {
 public:
  virtual std::string backend() const = 0;  // "sqlite" or "postgresql"
  virtual int schema_version() = 0;          // the highest migration applied
  virtual bool healthy() = 0;                // a round trip to the database
};

struct StoreOptions {
  // "sqlite:PATH" (or a path ending in .db/.sqlite), "postgresql://..." / "postgres://...".
  std::string url;
  int pool_size = 8;  // connections for readers; writes go through one connection at a time
};

// Opens the store and applies pending migrations. A bad URL is RLHF004; a database that cannot
// be opened or migrated is RLHF054.
std::unique_ptr<Store> open_store(const StoreOptions& options);

// The store URL from N3RLHF_FEEDBACK_STORE, or empty.
std::string store_url_from_environment();

// Microseconds since the epoch as "YYYY-MM-DDTHH:MM:SS.ffffffZ".
std::string format_timestamp(int64_t micros);
std::string now_timestamp();
// Parses an RFC 3339 date ("2025-01-31") or date-time ("2025-01-31T12:00:00Z",
// "...12:00:00.5+02:00") into its canonical UTC form; false when the text is not one.
bool canonical_timestamp(const std::string& text, std::string* canonical);

}  // namespace n3rlhf::service
