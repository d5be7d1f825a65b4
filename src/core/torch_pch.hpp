// torch_pch.hpp: the libtorch headers precompiled once for every target that uses libtorch.
#pragma once
#include <torch/torch.h>
