// torch_checkpoint.hpp: read_torch_state_dict, the tensors of a pytorch_model.bin: the zip
// archive torch.save writes (PyTorch >= 1.6) holding a dict of names to tensors, as
// transformers' save_pretrained(safe_serialization=False) and torch.save(model.state_dict())
// leave them. The pickle is read by the torch-free unpickler of model/pickled_state_dict.hpp,
// which accepts only what a state dict needs, so no code named in the file runs; libtorch's jit
// unpickler cannot be used because it turns every OrderedDict into None.
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

namespace n3rlhf {

// name -> CPU tensor in its stored dtype (tensors that shared a storage in the file still share
// it). ModelError RLHF013 naming the file when it is a legacy (non-zip) torch.save file, a
// truncated or otherwise broken archive, or a pickle that is not a dict of tensors.
std::map<std::string, torch::Tensor> read_torch_state_dict(const std::string& path);

}  // namespace n3rlhf
