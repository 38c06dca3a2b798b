// The Backend/Ops interface: everything model code needs from a device. Model code
// (engine/models/*) is written once against this interface; the CPU reference backend
// (engine/cpu) and the CUDA backend (cuda/) each implement it. Every tensor argument carries
// its shape in a comment; T = tokens in the step, S = sequences in the step.
//
// Ops never allocate: the model runner allocates one workspace per step size up front and
// the per-step AttentionMetadata is built once before the first layer (plan once, run per
// layer), so a decode step can be captured as a CUDA graph.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/core/packed_weight.h"
#include "engine/core/tensor.h"
#include "engine/device_step.h"
#include "engine/parallel/communicator.h"

namespace iris {

enum class DeviceKind { kCpu, kCuda };

// Per-step attention plan, on the backend's device. Sequence s owns query rows
// [query_start[s], query_start[s+1]); its context after this step's K/V are written is
// seq_lens[s] tokens, so its query row i sits at position seq_lens[s] - q_len + i and
// attends causally to context positions [0, that position].
struct AttentionMetadata {
  Tensor query_start;   // I32 [S + 1]
  Tensor seq_lens;      // I32 [S]
  Tensor block_tables;  // I32 [S, max_blocks_per_seq]
  Tensor slot_mapping;  // I32 [T]   flat KV slot (block * block_size + offset); -1 = skip
  // Bidirectional spans (Gemma 3's images): token t also attends to positions
  // [media_span[t, 0], media_span[t, 1]) — its whole image, later tokens included — besides
  // what the causal / sliding-window rule allows; media_span[t, 1] <= 0 means none. The span
  // must contain t's position and lie within its sequence's seq_lens (the whole image's K/V
  // is written by this step or an earlier one). Undefined = no token has a span.
  Tensor media_span;    // I32 [T, 2]
  // Host-side copies of the sizes kernels need for their launch configuration.
  int num_seqs = 0;
  int num_tokens = 0;
  int max_query_len = 0;
  int max_seq_len = 0;
  int max_blocks_per_seq = 0;
};

// One layer's paged KV cache: K and V each [num_blocks, block_size, num_kv_heads, head_dim],
// in the backend's compute dtype or, under --kv-cache-dtype fp8, F8_E4M3 (engine/core/fp8.h):
// then a K element x (after RoPE) is stored as e4m3(x / k_scale), rounded to nearest even and
// saturated to ±448, and read back as e4m3 * k_scale (V likewise with v_scale). The scales
// are per layer, from the checkpoint's k_scale / v_scale tensors or 1.
struct KvLayer {
  Tensor k;
  Tensor v;
  float k_scale = 1.0f;
  float v_scale = 1.0f;
};

struct AttentionShape {
  int num_q_heads = 0;   // on this rank
  int num_kv_heads = 0;  // on this rank
  int head_dim = 0;
  int q_dim() const { return num_q_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
};

// Element-wise activations used by vision towers and projectors.
enum class Activation {
  kGeluErf,   // 0.5 x (1 + erf(x / sqrt 2))           ("gelu")
  kGeluTanh,  // tanh approximation                     ("gelu_pytorch_tanh", "gelu_new")
  kQuickGelu  // x * sigmoid(1.702 x)                   ("quick_gelu")
};

class Ops {
 public:
  virtual ~Ops() = default;

  // out[t] = table[ids[t]]. ids: I32 [T]; table: [V, H]; out: [T, H].
  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor& out) = 0;

  // Vocabulary-parallel embedding: out[t] = table[ids[t] - vocab_start] when that row is in
  // this rank's table, zeros otherwise (the rank that holds it contributes it through an
  // all-reduce). ids: I32 [T] (global ids); table: [V_rank, H]; out: [T, H].
  virtual void embedding_shard(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                               Tensor& out) = 0;

  // out = x @ w^T (+ bias). x: [T, K]; w: [N, K]; bias: [N] or undefined; out: [T, N].
  // out may be F32 even when x and w are in the backend's compute dtype (logits). w may be
  // a packed quantized weight (dtype PACKED, from Backend::upload_packed).
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) = 0;

