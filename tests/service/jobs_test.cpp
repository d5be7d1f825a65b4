// jobs_test.cpp: training jobs through `n3rlhf serve` with real children, on SQLite and on a
// PostgreSQL server the suite starts: feedback posted and exported over HTTP trains a DPO job
// submitted with POST /api/rlhf/jobs (`mpirun ... n3rlhf-dist`) to `succeeded` with its metrics;
// cancel ends the job's whole process group; a service killed with SIGKILL and started again
// reattaches to a job still running (same pid and start time, cancellable), and finishes jobs that
// ended while it was down as `succeeded` (final model on disk) or `lost`.
//
// The service is service_serve of this build (the serve command without libtorch) run as a child
// process; n3rlhf (init-model) and n3rlhf-dist come from $N3RLHF_JOB_BINARY_DIR, else this
// build's bin/.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "service/job_runner.hpp"
#include "service/postgres_server.hpp"
#include "service/service_test_support.hpp"

extern char** environ;

namespace n3rlhf::service {
namespace {

using json = nlohmann::json;
using testing::Backend;
using Clock = std::chrono::steady_clock;

const std::string kToken = "all-roles-token-0123456789";
const std::string kReaderToken = "reader-token-0123456789";

std::string job_binary(const std::string& name) {
  const char* dir = std::getenv("N3RLHF_JOB_BINARY_DIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) + "/" + name : testing::binary(name);
}

// A live process (not a zombie) with this pid.
bool alive(int64_t pid) { return process_start_time(pid) != 0; }

// Live processes whose command line mentions `text` (the job's directory).
std::vector<int64_t> processes_mentioning(const std::string& text) {
  std::vector<int64_t> found;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  while (const dirent* entry = ::readdir(proc)) {
    const int64_t pid = std::atoll(entry->d_name);
    if (pid <= 0 || pid == ::getpid()) continue;
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(text) != std::string::npos && alive(pid)) found.push_back(pid);
  }
  ::closedir(proc);
  return found;
}

bool wait_until(const std::function<bool()>& done, double seconds) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}

// `service_serve serve ...` as a child process on a free port.
class ServeProcess {
 public:
  ServeProcess(const std::string& store_url, const std::string& work) {
    port_ = testing::free_loopback_port();
    log_ = work + "/serve-" + std::to_string(port_) + ".log";
    std::vector<std::string> argv = {testing::binary("service_serve"), "serve", "--port", std::to_string(port_),
                                     "--store", store_url, "--tokens", work + "/tokens.json",
                                     "--jobs-dir", work + "/jobs", "--allow-root", work,
                                     "--dist", job_binary("n3rlhf-dist")};
    std::vector<char*> argv_c;
    for (std::string& a : argv) argv_c.push_back(a.data());
    argv_c.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, argv_c[0], &actions, nullptr, argv_c.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    const bool up = wait_until(
        [&] {
          int status = 0;
          if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = 0;
            throw std::runtime_error("service_serve exited:\n" + testing::read_file(log_));
          }
          httplib::Client probe("127.0.0.1", port_);
          const auto r = probe.Get("/health");
          return r && r->status == 200;
        },
        60);
    if (!up) throw std::runtime_error("service_serve did not answer /health:\n" + testing::read_file(log_));
  }
  ~ServeProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (!wait_until([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; }, 15)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // SIGKILL: no chance to clean up, as a crash or an OOM kill.
  void kill_now() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }
  httplib::Client client(const std::string& token = kToken) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_bearer_token_auth(token.c_str());
    c.set_read_timeout(120, 0);
    return c;
  }
  json get(const std::string& path, const std::string& token = kToken) const {
    const auto r = client(token).Get(path.c_str());
    if (!r || r->status != 200) {
      throw std::runtime_error("GET " + path + ": " + (r ? std::to_string(r->status) + " " + r->body : "no answer"));
    }
    return json::parse(r->body);
  }
  httplib::Result post(const std::string& path, const json& body) const {
    return client().Post(path.c_str(), body.dump(), "application/json");
  }
  const std::string& log() const { return log_; }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
  std::string log_;
};

class JobsTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    const testing::CommandResult made =
        testing::run_command(job_binary("n3rlhf") + " init-model --preset tiny-llama --tokenizer " + testing::source_dir() +
                             "/assets/tokenizers/n3-demo-bpe --out " + model_dir_->path() + "/model");
    ASSERT_EQ(made.exit_status, 0) << made.out << made.err;
  }
  static void TearDownTestSuite() {
    delete model_dir_;
    model_dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(job_binary("n3rlhf-dist"))) << job_binary("n3rlhf-dist");
    store_url_ = testing::fresh_store_url(GetParam(), dir_, "jobs");
    dir_.write("tokens.json", json{{"tokens",
                                    {{{"name", "all"}, {"token", kToken}, {"roles", {"annotator", "operator", "reader"}}},
                                     {{"name", "reader"}, {"token", kReaderToken}, {"roles", {"reader"}}}}}}
                                  .dump());
    std::filesystem::copy(model_dir_->path() + "/model", dir_.path() + "/model",
                          std::filesystem::copy_options::recursive);
  }

  void TearDown() override {
    // No job of this test may outlive it.
    for (const int64_t pid : processes_mentioning(dir_.path() + "/jobs/")) ::kill(static_cast<pid_t>(pid), SIGKILL);
  }

  std::unique_ptr<ServeProcess> serve() { return std::make_unique<ServeProcess>(store_url_, dir_.path()); }

  // `rows` preference pairs for agent `agent`: 4 one at a time, the rest in one batch.
  static void post_feedback(const ServeProcess& s, const std::string& agent, int rows) {
    json items = json::array();
    for (int i = 0; i < rows; ++i) {
      items.push_back({{"agent_id", agent},
                       {"prompt", "Question " + std::to_string(i) + ": is " + std::to_string(i % 7) + " small?"},
                       {"response_chosen", " The answer is yes."},
                       {"response_rejected", " Maybe no!"},
                       {"score", 1.0},
                       {"annotator_id", "tester"}});
    }
    for (int i = 0; i < 4; ++i) {
      const auto r = s.post("/api/rlhf/feedback", items[i]);
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 201) << r->body;
    }
    const auto r = s.post("/api/rlhf/feedback/batch",
                          {{"items", json(std::vector<json>(items.begin() + 4, items.end()))}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }

  std::string dpo_job(const std::string& name, int64_t steps, const std::string& agent, int64_t min_samples) const {
    return "train rlhf \"" + name + "\" {\n"
           "  base_model: \"" + dir_.path() + "/model\"\n"
           "  algorithm: \"dpo\"\n"
           "  dataset: feedback.export(\"" + agent + "\", min_samples: " + std::to_string(min_samples) + ")\n"
           "  hyperparameters: { learning_rate: 1e-3  batch_size: 4  max_steps: " + std::to_string(steps) +
           "  max_length: 32  max_prompt_length: 24  device: \"cpu\"  seed: 0 }\n"
           "  dpo: { beta: 0.1 }\n"
           "  logging: { log_interval: 1 }\n"
           "}\n";
  }

  // Submits a job; 201 with status running and a live mpirun child in its own process group.
  json submit(const ServeProcess& s, const std::string& job_text) const {
    const auto r = s.post("/api/rlhf/jobs", {{"job_text", job_text}, {"launcher", "local"}, {"ranks", 1}});
    if (!r || r->status != 201) {
      ADD_FAILURE() << "POST /api/rlhf/jobs: " << (r ? std::to_string(r->status) + " " + r->body : "no answer");
      return json();
    }
    const json job = json::parse(r->body);
    EXPECT_EQ(job["status"], "running") << job.dump(2);
    const int64_t pid = job["pid"].get<int64_t>();
    EXPECT_TRUE(alive(pid));
    EXPECT_EQ(::getpgid(static_cast<pid_t>(pid)), pid) << "the child leads its own process group";
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(cmdline.find("mpirun"), std::string::npos) << cmdline;  // started directly, not through a shell
    EXPECT_NE(cmdline.find(job_binary("n3rlhf-dist")), std::string::npos) << cmdline;
    return job;
  }

  json job(const ServeProcess& s, int64_t id) const { return s.get("/api/rlhf/jobs/" + std::to_string(id)); }

  json wait_for_status(const ServeProcess& s, int64_t id, const std::string& status, double seconds) const {
    json last;
    wait_until(
        [&] {
          last = job(s, id);
          return last["status"] == status || (last["status"] != "running" && last["status"] != "queued");
        },
        seconds);
    EXPECT_EQ(last["status"], status) << last.dump(2) << "\nstderr.log:\n"
                                      << testing::read_file(last["outputs"]["stderr"].get<std::string>());
    return last;
  }

  // Until the job has logged a training step: n3rlhf-dist itself is up, not just mpirun.
  json wait_for_first_step(const ServeProcess& s, int64_t id) const {
    json last;
    const bool stepped = wait_until(
        [&] {
          last = job(s, id);
          return !last["latest_metrics"].is_null() || last["status"] != "running";
        },
        300);
    EXPECT_TRUE(stepped && !last["latest_metrics"].is_null())
        << last.dump(2) << "\nstderr.log:\n" << testing::read_file(last["outputs"]["stderr"].get<std::string>());
    return last;
  }

  static testing::TempDir* model_dir_;
  testing::TempDir dir_;
  std::string store_url_;
};

testing::TempDir* JobsTest::model_dir_ = nullptr;

