// hub_upload.cpp: the huggingface_hub sidecar, its output and exit status.
#include "runtime/hub_upload.hpp"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"

namespace n3rlhf {

namespace {

// argv: directory, repo id. Exit 3 when huggingface_hub is missing, 1 when the Hub refuses.
constexpr const char* kSidecar = R"PY(
import sys
try:
    from huggingface_hub import HfApi
except ImportError:
    print("huggingface_hub is not installed (pip install huggingface_hub)", file=sys.stderr)
    sys.exit(3)
folder, repo = sys.argv[1], sys.argv[2]
try:
    api = HfApi()
    api.create_repo(repo, repo_type="model", exist_ok=True)
    commit = api.upload_folder(folder_path=folder, repo_id=repo, repo_type="model",
                               ignore_patterns=["checkpoints/*", "**/checkpoints/*"],
                               commit_message="Upload the model trained by n3rlhf")
    print(getattr(commit, "commit_url", commit))
except Exception as error:
    print(type(error).__name__ + ": " + " ".join(str(error).split()), file=sys.stderr)
    sys.exit(1)
)PY";

std::string last_line(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == '\r')) trimmed.pop_back();
  const size_t newline = trimmed.rfind('\n');
  return newline == std::string::npos ? trimmed : trimmed.substr(newline + 1);
}

}  // namespace

std::string push_to_hub(const HubUpload& upload) {
  std::string python = upload.python;
  if (python.empty()) {
    const char* configured = std::getenv("N3RLHF_PYTHON");
    python = configured != nullptr && *configured != '\0' ? configured : "python3";
  }
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) {
    throw StorageError(ErrorCode::kUploadFailure, "cannot start the Hub upload: " + std::string(std::strerror(errno)),
                       {{"repo", upload.repo_id}});
  }
  const pid_t child = ::fork();
  if (child == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    ::execlp(python.c_str(), python.c_str(), "-c", kSidecar, upload.directory.c_str(), upload.repo_id.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "cannot run %s: %s\n", python.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  // Both pipes drained together, so that neither fills up and blocks the sidecar.
  std::string out, err;
  char buffer[4096];
  pollfd descriptors[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_pipes = 2;
  while (open_pipes > 0) {
    if (::poll(descriptors, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (pollfd& descriptor : descriptors) {
      if (descriptor.fd < 0 || descriptor.revents == 0) continue;
      const ssize_t got = ::read(descriptor.fd, buffer, sizeof buffer);
      if (got > 0) {
        (descriptor.fd == out_pipe[0] ? out : err).append(buffer, static_cast<size_t>(got));
      } else {
        ::close(descriptor.fd);
        descriptor.fd = -1;
        --open_pipes;
      }
    }
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string reason = last_line(err).empty() ? "the uploader exited with status " + std::to_string(WEXITSTATUS(status)) : last_line(err);
    throw StorageError(ErrorCode::kUploadFailure,
                       "push_to_hub: uploading " + upload.directory + " to the Hub repository " + upload.repo_id + " failed: " + reason +
                           " (the local output is kept)",
                       {{"repo", upload.repo_id}, {"directory", upload.directory}, {"reason", reason}});
  }
  const std::string url = last_line(out);
  spdlog::info("output: uploaded to the Hub: {}", url);
  return url;
}

}  // namespace n3rlhf