  // out = x / rms(x) * w over the last dim. x, out: [T, H]; w: [H].
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;

  // residual += x; out = rms_norm(residual) * w. residual, x, out: [T, H]; w: [H].
  virtual void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                            Tensor& out) = 0;

  // On the fused projection qkv: [T, (Hq + 2 Hkv) * D] laid out q | k | v per row:
  // optional per-head RMSNorm of q and k (q_norm, k_norm: [D], undefined to skip), then
  // rotary embedding (rotate-half form) of the first rotary_dim dims of every q and k head
  // at positions[t] with inv_freq: F32 [rotary_dim / 2], in place; then k and v are written
  // to the paged cache at meta.slot_mapping.
  // M-RoPE (Qwen2.5-VL): positions I32 [T, P] and inv_freq F32 [P, rotary_dim / 2]; the
  // angle of frequency i at token t is sum over j of positions[t, j] * inv_freq[j, i], where
  // each frequency is non-zero in exactly one row (its temporal, height or width section).
  // P = 1 (positions [T], inv_freq [rotary_dim / 2]) is plain RoPE.
  virtual void qk_norm_rope_store_kv(Tensor& qkv, const Tensor& positions, const Tensor& inv_freq,
                                     const Tensor& q_norm, const Tensor& k_norm, float norm_eps,
                                     const AttentionShape& shape, const AttentionMetadata& meta,
                                     KvLayer& kv) = 0;

  // Causal attention of the q part of qkv (rows as above) over the paged cache.
  // sliding_window > 0 restricts each query to the last sliding_window positions.
  // out: [T, Hq * D].
  virtual void attention(const Tensor& qkv, const KvLayer& kv, const AttentionShape& shape,
                         const AttentionMetadata& meta, float scale, int sliding_window,
                         Tensor& out) = 0;

  // out = silu(gate) * up where gate_up: [T, 2 I] = gate | up per row; out: [T, I].
  virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;

  // out[s] = x[indices[s]]. x: [T, H]; indices: I32 [S]; out: [S, H].
  virtual void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) = 0;

  // ---- Gemma ----

  // out = gelu_tanh(gate) * up where gate_up: [T, 2 I] = gate | up per row; out: [T, I].
  virtual void gelu_tanh_mul(const Tensor& gate_up, Tensor& out) = 0;

  // x *= s, in place. x: any shape (compute dtype or F32).
  virtual void scale(Tensor& x, float s) = 0;

  // x = cap * tanh(x / cap), in place (logit soft-capping). x: any shape (F32 logits or the
  // compute dtype); cap > 0.
  virtual void tanh_softcap(Tensor& x, float cap) = 0;

  // ---- Mixture of experts ----

  // The weighted sum of each token's expert outputs: out[t] = sum over j, in order, of
  // weights[t, j] * y[slots[t, j]], skipping slots[t, j] < 0 (a token with no slot gets
  // zeros). y holds the expert outputs of the step's (token, expert) pairs grouped by
  // expert (engine/models/moe.h). y: [N, H]; slots: I32 [T, K]; weights: F32 [T, K];
  // out: [T, H].
  virtual void moe_combine(const Tensor& y, const Tensor& slots, const Tensor& weights,
                           Tensor& out) = 0;

  // ---- Encoder (vision tower) ops ----

  // out = (x - mean) / sqrt(var + eps) * w + b over the last dim (biased variance).
  // x, out: [T, H]; w: [H]; b: [H] or undefined.
  virtual void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                          Tensor& out) = 0;

  // x = act(x), in place. x: [T, N].
  virtual void activation(Tensor& x, Activation act) = 0;

  // a += b element-wise. a, b: same shape.
  virtual void add(Tensor& a, const Tensor& b) = 0;

  // Bidirectional (non-causal) attention inside each of T / seq_len independent sequences
  // of exactly seq_len consecutive rows. qkv: [T, (Hq + 2 Hkv) * D] laid out q | k | v per
  // row, as for attention(); out: [T, Hq * D].
  virtual void encoder_attention(const Tensor& qkv, const AttentionShape& shape, int seq_len,
                                 float scale, Tensor& out) = 0;

  // out[indices[i]] = x[i]. x: [N, H]; indices: I32 [N] (distinct); out: [T, H].
  virtual void scatter_rows(const Tensor& x, const Tensor& indices, Tensor& out) = 0;

  // Sum over the tensor-parallel group, in place. A no-op for a single rank.
  virtual void all_reduce_sum(Tensor& x) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;
  // Dtype of weights, activations and the KV cache on this backend.
  virtual DType compute_dtype() const = 0;
  // Dtype models store their large matrices in (linear weights, embedding tables); the
  // backend's linear, embedding and embedding_shard accept it. Norm weights, biases,
  // activations and the KV cache stay in compute_dtype(). Defaults to compute_dtype().
  virtual DType weight_dtype() const { return compute_dtype(); }

  virtual Buffer allocate(DType dtype, Shape shape) = 0;

  // Quantized checkpoints: true when this backend keeps quantized linear weights packed
  // (engine/core/packed_weight.h) and its linear multiplies them as they are; false when
  // models should load them dequantized to weight_dtype().
  virtual bool keeps_weights_packed() const { return false; }
  // Takes a packed [rows, cols] weight; the Buffer's tensor has dtype PACKED and shape
  // [rows, cols], and is only meant for Ops::linear. Its bytes held are w.bytes().
  virtual Buffer upload_packed(PackedWeight w) {
    fail(name(), " backend does not keep quantized weights packed (", w.describe(), ")");
  }
  // Writes n = dst.numel() elements stored as src_dtype on the host into dst, converting
  // to dst.dtype.
  virtual void upload(const void* src, DType src_dtype, Tensor& dst) = 0;
  // Copies src (any dtype) to host memory as fp32 / int32 (same element count).
  virtual void download_f32(const Tensor& src, float* dst) = 0;
  virtual void upload_i32(const int32_t* src, Tensor& dst) = 0;
  // Waits for all queued work.
  virtual void synchronize() = 0;
  // Bytes of device memory free for the KV cache after weights (best effort on CPU).
  virtual size_t free_memory_bytes() const = 0;

  virtual Ops& ops() = 0;

  // Tensor parallelism: the group this backend's all_reduce_sum reduces over (null = a single
  // rank). Not owned; set before the first step.
  void set_communicator(Communicator* comm) { comm_ = comm; }
  Communicator* communicator() const { return comm_; }
  // Called once on each thread that will drive this backend (a CUDA backend selects its
  // device there).
  virtual void bind_to_current_thread() {}
  // The device stream work is enqueued on (a cudaStream_t for CUDA), for communicators that
  // must order their collectives with the backend's kernels; null on the CPU.
  virtual void* native_stream() const { return nullptr; }

  // Decode-step graphs at these batch-size buckets, or null where the backend has none (CPU).
  virtual std::unique_ptr<StepGraphRunner> make_step_graphs(std::vector<int> /*buckets*/) {
    return nullptr;
  }
  // A sampler for up to max_rows rows of `vocab` logits on this device, or null where the
  // backend has none (CPU: the host sampler reads the logits in place).
  virtual std::unique_ptr<DeviceSampler> make_device_sampler(int /*max_rows*/, int64_t /*vocab*/) {
    return nullptr;
  }

 protected:
  Communicator* comm_ = nullptr;
};

// weight_dtype: F32 (the reference numerics), BF16 or F16 (half the bytes per weight;
// products and sums stay fp32). packed_weights: keep a quantized checkpoint's linear
// weights packed (FP8 / 4-bit codes + scales) and dequantize them a tile at a time in the
// GEMM, bit-identically to the load-time dequantization.
std::unique_ptr<Backend> make_cpu_backend(int num_threads, DType weight_dtype = DType::F32,
                                          bool packed_weights = false);

}  // namespace iris
