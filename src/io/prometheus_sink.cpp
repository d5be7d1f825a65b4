// prometheus_sink.cpp: the /metrics endpoint (cpp-httplib) over the latest scalars.
#include "io/prometheus_sink.hpp"

#include <httplib.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <unistd.h>

namespace n3rlhf {

namespace {

std::string number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

double resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  double pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

std::string prometheus_metric_name(const std::string& scalar) {
  std::string name = "n3rlhf_";
  for (char c : scalar) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return name;
}

PrometheusMetricSink::PrometheusMetricSink(const std::string& host, int port) : server_(std::make_unique<httplib::Server>()) {
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(exposition(), "text/plain; version=0.0.4; charset=utf-8");
  });
  port_ = port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot listen for Prometheus on " + host + ":" + std::to_string(port),
                       {{"port", std::to_string(port)}, {"variable", "N3RLHF_METRICS_PORT"}});
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

PrometheusMetricSink::~PrometheusMetricSink() { close(RunOutcome::kFinished); }

void PrometheusMetricSink::close(RunOutcome) {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void PrometheusMetricSink::log_scalars(int64_t step, const MetricScalars& scalars, double wall_time) {
  std::lock_guard<std::mutex> lock(mutex_);
  step_ = std::max(step_, step);
  updated_ = wall_time;
  for (const auto& [name, value] : scalars) latest_[name] = value;
}

std::string PrometheusMetricSink::exposition() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream out;
  out << "# HELP n3rlhf_step Training steps done.\n# TYPE n3rlhf_step gauge\nn3rlhf_step " << step_ << "\n";
  out << "# HELP n3rlhf_last_update_timestamp_seconds When the metrics were last logged.\n"
      << "# TYPE n3rlhf_last_update_timestamp_seconds gauge\nn3rlhf_last_update_timestamp_seconds " << number(updated_) << "\n";
  out << "# HELP n3rlhf_process_resident_memory_bytes Resident memory of rank 0.\n"
      << "# TYPE n3rlhf_process_resident_memory_bytes gauge\nn3rlhf_process_resident_memory_bytes "
      << number(resident_memory_bytes()) << "\n";
  std::set<std::string> written = {"n3rlhf_step", "n3rlhf_last_update_timestamp_seconds", "n3rlhf_process_resident_memory_bytes"};
  for (const auto& [scalar, value] : latest_) {
    const std::string name = prometheus_metric_name(scalar);
    if (!written.insert(name).second) continue;  // one series per name ("a/b" and "a_b" are one)
    out << "# HELP " << name << " The last logged \"" << scalar << "\".\n# TYPE " << name << " gauge\n"
        << name << " " << number(value) << "\n";
  }
  return out.str();
}

}  // namespace n3rlhf
