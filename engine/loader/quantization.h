// Quantized checkpoints as the Hugging Face Hub stores them, detected from config.json's
// "quantization_config": FP8 e4m3 weights with per-tensor, per-channel or 128x128-block
// scales (quant_method "fp8", "fbgemm_fp8", compressed-tensors "float-quantized") and 4-bit
// weight-only formats with group scales (AWQ GEMM, GPTQ incl. desc_act / g_idx,
// compressed-tensors "pack-quantized" W4A16).
//
// The loader dequantizes a linear layer's weight when the model asks for "<module>.weight",
// so model code sees ordinary float weights of shape [out, in]. Dequantization is exact:
// every value is code (or q - zero) times its scale, computed as one fp32 product of the
// decoded operands (an e4m3 value has 4 significant bits and a 4-bit q - zero fits in 5, so
// the product of either with an f16/bf16 scale is exact in fp32; with an fp32 scale it is
// the correctly rounded fp32 product). Activations stay in the compute dtype (weight-only
// semantics); a format's activation quantization (dynamic per-token FP8, static input_scale)
// is validated but not applied.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/core/packed_weight.h"
#include "engine/loader/checkpoint.h"

namespace iris {

enum class QuantFormat {
  kFp8,            // F8_E4M3 "weight" + "weight_scale" (tensor/channel/block) or "weight_scale_inv" (block)
  kAwq,            // AutoAWQ GEMM: qweight I32 [in, out/8], qzeros I32 [in/g, out/8], scales [in/g, out]
  kGptq,           // GPTQ: qweight I32 [in/8, out], qzeros I32 [groups, out/8], scales [groups, out], g_idx [in]
  kPackQuantized,  // compressed-tensors: weight_packed I32 [out, in/8], weight_scale [out, groups], weight_shape
};

enum class ScaleStrategy { kTensor, kChannel, kBlock, kGroup };

struct QuantizationConfig {
  std::string quant_method;  // as written: "fp8", "fbgemm_fp8", "compressed-tensors", "awq", "gptq"
  QuantFormat format = QuantFormat::kFp8;
  std::string source;  // config.json path, for messages
  int bits = 8;
  ScaleStrategy strategy = ScaleStrategy::kTensor;
  std::string scale_name = "weight_scale";  // FP8: "weight_scale" or "weight_scale_inv"
  int64_t block_out = 0, block_in = 0;      // kBlock: rows x columns of the weight per scale
  int64_t group_size = 0;                   // kGroup: input columns per scale; -1 = whole row
  bool symmetric = true;
  bool desc_act = false;             // GPTQ: columns quantized in activation order (g_idx needed)
  bool gptq_zeros_minus_one = true;  // GPTQ checkpoint_format "gptq" (v1) stores zero - 1
  bool static_input_scale = false;   // FP8 with static activation scales ("input_scale" tensors)
  bool dynamic_activations = false;  // the format quantizes activations per token at run time
  bool kv_cache_fp8 = false;  // compressed-tensors kv_cache_scheme: FP8 K/V, per-layer k/v scales

  // One line for logs: method, bits, scale layout.
  std::string describe() const;
};

// Parses config["quantization_config"]; nullopt when absent or null, or when it quantizes only
// the KV cache (compressed-tensors with a kv_cache_scheme and no weight groups: the weights are
// float and the model reads the per-layer k_scale / v_scale tensors for --kv-cache-dtype fp8). Throws iris::Error
// naming `source` and the field for an unknown method, an unsupported setting or a bad value.
std::optional<QuantizationConfig> parse_quantization_config(const nlohmann::json& config,
                                                            const std::string& source);

// fp8_e4m3_to_f32 (the e4m3 decode) lives in engine/core/dtype.h.

// True when the checkpoint stores `name` ("<module>.weight") in a quantized layout (or
// holds quantization tensors for that module, so a missing piece is reported by name).
bool stores_quantized_weight(const Checkpoint& ckpt, const std::string& name);

// Reads `name`'s quantized tensors into the packed layout (engine/core/packed_weight.h),
// validating as dequantize_weight does; `expected` is the logical [out, in].
PackedWeight pack_weight(const Checkpoint& ckpt, const QuantizationConfig& q,
                         const std::string& name, const std::vector<int64_t>& expected);

// All of `p` as F32 [rows, cols] (the same values a backend computes from the packed form).
HostTensor dequantize(const PackedWeight& p);

// Dequantizes `name` to F32 of shape `expected` ([out, in]); validates every tensor of the
// module (dtype, shape implied by the config, zero points, g_idx range, finite values) and
// throws iris::Error naming the tensor or config field at fault.
HostTensor dequantize_weight(const Checkpoint& ckpt, const QuantizationConfig& q,
                             const std::string& name, const std::vector<int64_t>& expected);

}  // namespace iris
