// service_options.hpp: everything `n3rlhf serve` can be told: where it listens, its store, who
// may call it (tokens and roles), the request limits, and how jobs are run (mpirun, n3rlhf-dist,
// the directories a job's paths must stay inside, the Kubernetes image for rendered MPIJobs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace n3rlhf::service {

enum class Role { kAnnotator, kOperator, kReader };
const char* role_name(Role role);

struct TokenGrant {
  std::string name;   // who holds it, for logs and metrics (never the token itself)
  std::string token;
  std::vector<Role> roles;
};

struct RequestLimits {
  size_t max_body_bytes = 8u << 20;       // any request body
  size_t max_text_bytes = 64u << 10;      // prompt, response_chosen, response_rejected
  size_t max_id_bytes = 256;              // agent_id, annotator_id, job_name
  size_t max_metadata_bytes = 16u << 10;  // metadata, as JSON text
  size_t max_batch_rows = 1000;           // rows in one batch request
  size_t max_job_text_bytes = 256u << 10;
  double rate_per_second = 0;             // per token; 0: unlimited
  double rate_burst = 0;                  // bucket size; 0: max(1, rate_per_second)
};

struct JobRunnerOptions {
  std::string jobs_dir = "n3rlhf-service/jobs";  // each job's own directory <jobs_dir>/<id>
  // Directories every path of a job (base_model, data, output.dir, ...) must be inside; the
  // jobs directory is always allowed. Empty: only the jobs directory and the working directory.
  std::vector<std::string> allowed_roots;
  std::string mpirun = "mpirun";                 // found on PATH when not absolute
  std::vector<std::string> mpirun_args = {"--oversubscribe"};
  std::string dist_binary;                       // n3rlhf-dist; empty: beside this executable
  // The store feedback.export(...) of a submitted job reads when the call names none (the
  // service sets its own; empty: N3RLHF_FEEDBACK_STORE).
  std::string feedback_store_url;
  int64_t default_ranks = 1;
  int64_t max_ranks = 64;
  double cancel_grace_seconds = 10.0;            // SIGTERM, then SIGKILL after this
  // Kubernetes MPIJob rendering (launcher "kubernetes").
  std::string kubernetes_image = "registry.example.com/n3rlhf:latest";
  std::string kubernetes_namespace = "default";
  std::string kubernetes_binary = "/opt/n3rlhf/build/bin/n3rlhf-dist";
  int64_t kubernetes_slots_per_worker = 8;
  // A PersistentVolumeClaim holding the models, data and outputs, mounted at kubernetes_shared_path
  // on every pod (the ranks run there); empty: none (the image must hold what the job reads).
  std::string kubernetes_shared_claim;
  std::string kubernetes_shared_path = "/shared";
};

struct ServiceOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (the bound one is logged)
  std::string store_url = "sqlite:n3rlhf-service/n3rlhf.db";
  int threads = 0;                  // HTTP worker threads (one per open connection); 0: 8 x hardware threads, at least 128
  int store_pool_size = 0;          // store connections for reads (PostgreSQL, SQLite readers); 0: 16
  std::vector<TokenGrant> tokens;   // empty with allow_anonymous: everyone holds every role
  bool allow_anonymous = false;
  RequestLimits limits;
  JobRunnerOptions jobs;
};

// Reads a token file: {"tokens": [{"name": "app", "token": "...", "roles": ["annotator"]}]}.
// RLHF001 naming the file on a syntax or shape error.
std::vector<TokenGrant> read_token_file(const std::string& path);

}  // namespace n3rlhf::service