TEST_P(JobsTest, FeedbackPostedAndExportedTrainsADpoJobToSucceeded) {
  auto s = serve();
  post_feedback(*s, "support", 24);

  // The HTTP export: TRL's columns, every posted row, oldest first.
  const auto exported = s->client(kReaderToken).Get("/api/rlhf/feedback/export?agent_id=support&format=jsonl");
  ASSERT_TRUE(exported);
  ASSERT_EQ(exported->status, 200) << exported->body;
  EXPECT_EQ(exported->get_header_value("X-Row-Count"), "24");
  std::istringstream lines(exported->body);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    const json row = json::parse(line);
    ASSERT_EQ(row.size(), 3u) << line;
    EXPECT_EQ(row["prompt"], "Question " + std::to_string(count) + ": is " + std::to_string(count % 7) + " small?");
    EXPECT_EQ(row["chosen"], " The answer is yes.");
    EXPECT_EQ(row["rejected"], " Maybe no!");
    ++count;
  }
  EXPECT_EQ(count, 24);

  // More samples than the store holds: refused at submission with RLHF023 and the count.
  const auto refused = s->post("/api/rlhf/jobs", {{"job_text", dpo_job("TooFew", 2, "support", 25)}});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400) << refused->body;
  EXPECT_NE(refused->body.find("RLHF023"), std::string::npos) << refused->body;
  EXPECT_NE(refused->body.find("24"), std::string::npos) << refused->body;

  // The job trains on exactly what the export served.
  const int64_t steps = 3;
  const json submitted = submit(*s, dpo_job("ServiceDPO", steps, "support", 24));
  ASSERT_FALSE(submitted.is_null());
  const int64_t id = submitted["id"].get<int64_t>();
  const std::string work_dir = submitted["outputs"]["work_dir"].get<std::string>();
  EXPECT_EQ(testing::read_file(work_dir + "/data/feedback-support.jsonl"), exported->body);

  const json done = wait_for_status(*s, id, "succeeded", 600);
  EXPECT_EQ(done["exit_code"], 0);
  EXPECT_FALSE(done["finished_at"].is_null());
  EXPECT_EQ(done["algorithm"], "dpo");
  ASSERT_TRUE(done["latest_metrics"].is_object()) << done.dump(2);
  EXPECT_EQ(done["latest_metrics"]["step"], steps) << done.dump(2);
  EXPECT_TRUE(std::isfinite(done["latest_metrics"]["loss"].get<double>())) << done.dump(2);
  // The curve: a training record per step (1, 2, 3), evaluation records beside them.
  const json series = s->get("/api/rlhf/jobs/" + std::to_string(id) + "/metrics");
  std::vector<int64_t> training_steps;
  for (const json& point : series["points"]) {
    if (point.contains("loss")) training_steps.push_back(point["step"].get<int64_t>());
  }
  EXPECT_EQ(training_steps, (std::vector<int64_t>{1, 2, 3})) << series.dump(2);
  EXPECT_TRUE(std::filesystem::exists(done["outputs"]["output_dir"].get<std::string>() + "/model.safetensors"))
      << done.dump(2);
  EXPECT_TRUE(processes_mentioning(work_dir).empty());
  // The list shows it too, and /metrics no longer counts it as active.
  const json list = s->get("/api/rlhf/jobs");
  ASSERT_EQ(list["jobs"].size(), 1u);
  EXPECT_EQ(list["jobs"][0]["status"], "succeeded");
  const auto metrics = s->client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("n3rlhf_jobs_active 0"), std::string::npos);
}

TEST_P(JobsTest, CancelEndsTheJobsWholeProcessGroup) {
  auto s = serve();
  post_feedback(*s, "support", 16);
  const json submitted = submit(*s, dpo_job("Long", 1000000, "support", 16));
  ASSERT_FALSE(submitted.is_null());
  const int64_t id = submitted["id"].get<int64_t>();
  const std::string work_dir = submitted["outputs"]["work_dir"].get<std::string>();
  wait_for_first_step(*s, id);
  // mpirun and n3rlhf-dist under it are both running the job.
  const std::vector<int64_t> before = processes_mentioning(work_dir);
  EXPECT_GE(before.size(), 2u);

  const auto reader_cancel = s->client(kReaderToken).Post(("/api/rlhf/jobs/" + std::to_string(id) + "/cancel").c_str());
  ASSERT_TRUE(reader_cancel);
  EXPECT_EQ(reader_cancel->status, 403);
  const auto r = s->post("/api/rlhf/jobs/" + std::to_string(id) + "/cancel", json::object());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json done = wait_for_status(*s, id, "cancelled", 60);
  EXPECT_FALSE(done["exit_code"].is_null());
  EXPECT_FALSE(done["finished_at"].is_null());
  EXPECT_TRUE(wait_until([&] { return processes_mentioning(work_dir).empty(); }, 30));
  for (const int64_t pid : before) EXPECT_FALSE(alive(pid)) << pid;
  // A finished job cannot be cancelled again; an unknown one is 404.
  const auto again = s->post("/api/rlhf/jobs/" + std::to_string(id) + "/cancel", json::object());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409) << again->body;
  const auto missing = s->post("/api/rlhf/jobs/999999/cancel", json::object());
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404) << missing->body;
}

