// hub_cache_layout.cpp: a hub cache laid out file by file, blobs named by their SHA-256.
#include "storage/hub_cache_layout.hpp"

#include <filesystem>
#include <fstream>

#include "core/sha256.hpp"

namespace n3rlhf::testing {

namespace fs = std::filesystem;

std::string lay_out_hub_snapshot(const std::string& cache, const std::string& repo_id, const std::string& commit,
                                 const std::map<std::string, std::string>& files, const std::string& ref) {
  std::string folder = "models--" + repo_id;
  folder.replace(folder.find('/'), 1, "--");
  const fs::path repository = fs::path(cache) / folder;
  const fs::path snapshot = repository / "snapshots" / commit;
  fs::create_directories(repository / "blobs");
  fs::create_directories(snapshot);
  fs::create_directories((repository / "refs" / ref).parent_path());
  for (const auto& [name, source] : files) {
    const std::string blob = sha256_file_hex(source);
    fs::copy_file(source, repository / "blobs" / blob, fs::copy_options::overwrite_existing);
    const fs::path link = snapshot / name;
    fs::create_directories(link.parent_path());
    fs::remove(link);
    fs::create_symlink(fs::path("../../blobs") / blob, link);
  }
  std::ofstream(repository / "refs" / ref) << commit;  // huggingface_hub writes no newline
  return snapshot.string();
}

}  // namespace n3rlhf::testing
