// command_serve.cpp: `n3rlhf serve [--store URL] [--port N] [--tokens FILE] ...`: runs the
// feedback and jobs service (src/service) until SIGINT/SIGTERM. With no options it serves on
// 127.0.0.1:8080 from an SQLite file under ./n3rlhf-service and needs no setup.
#include <csignal>
#include <iostream>
#include <thread>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/log.hpp"
#include "service/feedback_source.hpp"
#include "service/server.hpp"
#include "service/store_backends.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

namespace {
service::Service* running_service = nullptr;
void stop_on_signal(int) {
  if (running_service != nullptr) running_service->stop();
}
}  // namespace

int serve_command(const std::vector<std::string>& arguments) {
  service::ServiceOptions options;
  options.store_url = service::store_url_from_environment().empty() ? options.store_url
                                                                    : service::store_url_from_environment();
  std::string token_file;
  std::string limits_text;
  CommandOptions command({"serve", "n3rlhf serve [options]", ""});
  command.add()
      ("host", po::value(&options.host)->default_value(options.host), "address to listen on")
      ("port", po::value(&options.port)->default_value(options.port), "port (0: any free port, printed)")
      ("store", po::value(&options.store_url)->default_value(options.store_url),
       "sqlite:PATH or postgresql://user@host:port/db (default from N3RLHF_FEEDBACK_STORE)")
      ("tokens", po::value(&token_file), "token file: {\"tokens\": [{\"name\", \"token\", \"roles\": [...]}]}")
      ("allow-anonymous", po::bool_switch(&options.allow_anonymous), "without a token a request holds every role (local use only)")
      ("threads", po::value(&options.threads)->default_value(0),
       "HTTP worker threads, one per open connection (0: 8 x cores, at least 128)")
      ("pool-size", po::value(&options.store_pool_size)->default_value(0), "store connections for reads (0: 16)")
      ("rate", po::value(&options.limits.rate_per_second)->default_value(0), "requests per second per token (0: unlimited)")
      ("burst", po::value(&options.limits.rate_burst)->default_value(0), "rate-limit bucket size")
      ("max-body-bytes", po::value(&options.limits.max_body_bytes)->default_value(options.limits.max_body_bytes), "request body limit")
      ("max-text-bytes", po::value(&options.limits.max_text_bytes)->default_value(options.limits.max_text_bytes), "prompt/response limit")
      ("jobs-dir", po::value(&options.jobs.jobs_dir)->default_value(options.jobs.jobs_dir), "each job's directory goes here")
      ("allow-root", po::value(&options.jobs.allowed_roots)->composing(), "a directory jobs may read and write (repeatable)")
      ("mpirun", po::value(&options.jobs.mpirun)->default_value(options.jobs.mpirun), "the MPI launcher")
      ("dist", po::value(&options.jobs.dist_binary), "n3rlhf-dist (default: beside this binary)")
      ("ranks", po::value(&options.jobs.default_ranks)->default_value(options.jobs.default_ranks), "ranks of a job that names none")
      ("k8s-image", po::value(&options.jobs.kubernetes_image)->default_value(options.jobs.kubernetes_image), "image of rendered MPIJobs")
      ("k8s-namespace", po::value(&options.jobs.kubernetes_namespace)->default_value(options.jobs.kubernetes_namespace), "namespace of rendered MPIJobs")
      ("k8s-slots", po::value(&options.jobs.kubernetes_slots_per_worker)->default_value(options.jobs.kubernetes_slots_per_worker),
       "ranks (GPUs) per worker pod of rendered MPIJobs")
      ("k8s-shared-claim", po::value(&options.jobs.kubernetes_shared_claim), "PersistentVolumeClaim with the models, data and outputs")
      ("k8s-shared-path", po::value(&options.jobs.kubernetes_shared_path)->default_value(options.jobs.kubernetes_shared_path),
       "where rendered MPIJobs mount the shared claim (the ranks run there)");
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (!token_file.empty()) options.tokens = service::read_token_file(token_file);
  if (options.tokens.empty() && !options.allow_anonymous) {
    return command.usage_error("give --tokens FILE (or --allow-anonymous for local use)");
  }
  // Jobs submitted with feedback.export(...) are resolved by this process into the job's directory.
  service::install_feedback_source_resolver();
  service::Service server(options);
  running_service = &server;
  std::signal(SIGINT, stop_on_signal);
  std::signal(SIGTERM, stop_on_signal);
  std::cout << "n3rlhf serve: listening on http://" << options.host << ":" << server.port() << " (store "
            << service::redact_url(options.store_url) << ")" << std::endl;
  server.run();
  running_service = nullptr;
  return 0;
}

}  // namespace n3rlhf
