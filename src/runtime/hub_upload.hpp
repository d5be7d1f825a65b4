// hub_upload.hpp: output.push_to_hub: the final output uploaded to the Hugging Face Hub with
// huggingface_hub's own uploader (HfApi.create_repo + upload_folder), run as a Python sidecar:
// token from HF_TOKEN, endpoint from HF_ENDPOINT, the interpreter from N3RLHF_PYTHON (default
// python3). Checkpoints are not uploaded; the local output is kept whatever happens.
#pragma once

#include <string>

namespace n3rlhf {

struct HubUpload {
  std::string directory;  // output.dir
  std::string repo_id;    // output.hub_model_id
  std::string python;     // "" = $N3RLHF_PYTHON or python3
};

// Returns the sidecar's last line (the commit URL). StorageError RLHF050 naming the repository
// and huggingface_hub's reason when the upload fails (or huggingface_hub is not installed).
std::string push_to_hub(const HubUpload& upload);

}  // namespace n3rlhf
