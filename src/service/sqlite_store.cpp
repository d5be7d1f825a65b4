// sqlite_store.cpp: the embedded Store backend: one SQLite file in WAL mode with synchronous=FULL
// (a commit is on disk before insert_feedback returns), one writer connection behind a mutex and
// a pool of reader connections. Every statement is prepared with bound parameters.
#include <sqlite3.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "core/error.hpp"
#include "service/migrations.hpp"
#include "service/store_backends.hpp"

namespace n3rlhf::service {

namespace {

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  throw StorageError(ErrorCode::kStoreUnavailable, "sqlite: " + what + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
}

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) fail(db, "prepare");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  void bind(int index, const std::string& text) {
    check(sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
  }
  void bind(int index, int64_t value) { check(sqlite3_bind_int64(stmt_, index, value)); }
  void bind(int index, const std::optional<double>& value) {
    check(value ? sqlite3_bind_double(stmt_, index, *value) : sqlite3_bind_null(stmt_, index));
  }
  void bind_null(int index) { check(sqlite3_bind_null(stmt_, index)); }
  // True while there is a row.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, "step");
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int column) const {
    const unsigned char* value = sqlite3_column_text(stmt_, column);
    return value == nullptr ? std::string()
                            : std::string(reinterpret_cast<const char*>(value), sqlite3_column_bytes(stmt_, column));
  }
  // The column's text without a copy, valid until the next step.
  std::string_view view(int column) const {
    const unsigned char* value = sqlite3_column_text(stmt_, column);
    return value == nullptr ? std::string_view()
                            : std::string_view(reinterpret_cast<const char*>(value),
                                               static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  double real(int column) const { return sqlite3_column_double(stmt_, column); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(db_, "bind");
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec(sqlite3* db, const std::string& sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string text = message ? message : "error";
    sqlite3_free(message);
    throw StorageError(ErrorCode::kStoreUnavailable, "sqlite: " + text);
  }
}

sqlite3* open_connection(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    const std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw StorageError(ErrorCode::kStoreUnavailable, "sqlite: cannot open the database: " + message, {{"path", path}});
  }
  sqlite3_busy_timeout(db, 30000);
  exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
  return db;
}

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT, rolling back when it throws.
template <typename Body>
void transaction(sqlite3* db, Body&& body) {
  exec(db, "BEGIN IMMEDIATE");
  try {
    body();
    exec(db, "COMMIT");
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

constexpr const char* kFeedbackColumns =
    "id, agent_id, prompt, response_chosen, response_rejected, score, annotator_id, metadata, created_at";
constexpr const char* kJobColumns =
    "id, job_name, algorithm, base_model, dataset_path, config, job_text, launcher, status, created_at, "
    "started_at, finished_at, pid, pid_start_time, exit_code, error, work_dir, output_dir, metrics_path, manifest";

FeedbackRecord read_feedback(const Statement& s) {
  FeedbackRecord row;
  row.id = s.integer(0);
  row.agent_id = s.text(1);
  row.prompt = s.text(2);
  row.response_chosen = s.text(3);
  row.response_rejected = s.text(4);
  if (!s.is_null(5)) row.score = s.real(5);
  row.annotator_id = s.text(6);
  row.metadata = s.text(7);
  row.created_at = s.text(8);
  return row;
}

JobRecord read_job(const Statement& s) {
  JobRecord job;
  job.id = s.integer(0);
  job.job_name = s.text(1);
  job.algorithm = s.text(2);
  job.base_model = s.text(3);
  job.dataset_path = s.text(4);
  job.config = s.text(5);
  job.job_text = s.text(6);
  job.launcher = s.text(7);
  job.status = parse_job_status(s.text(8));
  job.created_at = s.text(9);
  job.started_at = s.text(10);
  job.finished_at = s.text(11);
  job.pid = s.integer(12);
  job.pid_start_time = s.integer(13);
  if (!s.is_null(14)) job.exit_code = s.integer(14);
  job.error = s.text(15);
  job.work_dir = s.text(16);
  job.output_dir = s.text(17);
  job.metrics_path = s.text(18);
  job.manifest = s.text(19);
  return job;
}

// The feedback query's WHERE clause: every filter is always present and bound; an empty value
// disables its filter inside SQL (no text is spliced in).
const std::string kFeedbackWhere =
    " WHERE agent_id = ?1 AND (?2 = '' OR created_at >= ?2) AND (?3 = '' OR created_at < ?3)";

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, int pool_size) : path_(std::move(path)), pool_size_(std::max(pool_size, 1)) {
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    if (!parent.empty()) {
      std::error_code error;
      std::filesystem::create_directories(parent, error);
    }
    writer_ = open_connection(path_);
    migrate();
  }

  ~SqliteStore() override {
    for (sqlite3* db : readers_) sqlite3_close(db);
    sqlite3_close(writer_);
  }

  std::string backend() const override { return "sqlite"; }

  int schema_version() override {
    Reader reader(*this);
    Statement s(reader.db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    s.step();
    return static_cast<int>(s.integer(0));
  }

  bool healthy() override {
    try {
      Reader reader(*this);
      Statement s(reader.db, "SELECT 1");
      return s.step() && s.integer(0) == 1;
    } catch (const std::exception&) {
      return false;
    }
  }

  std::vector<int64_t> insert_feedback(const std::vector<FeedbackRecord>& rows) override {
    std::vector<int64_t> ids;
    ids.reserve(rows.size());
    std::lock_guard<std::mutex> lock(writer_mutex_);
    transaction(writer_, [&] {
      Statement s(writer_,
                  "INSERT INTO rlhf_feedback (agent_id, prompt, response_chosen, response_rejected, score, "
                  "annotator_id, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      for (const FeedbackRecord& row : rows) {
        s.bind(1, row.agent_id);
        s.bind(2, row.prompt);
        s.bind(3, row.response_chosen);
        s.bind(4, row.response_rejected);
        s.bind(5, row.score);
        s.bind(6, row.annotator_id);
        s.bind(7, row.metadata);
        s.bind(8, row.created_at.empty() ? now_timestamp() : row.created_at);
        s.step();
        ids.push_back(sqlite3_last_insert_rowid(writer_));
        s.reset();
      }
    });
    return ids;
  }

  void scan_feedback(const FeedbackQuery& query, const std::function<void(const FeedbackRecord&)>& visit) override {
    Reader reader(*this);
    const std::string sql = std::string("SELECT ") + kFeedbackColumns + " FROM rlhf_feedback" + kFeedbackWhere +
                            " ORDER BY created_at, id LIMIT ?4";
    Statement s(reader.db, sql.c_str());
    bind_query(s, query);
    s.bind(4, query.limit > 0 ? query.limit : int64_t{-1});
    while (s.step()) visit(read_feedback(s));
  }

  void scan_preference_pairs(const FeedbackQuery& query,
                             const std::function<void(const PreferencePair&)>& visit) override {
    Reader reader(*this);
    const std::string sql = "SELECT prompt, response_chosen, response_rejected FROM rlhf_feedback" + kFeedbackWhere +
                            " ORDER BY created_at, id LIMIT ?4";
    Statement s(reader.db, sql.c_str());
    bind_query(s, query);
    s.bind(4, query.limit > 0 ? query.limit : int64_t{-1});
    while (s.step()) visit(PreferencePair{s.view(0), s.view(1), s.view(2)});
  }

  int64_t count_feedback(const FeedbackQuery& query) override {
    Reader reader(*this);
    const std::string sql = "SELECT COUNT(*) FROM rlhf_feedback" + kFeedbackWhere;
    Statement s(reader.db, sql.c_str());
    bind_query(s, query);
    s.step();
    const int64_t count = s.integer(0);
    return query.limit > 0 ? std::min(count, query.limit) : count;
  }

  std::vector<AgentCount> feedback_counts() override {
    Reader reader(*this);
    Statement s(reader.db, "SELECT agent_id, COUNT(*) FROM rlhf_feedback GROUP BY agent_id ORDER BY agent_id");
    std::vector<AgentCount> counts;
    while (s.step()) counts.push_back({s.text(0), s.integer(1)});
    return counts;
  }

  int64_t insert_job(const JobRecord& job) override {
    std::lock_guard<std::mutex> lock(writer_mutex_);
    int64_t id = 0;
    transaction(writer_, [&] {
      Statement s(writer_,
                  "INSERT INTO rlhf_jobs (job_name, algorithm, base_model, dataset_path, config, job_text, launcher, "
                  "status, created_at, work_dir, output_dir, metrics_path, manifest) VALUES "
                  "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
      s.bind(1, job.job_name);
      s.bind(2, job.algorithm);
      s.bind(3, job.base_model);
      s.bind(4, job.dataset_path);
      s.bind(5, job.config);
      s.bind(6, job.job_text);
      s.bind(7, job.launcher);
      s.bind(8, std::string(job_status_name(job.status)));
      s.bind(9, job.created_at.empty() ? now_timestamp() : job.created_at);
      s.bind(10, job.work_dir);
      s.bind(11, job.output_dir);
      s.bind(12, job.metrics_path);
      s.bind(13, job.manifest);
      s.step();
      id = sqlite3_last_insert_rowid(writer_);
    });
    return id;
  }

  void update_job(int64_t id, const JobUpdate& u) override {
    std::lock_guard<std::mutex> lock(writer_mutex_);
    transaction(writer_, [&] {
      // Each column is replaced only when its "set" flag is 1; the SQL text never changes.
      Statement s(writer_,
                  "UPDATE rlhf_jobs SET "
                  "status = CASE WHEN ?2 THEN ?3 ELSE status END, "
                  "started_at = CASE WHEN ?4 THEN ?5 ELSE started_at END, "
                  "finished_at = CASE WHEN ?6 THEN ?7 ELSE finished_at END, "
                  "pid = CASE WHEN ?8 THEN ?9 ELSE pid END, "
                  "pid_start_time = CASE WHEN ?10 THEN ?11 ELSE pid_start_time END, "
                  "exit_code = CASE WHEN ?12 THEN ?13 ELSE exit_code END, "
                  "error = CASE WHEN ?14 THEN ?15 ELSE error END "
                  "WHERE id = ?1");
      s.bind(1, id);
      s.bind(2, int64_t{u.status.has_value()});
      s.bind(3, std::string(u.status ? job_status_name(*u.status) : ""));
      s.bind(4, int64_t{u.started_at.has_value()});
      s.bind(5, u.started_at.value_or(""));
      s.bind(6, int64_t{u.finished_at.has_value()});
      s.bind(7, u.finished_at.value_or(""));
      s.bind(8, int64_t{u.pid.has_value()});
      s.bind(9, u.pid.value_or(0));
      s.bind(10, int64_t{u.pid_start_time.has_value()});
      s.bind(11, u.pid_start_time.value_or(0));
      s.bind(12, int64_t{u.exit_code.has_value()});
      s.bind(13, u.exit_code.value_or(0));
      s.bind(14, int64_t{u.error.has_value()});
      s.bind(15, u.error.value_or(""));
      s.step();
    });
  }

  std::optional<JobRecord> find_job(int64_t id) override {
    Reader reader(*this);
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM rlhf_jobs WHERE id = ?1";
    Statement s(reader.db, sql.c_str());
    s.bind(1, id);
    if (!s.step()) return std::nullopt;
    return read_job(s);
  }

  std::vector<JobRecord> list_jobs(int64_t limit) override {
    Reader reader(*this);
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM rlhf_jobs ORDER BY id DESC LIMIT ?1";
    Statement s(reader.db, sql.c_str());
    s.bind(1, limit);
    std::vector<JobRecord> jobs;
    while (s.step()) jobs.push_back(read_job(s));
    return jobs;
  }

  std::vector<JobRecord> jobs_with_status(JobStatus status) override {
    Reader reader(*this);
    const std::string sql = std::string("SELECT ") + kJobColumns + " FROM rlhf_jobs WHERE status = ?1 ORDER BY id";
    Statement s(reader.db, sql.c_str());
    s.bind(1, std::string(job_status_name(status)));
    std::vector<JobRecord> jobs;
    while (s.step()) jobs.push_back(read_job(s));
    return jobs;
  }

 private:
  // A reader connection borrowed from the pool for one call.
  struct Reader {
    explicit Reader(SqliteStore& store) : store(store) {
      std::unique_lock<std::mutex> lock(store.pool_mutex_);
      store.pool_ready_.wait(lock, [&] { return !store.readers_.empty() || store.open_readers_ < store.pool_size_; });
      if (!store.readers_.empty()) {
        db = store.readers_.back();
        store.readers_.pop_back();
      } else {
        ++store.open_readers_;
        lock.unlock();
        try {
          db = open_connection(store.path_);
        } catch (...) {
          std::lock_guard<std::mutex> relock(store.pool_mutex_);
          --store.open_readers_;
          store.pool_ready_.notify_one();
          throw;
        }
      }
    }
    ~Reader() {
      std::lock_guard<std::mutex> lock(store.pool_mutex_);
      store.readers_.push_back(db);
      store.pool_ready_.notify_one();
    }
    SqliteStore& store;
    sqlite3* db = nullptr;
  };

  static void bind_query(Statement& s, const FeedbackQuery& query) {
    s.bind(1, query.agent_id);
    s.bind(2, query.since);
    s.bind(3, query.until);
  }

  void migrate() {
    std::lock_guard<std::mutex> lock(writer_mutex_);
    exec(writer_,
         "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
         "applied_at TEXT NOT NULL)");
    for (const Migration& migration : migrations()) {
      transaction(writer_, [&] {
        bool applied = false;
        {  // finalized before the migration runs: SQLite refuses DROP while a statement is pending
          Statement check(writer_, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?1");
          check.bind(1, int64_t{migration.version});
          check.step();
          applied = check.integer(0) > 0;
        }
        if (applied) return;
        exec(writer_, migration.sqlite_sql);
        Statement record(writer_, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)");
        record.bind(1, int64_t{migration.version});
        record.bind(2, migration.name);
        record.bind(3, now_timestamp());
        record.step();
      });
    }
  }

  std::string path_;
  int pool_size_;
  sqlite3* writer_ = nullptr;
  std::mutex writer_mutex_;
  std::mutex pool_mutex_;
  std::condition_variable pool_ready_;
  std::vector<sqlite3*> readers_;
  int open_readers_ = 0;
};

}  // namespace

std::unique_ptr<Store> open_sqlite_store(const std::string& path, const StoreOptions& options) {
  if (path.empty()) {
    throw ConfigurationError(ErrorCode::kIncompatibleOptions, "sqlite: the store URL gives no file (sqlite:PATH)");
  }
  return std::make_unique<SqliteStore>(path, options.pool_size);
}

}  // namespace n3rlhf::service