TEST_P(JobsTest, RestartReattachesToARunningJobThatCanThenBeCancelled) {
  auto s = serve();
  post_feedback(*s, "support", 16);
  const json submitted = submit(*s, dpo_job("Long", 1000000, "support", 16));
  ASSERT_FALSE(submitted.is_null());
  const int64_t id = submitted["id"].get<int64_t>();
  const int64_t pid = submitted["pid"].get<int64_t>();
  const std::string work_dir = submitted["outputs"]["work_dir"].get<std::string>();
  wait_for_first_step(*s, id);
  const int64_t start_time = process_start_time(pid);

  s->kill_now();
  ASSERT_TRUE(alive(pid)) << "the job outlives its service";
  EXPECT_EQ(process_start_time(pid), start_time);
  s = serve();

  const json found = job(*s, id);
  EXPECT_EQ(found["status"], "running") << found.dump(2);
  EXPECT_EQ(found["pid"], pid);
  EXPECT_NE(testing::read_file(work_dir + "/service.log").find("reattached to pid " + std::to_string(pid)),
            std::string::npos);
  // Still training and still watched: the step count moves on.
  const int64_t step = wait_for_first_step(*s, id)["latest_metrics"]["step"].get<int64_t>();
  EXPECT_TRUE(wait_until([&] { return job(*s, id)["latest_metrics"]["step"].get<int64_t>() > step; }, 120));
  const auto metrics = s->client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("n3rlhf_jobs_active 1"), std::string::npos);

  const auto r = s->post("/api/rlhf/jobs/" + std::to_string(id) + "/cancel", json::object());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  wait_for_status(*s, id, "cancelled", 60);
  EXPECT_TRUE(wait_until([&] { return processes_mentioning(work_dir).empty(); }, 30));
  EXPECT_FALSE(alive(pid));
}

TEST_P(JobsTest, RestartFinishesJobsThatEndedWhileTheServiceWasDown) {
  auto s = serve();
  post_feedback(*s, "support", 16);
  const json long_job = submit(*s, dpo_job("Long", 1000000, "support", 16));
  ASSERT_FALSE(long_job.is_null());
  wait_for_first_step(*s, long_job["id"].get<int64_t>());
  // Started just before the service dies: it trains and writes its model while nobody watches.
  const json short_job = submit(*s, dpo_job("Short", 30, "support", 16));
  ASSERT_FALSE(short_job.is_null());
  s->kill_now();

  // The long one dies without a final model (as in an OOM kill).
  const int64_t long_pid = long_job["pid"].get<int64_t>();
  ::kill(-static_cast<pid_t>(long_pid), SIGKILL);
  EXPECT_TRUE(wait_until([&] { return processes_mentioning(long_job["outputs"]["work_dir"].get<std::string>()).empty(); }, 30));
  EXPECT_TRUE(wait_until([&] { return processes_mentioning(short_job["outputs"]["work_dir"].get<std::string>()).empty(); }, 600));
  ASSERT_TRUE(std::filesystem::exists(short_job["outputs"]["output_dir"].get<std::string>() + "/model.safetensors"))
      << testing::read_file(short_job["outputs"]["stderr"].get<std::string>());

  s = serve();
  const json finished = job(*s, short_job["id"].get<int64_t>());
  EXPECT_EQ(finished["status"], "succeeded") << finished.dump(2);
  EXPECT_NE(finished["error"].get<std::string>().find("final model"), std::string::npos) << finished.dump(2);
  EXPECT_TRUE(finished["exit_code"].is_null()) << "a restarted service cannot know the exit status";
  EXPECT_FALSE(finished["finished_at"].is_null());
  const json lost = job(*s, long_job["id"].get<int64_t>());
  EXPECT_EQ(lost["status"], "lost") << lost.dump(2);
  EXPECT_FALSE(lost["finished_at"].is_null());
  // Neither is forgotten, and neither can be cancelled.
  EXPECT_EQ(s->get("/api/rlhf/jobs")["jobs"].size(), 2u);
  const auto r = s->post("/api/rlhf/jobs/" + lost["id"].dump() + "/cancel", json::object());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409) << r->body;
}

INSTANTIATE_TEST_SUITE_P(Backends, JobsTest, ::testing::Values(Backend::kSqlite, Backend::kPostgresql),
                         [](const auto& info) { return testing::backend_name(info.param); });

}  // namespace
}  // namespace n3rlhf::service
