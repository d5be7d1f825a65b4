// dequantize_cuda.cpp: the libtorch side of NF4 dequantization on CUDA: device guard, current
// stream, output allocation, then the raw-pointer launcher of nf4_dequantize_kernel.cu.
#include "quant/dequantize_cuda.hpp"

#include <string>

#include "core/error.hpp"

#ifdef N3RLHF_QUANT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "quant/nf4_dequantize_kernel.hpp"
#endif

namespace n3rlhf::quant {

#ifdef N3RLHF_QUANT_WITH_CUDA

bool cuda_dequantize_available() { return true; }

torch::Tensor dequantize_nf4_cuda(const torch::Tensor& packed, const torch::Tensor& absmax, int64_t block_size,
                                  int64_t numel, torch::ScalarType out_dtype) {
  TORCH_CHECK(packed.is_cuda() && absmax.is_cuda() && packed.device() == absmax.device(),
              "NF4 codes and absmax must be on one CUDA device");
  KernelOutputType output_type = KernelOutputType::kFloat32;
  if (out_dtype == torch::kBFloat16) {
    output_type = KernelOutputType::kBFloat16;
  } else if (out_dtype == torch::kFloat16) {
    output_type = KernelOutputType::kFloat16;
  } else {
    TORCH_CHECK(out_dtype == torch::kFloat32, "NF4 dequantizes to float32, bfloat16 or float16");
  }
  const c10::cuda::CUDAGuard guard(packed.device());
  const torch::Tensor codes = packed.contiguous();
  const torch::Tensor scales = absmax.to(torch::kFloat32).contiguous();
  torch::Tensor out = torch::empty({numel}, packed.options().dtype(out_dtype));
  Nf4DequantizeLaunch launch;
  launch.packed = codes.data_ptr<uint8_t>();
  launch.absmax = scales.data_ptr<float>();
  launch.block_size = block_size;
  launch.numel = numel;
  launch.out = out.data_ptr();
  launch.output_type = output_type;
  launch.stream = c10::cuda::getCurrentCUDAStream(packed.device().index()).stream();
  if (const char* failure = launch_nf4_dequantize(launch)) {
    // The usual cause is a device whose architecture the build did not compile for
    // (src/quant/CMakeLists.txt lists them): a build/device mismatch, hence RLHF004.
    throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                             std::string("NF4 dequantization kernel failed to launch: ") + failure,
                             {{"numel", std::to_string(numel)}, {"device", packed.device().str()}});
  }
  return out;
}

#else

bool cuda_dequantize_available() { return false; }

torch::Tensor dequantize_nf4_cuda(const torch::Tensor&, const torch::Tensor&, int64_t, int64_t,
                                  torch::ScalarType) {
  throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                           "this n3rlhf was built without CUDA (N3RLHF_CUDA=OFF or no toolkit); "
                           "NF4 dequantization on a GPU needs the CUDA build");
}

#endif

}  // namespace n3rlhf::quant
