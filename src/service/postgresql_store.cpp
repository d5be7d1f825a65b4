// postgresql_store.cpp: the production Store backend on libpqxx: a pool of connections, each with
// the same prepared statements; timestamps are TIMESTAMPTZ in the database and canonical RFC 3339
// text outside it. Exports page through the rows by (created_at, id) so that no result set is
// held whole in memory.
#include <pqxx/pqxx>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

#include "core/error.hpp"
#include "service/migrations.hpp"
#include "service/store_backends.hpp"

namespace n3rlhf::service {

namespace {

constexpr int64_t kPageRows = 2000;

// to_char of a TIMESTAMPTZ in UTC in the canonical form.
#define N3_TS(column) "to_char(" column " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

constexpr const char* kFeedbackSelect =
    "SELECT id, agent_id, prompt, response_chosen, response_rejected, score, annotator_id, metadata::text, "
    N3_TS("created_at") " FROM rlhf_feedback ";
constexpr const char* kJobSelect =
    "SELECT id, job_name, algorithm, base_model, dataset_path, config::text, job_text, launcher, status, "
    N3_TS("created_at") ", " N3_TS("started_at") ", " N3_TS("finished_at") ", pid, pid_start_time, exit_code, error, "
    "work_dir, output_dir, metrics_path, manifest FROM rlhf_jobs ";
constexpr const char* kFeedbackWhere =
    "WHERE agent_id = $1 AND ($2 = '' OR created_at >= NULLIF($2, '')::timestamptz) "
    "AND ($3 = '' OR created_at < NULLIF($3, '')::timestamptz) ";

std::string optional_text(const std::optional<double>& value) {
  if (!value) return "";
  char text[64];
  std::snprintf(text, sizeof(text), "%.17g", *value);
  return text;
}

// A group commit's rows go in as one statement: each column as one array parameter, unnested in
// order (WITH ORDINALITY), so that ids are drawn from the sequence, and RETURNING lists them, in
// the rows' order. One round trip and, being one statement, its own transaction.
constexpr const char* kInsertFeedback =
    "INSERT INTO rlhf_feedback (agent_id, prompt, response_chosen, response_rejected, score, annotator_id, metadata, "
    "created_at) SELECT a, p, c, r, s, n, m, t FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::double precision[], $6::text[], $7::jsonb[], $8::timestamptz[]) WITH ORDINALITY AS u(a, p, c, r, s, n, m, t, k) "
    "ORDER BY k RETURNING id";

// An element of a PostgreSQL array literal: double-quoted, '"' and '\\' escaped (NUL never reaches
// the store: the API refuses it).
void append_array_element(std::string& out, const std::string& text) {
  out += out.size() > 1 ? ",\"" : "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

void prepare_statements(pqxx::connection& c) {
  c.prepare("insert_feedback", kInsertFeedback);
  // Each scan has a first page and a page after (created_at, id), so that the position is an index
  // condition on (agent_id, created_at, id) rather than a filter that an OR would make it.
  constexpr const char* kPairsSelect = "SELECT prompt, response_chosen, response_rejected, id FROM rlhf_feedback ";
  constexpr const char* kOrder = "ORDER BY created_at, id LIMIT ";
  constexpr const char* kAfter = "AND (created_at, id) > ($4::timestamptz, $5::bigint) ";
  c.prepare("scan_feedback", std::string(kFeedbackSelect) + kFeedbackWhere + kOrder + "$4");
  c.prepare("scan_feedback_after", std::string(kFeedbackSelect) + kFeedbackWhere + kAfter + kOrder + "$6");
  // The export's columns only (and id): created_at is read only for the last row of a full page,
  // as the server's own text that $4::timestamptz reads back exactly.
  c.prepare("scan_pairs", std::string(kPairsSelect) + kFeedbackWhere + kOrder + "$4");
  c.prepare("scan_pairs_after", std::string(kPairsSelect) + kFeedbackWhere + kAfter + kOrder + "$6");
  c.prepare("feedback_created_at", "SELECT created_at::text FROM rlhf_feedback WHERE id = $1");
  c.prepare("count_feedback", std::string("SELECT COUNT(*) FROM rlhf_feedback ") + kFeedbackWhere);
  c.prepare("feedback_counts", "SELECT agent_id, COUNT(*) FROM rlhf_feedback GROUP BY agent_id ORDER BY agent_id");
  c.prepare("insert_job",
            "INSERT INTO rlhf_jobs (job_name, algorithm, base_model, dataset_path, config, job_text, launcher, status, "
            "created_at, work_dir, output_dir, metrics_path, manifest) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, "
            "$9::timestamptz, $10, $11, $12, $13) RETURNING id");
  c.prepare("update_job",
            "UPDATE rlhf_jobs SET "
            "status = CASE WHEN $2 THEN $3 ELSE status END, "
            "started_at = CASE WHEN $4 THEN NULLIF($5, '')::timestamptz ELSE started_at END, "
            "finished_at = CASE WHEN $6 THEN NULLIF($7, '')::timestamptz ELSE finished_at END, "
            "pid = CASE WHEN $8 THEN $9::bigint ELSE pid END, "
            "pid_start_time = CASE WHEN $10 THEN $11::bigint ELSE pid_start_time END, "
            "exit_code = CASE WHEN $12 THEN $13::bigint ELSE exit_code END, "
            "error = CASE WHEN $14 THEN $15 ELSE error END WHERE id = $1");
  c.prepare("find_job", std::string(kJobSelect) + "WHERE id = $1");
  c.prepare("list_jobs", std::string(kJobSelect) + "ORDER BY id DESC LIMIT $1");
  c.prepare("jobs_with_status", std::string(kJobSelect) + "WHERE status = $1 ORDER BY id");
  c.prepare("schema_version", "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
}

FeedbackRecord read_feedback(const pqxx::row& r) {
  FeedbackRecord row;
  row.id = r[0].as<int64_t>();
  row.agent_id = r[1].as<std::string>();
  row.prompt = r[2].as<std::string>();
  row.response_chosen = r[3].as<std::string>();
  row.response_rejected = r[4].as<std::string>();
  if (!r[5].is_null()) row.score = r[5].as<double>();
  row.annotator_id = r[6].as<std::string>();
  row.metadata = r[7].as<std::string>();
  row.created_at = r[8].as<std::string>();
  return row;
}

JobRecord read_job(const pqxx::row& r) {
  JobRecord job;
  job.id = r[0].as<int64_t>();
  job.job_name = r[1].as<std::string>();
  job.algorithm = r[2].as<std::string>();
  job.base_model = r[3].as<std::string>();
  job.dataset_path = r[4].as<std::string>();
  job.config = r[5].as<std::string>();
  job.job_text = r[6].as<std::string>();
  job.launcher = r[7].as<std::string>();
  job.status = parse_job_status(r[8].as<std::string>());
  job.created_at = r[9].as<std::string>();
  job.started_at = r[10].is_null() ? "" : r[10].as<std::string>();
  job.finished_at = r[11].is_null() ? "" : r[11].as<std::string>();
  job.pid = r[12].as<int64_t>();
  job.pid_start_time = r[13].as<int64_t>();
  if (!r[14].is_null()) job.exit_code = r[14].as<int64_t>();
  job.error = r[15].as<std::string>();
  job.work_dir = r[16].as<std::string>();
  job.output_dir = r[17].as<std::string>();
  job.metrics_path = r[18].as<std::string>();
  job.manifest = r[19].as<std::string>();
  return job;
}

class PostgresqlStore final : public Store {
 public:
  PostgresqlStore(std::string url, int pool_size) : url_(std::move(url)), pool_size_(std::max(pool_size, 1)) {
    guard("connect", [&] {
      pqxx::connection c(url_);
      migrate(c);
    });
  }

  std::string backend() const override { return "postgresql"; }

  int schema_version() override {
    return guard("schema version", [&] {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      return tx.exec_prepared1("schema_version")[0].as<int>();
    });
  }

  bool healthy() override {
    try {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      return tx.exec1("SELECT 1")[0].as<int>() == 1;
    } catch (const std::exception&) {
      return false;
    }
  }

  std::vector<int64_t> insert_feedback(const std::vector<FeedbackRecord>& rows) override {
    return guard("insert feedback", [&] {
      const std::string stamp = now_timestamp();
      std::string columns[8];
      for (std::string& column : columns) column = "{";
      for (const FeedbackRecord& row : rows) {
        append_array_element(columns[0], row.agent_id);
        append_array_element(columns[1], row.prompt);
        append_array_element(columns[2], row.response_chosen);
        append_array_element(columns[3], row.response_rejected);
        if (row.score) {
          append_array_element(columns[4], optional_text(row.score));
        } else {
          columns[4] += columns[4].size() > 1 ? ",NULL" : "NULL";
        }
        append_array_element(columns[5], row.annotator_id);
        append_array_element(columns[6], row.metadata);
        append_array_element(columns[7], row.created_at.empty() ? stamp : row.created_at);
      }
      for (std::string& column : columns) column += "}";
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);  // the one statement commits by itself
      const pqxx::result result = tx.exec_prepared("insert_feedback", columns[0], columns[1], columns[2], columns[3],
                                                   columns[4], columns[5], columns[6], columns[7]);
      if (result.size() != rows.size()) throw std::runtime_error("the INSERT returned a different row count");
      std::vector<int64_t> ids;
      ids.reserve(rows.size());
      for (const pqxx::row& r : result) ids.push_back(r[0].as<int64_t>());
      return ids;
    });
  }

  void scan_feedback(const FeedbackQuery& query, const std::function<void(const FeedbackRecord&)>& visit) override {
    guard("export feedback", [&] {
      scan_pages(
          "scan_feedback", query, [&](const pqxx::result& page) { for (const pqxx::row& r : page) visit(read_feedback(r)); },
          [](pqxx::transaction_base&, const pqxx::result& page) {
            return std::make_pair(page.back()[8].as<std::string>(), page.back()[0].as<int64_t>());
          });
      return 0;
    });
  }

  void scan_preference_pairs(const FeedbackQuery& query,
                             const std::function<void(const PreferencePair&)>& visit) override {
    guard("export feedback", [&] {
      const auto view = [](const pqxx::field& f) { return std::string_view(f.c_str(), f.size()); };
      scan_pages(
          "scan_pairs", query,
          [&](const pqxx::result& page) {
            for (const pqxx::row& r : page) visit(PreferencePair{view(r[0]), view(r[1]), view(r[2])});
          },
          // The export's statement reads no created_at: the last row's, as the server's own text.
          [](pqxx::transaction_base& tx, const pqxx::result& page) {
            const int64_t id = page.back()[3].as<int64_t>();
            return std::make_pair(tx.exec_prepared1("feedback_created_at", id)[0].as<std::string>(), id);
          });
      return 0;
    });
  }

  int64_t count_feedback(const FeedbackQuery& query) override {
    return guard("count feedback", [&] {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      const int64_t count = tx.exec_prepared1("count_feedback", query.agent_id, query.since, query.until)[0].as<int64_t>();
      return query.limit > 0 ? std::min(count, query.limit) : count;
    });
  }

  std::vector<AgentCount> feedback_counts() override {
    return guard("count feedback", [&] {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      std::vector<AgentCount> counts;
      for (const pqxx::row& r : tx.exec_prepared("feedback_counts")) {
        counts.push_back({r[0].as<std::string>(), r[1].as<int64_t>()});
      }
      return counts;
    });
  }

  int64_t insert_job(const JobRecord& job) override {
    return guard("insert job", [&] {
      Lease lease(*this);
      pqxx::work tx(*lease.connection);
      const int64_t id = tx.exec_prepared1("insert_job", job.job_name, job.algorithm, job.base_model, job.dataset_path,
                                           job.config, job.job_text, job.launcher,
                                           std::string(job_status_name(job.status)),
                                           job.created_at.empty() ? now_timestamp() : job.created_at, job.work_dir,
                                           job.output_dir, job.metrics_path, job.manifest)[0]
                             .as<int64_t>();
      tx.commit();
      return id;
    });
  }

  void update_job(int64_t id, const JobUpdate& u) override {
    guard("update job", [&] {
      Lease lease(*this);
      pqxx::work tx(*lease.connection);
      tx.exec_prepared("update_job", id, u.status.has_value(),
                       std::string(u.status ? job_status_name(*u.status) : ""), u.started_at.has_value(),
                       u.started_at.value_or(""), u.finished_at.has_value(), u.finished_at.value_or(""),
                       u.pid.has_value(), u.pid.value_or(0), u.pid_start_time.has_value(),
                       u.pid_start_time.value_or(0), u.exit_code.has_value(), u.exit_code.value_or(0),
                       u.error.has_value(), u.error.value_or(""));
      tx.commit();
      return 0;
    });
  }

  std::optional<JobRecord> find_job(int64_t id) override {
    return guard("find job", [&]() -> std::optional<JobRecord> {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      const pqxx::result result = tx.exec_prepared("find_job", id);
      if (result.empty()) return std::nullopt;
      return read_job(result[0]);
    });
  }

  std::vector<JobRecord> list_jobs(int64_t limit) override {
    return guard("list jobs", [&] {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      std::vector<JobRecord> jobs;
      for (const pqxx::row& r : tx.exec_prepared("list_jobs", limit)) jobs.push_back(read_job(r));
      return jobs;
    });
  }

  std::vector<JobRecord> jobs_with_status(JobStatus status) override {
    return guard("list jobs", [&] {
      Lease lease(*this);
      pqxx::nontransaction tx(*lease.connection);
      std::vector<JobRecord> jobs;
      for (const pqxx::row& r : tx.exec_prepared("jobs_with_status", std::string(job_status_name(status)))) {
        jobs.push_back(read_job(r));
      }
      return jobs;
    });
  }

 private:
  // A pooled connection for one call; a broken connection is dropped instead of returned. Callers
  // that find the pool busy queue in arrival order and a returned connection is handed to the
  // first of them (a condition variable's wake-ups are not fair: under load some callers waited
  // many turns, which was the export's p99).
  struct Waiter {
    std::condition_variable ready;
    std::unique_ptr<pqxx::connection> connection;  // handed over by a returning lease
    bool may_open = false;                         // or the right to open one (open_ counted for it)
    bool served = false;
  };
  struct Lease {
    explicit Lease(PostgresqlStore& store) : store(store) {
      std::unique_lock<std::mutex> lock(store.pool_mutex_);
      if (store.waiters_.empty() && !store.idle_.empty()) {
        connection = std::move(store.idle_.back());
        store.idle_.pop_back();
        return;
      }
      if (store.waiters_.empty() && store.open_ < store.pool_size_) {
        ++store.open_;
      } else {
        Waiter waiter;
        store.waiters_.push_back(&waiter);
        waiter.ready.wait(lock, [&] { return waiter.served; });
        if (waiter.connection) {
          connection = std::move(waiter.connection);
          return;
        }
      }
      lock.unlock();
      try {
        connection = std::make_unique<pqxx::connection>(store.url_);
        prepare_statements(*connection);
      } catch (...) {
        std::lock_guard<std::mutex> relock(store.pool_mutex_);
        store.release_slot_locked();
        throw;
      }
    }
    ~Lease() {
      std::lock_guard<std::mutex> lock(store.pool_mutex_);
      if (!connection || !connection->is_open()) {
        store.release_slot_locked();
      } else if (!store.waiters_.empty()) {
        Waiter* next = store.waiters_.front();
        store.waiters_.pop_front();
        next->connection = std::move(connection);
        next->served = true;
        next->ready.notify_one();
      } else {
        store.idle_.push_back(std::move(connection));
      }
    }
    PostgresqlStore& store;
    std::unique_ptr<pqxx::connection> connection;
  };

  // An export page by page: one statement when it fits in one page (one_page), else every page
  // inside one read-only snapshot (`statement`, then `statement`_after the (created_at, id) that
  // `position` reads off the page before).
  template <typename VisitPage, typename Position>
  void scan_pages(const std::string& statement, const FeedbackQuery& query, VisitPage&& visit_page, Position&& position) {
    Lease lease(*this);
    if (one_page(*lease.connection, statement.c_str(), query, visit_page)) return;
    pqxx::read_transaction tx(*lease.connection);
    const std::string after_statement = statement + "_after";
    std::pair<std::string, int64_t> after;  // created_at text and id of the last row so far
    int64_t remaining = query.limit > 0 ? query.limit : -1;
    while (remaining != 0) {
      const int64_t page = remaining < 0 ? kPageRows : std::min(remaining, kPageRows);
      const pqxx::result result =
          after.first.empty() ? tx.exec_prepared(statement, query.agent_id, query.since, query.until, page)
                              : tx.exec_prepared(after_statement, query.agent_id, query.since, query.until, after.first,
                                                 after.second, page);
      visit_page(result);
      if (remaining > 0) remaining -= static_cast<int64_t>(result.size());
      if (static_cast<int64_t>(result.size()) < page || remaining == 0) break;
      after = position(tx, result);
    }
  }

  // An export that fits in one page needs no transaction (one statement reads one snapshot): the
  // first page is asked for with one row more than a page, outside BEGIN/COMMIT; when it comes
  // back whole, `visit_page` gets it and the export took one round trip instead of three or more.
  // A longer export returns false having visited nothing, and pages through a read-only
  // transaction from the start (reading its first page twice).
  template <typename VisitPage>
  static bool one_page(pqxx::connection& connection, const char* statement, const FeedbackQuery& query,
                       VisitPage&& visit_page) {
    const bool limited = query.limit > 0 && query.limit <= kPageRows;
    pqxx::result result;
    {
      pqxx::nontransaction tx(connection);
      result = tx.exec_prepared(statement, query.agent_id, query.since, query.until, limited ? query.limit : kPageRows + 1);
    }
    if (!limited && static_cast<int64_t>(result.size()) > kPageRows) return false;
    visit_page(result);
    return true;
  }

  // A connection slot is free (its connection broke or never opened): the first waiter may open
  // one in it, else the pool counts one fewer.
  void release_slot_locked() {
    if (waiters_.empty()) {
      --open_;
      return;
    }
    Waiter* next = waiters_.front();
    waiters_.pop_front();
    next->may_open = true;
    next->served = true;
    next->ready.notify_one();
  }

  // libpqxx's exceptions become RLHF054 naming the operation; our own errors pass through.
  template <typename Body>
  auto guard(const char* what, Body&& body) -> decltype(body()) {
    try {
      return body();
    } catch (const RlhfError&) {
      throw;
    } catch (const std::exception& error) {
      throw StorageError(ErrorCode::kStoreUnavailable, std::string("postgresql: ") + what + ": " + error.what(),
                         {{"url", redact_url(url_)}});
    }
  }

  void migrate(pqxx::connection& c) {
    {
      pqxx::work tx(c);
      // One migrator at a time across processes (a fixed advisory lock key: "n3rl").
      tx.exec("SELECT pg_advisory_xact_lock(1848078956)");
      tx.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
          "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())");
      tx.commit();
    }
    for (const Migration& migration : migrations()) {
      pqxx::work tx(c);
      tx.exec("SELECT pg_advisory_xact_lock(1848078956)");
      const pqxx::result done = tx.exec_params("SELECT 1 FROM schema_migrations WHERE version = $1", migration.version);
      if (!done.empty()) continue;
      tx.exec(migration.postgresql_sql);
      tx.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name);
      tx.commit();
    }
  }

  std::string url_;
  int pool_size_;
  std::mutex pool_mutex_;
  std::deque<Waiter*> waiters_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int open_ = 0;
};

}  // namespace

std::unique_ptr<Store> open_postgresql_store(const std::string& url, const StoreOptions& options) {
  return std::make_unique<PostgresqlStore>(url, options.pool_size);
}

}  // namespace n3rlhf::service
