// migrations.cpp: the SQL of each numbered migration for SQLite and PostgreSQL. Never edit a
// released migration; add the next number.
#include "service/migrations.hpp"

namespace n3rlhf::service {

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> list = {
      {1, "rlhf_feedback",
       R"sql(
CREATE TABLE rlhf_feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id TEXT NOT NULL,
  prompt TEXT NOT NULL,
  response_chosen TEXT NOT NULL,
  response_rejected TEXT NOT NULL,
  score REAL,
  annotator_id TEXT NOT NULL DEFAULT '',
  metadata TEXT NOT NULL DEFAULT '{}',
  created_at TEXT NOT NULL
);
CREATE INDEX idx_rlhf_feedback_agent_created ON rlhf_feedback (agent_id, created_at);
CREATE INDEX idx_rlhf_feedback_created ON rlhf_feedback (created_at);
)sql",
       R"sql(
CREATE TABLE rlhf_feedback (
  id BIGSERIAL PRIMARY KEY,
  agent_id TEXT NOT NULL,
  prompt TEXT NOT NULL,
  response_chosen TEXT NOT NULL,
  response_rejected TEXT NOT NULL,
  score DOUBLE PRECISION,
  annotator_id TEXT NOT NULL DEFAULT '',
  metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_rlhf_feedback_agent_created ON rlhf_feedback (agent_id, created_at);
CREATE INDEX idx_rlhf_feedback_created ON rlhf_feedback (created_at);
)sql"},
      {2, "rlhf_jobs",
       R"sql(
CREATE TABLE rlhf_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_name TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  base_model TEXT NOT NULL DEFAULT '',
  dataset_path TEXT NOT NULL DEFAULT '',
  config TEXT NOT NULL DEFAULT '{}',
  job_text TEXT NOT NULL DEFAULT '',
  launcher TEXT NOT NULL DEFAULT 'local',
  status TEXT NOT NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  pid INTEGER NOT NULL DEFAULT 0,
  pid_start_time INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  error TEXT NOT NULL DEFAULT '',
  work_dir TEXT NOT NULL DEFAULT '',
  output_dir TEXT NOT NULL DEFAULT '',
  metrics_path TEXT NOT NULL DEFAULT '',
  manifest TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idx_rlhf_jobs_status ON rlhf_jobs (status);
CREATE INDEX idx_rlhf_jobs_created ON rlhf_jobs (created_at);
)sql",
       R"sql(
CREATE TABLE rlhf_jobs (
  id BIGSERIAL PRIMARY KEY,
  job_name TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  base_model TEXT NOT NULL DEFAULT '',
  dataset_path TEXT NOT NULL DEFAULT '',
  config JSONB NOT NULL DEFAULT '{}'::jsonb,
  job_text TEXT NOT NULL DEFAULT '',
  launcher TEXT NOT NULL DEFAULT 'local',
  status TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ,
  pid BIGINT NOT NULL DEFAULT 0,
  pid_start_time BIGINT NOT NULL DEFAULT 0,
  exit_code BIGINT,
  error TEXT NOT NULL DEFAULT '',
  work_dir TEXT NOT NULL DEFAULT '',
  output_dir TEXT NOT NULL DEFAULT '',
  metrics_path TEXT NOT NULL DEFAULT '',
  manifest TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idx_rlhf_jobs_status ON rlhf_jobs (status);
CREATE INDEX idx_rlhf_jobs_created ON rlhf_jobs (created_at);
)sql"},
      // Exports read an agent's rows in (created_at, id) order, a page at a time after the last
      // (created_at, id): with id in the index that is an ordered index range scan that stops at
      // the page's end, where (agent_id, created_at) made every page fetch and sort all the
      // agent's rows (each page of a large export cost as much as the whole export).
      {3, "rlhf_feedback_export_order",
       R"sql(
CREATE INDEX idx_rlhf_feedback_agent_created_id ON rlhf_feedback (agent_id, created_at, id);
DROP INDEX idx_rlhf_feedback_agent_created;
)sql",
       R"sql(
CREATE INDEX idx_rlhf_feedback_agent_created_id ON rlhf_feedback (agent_id, created_at, id);
DROP INDEX idx_rlhf_feedback_agent_created;
)sql"},
  };
  return list;
}

}  // namespace n3rlhf::service
