// GPU sampling (see sampling.h). One block per row.
//
// The host sampler keeps prefixes of the candidates sorted by (value desc, id asc): top-k
// keeps k, top-p the shortest prefix whose mass reaches top_p, min-p those with
// p >= min_p * p_max. Instead of sorting V values, each prefix is found by a radix select
// on the order-preserving 32-bit key of the (temperature-scaled) value: four passes of a
// 256-bin histogram of counts (top-k) or of exp masses (top-p) narrow the boundary down to
// one exact value b; ties at b are then resolved by id in one block-wide scan, which gives
// the boundary (b, last id). The final draw walks the kept set in id order (the kept set
// and each token's probability equal the host's; only the walk order differs, which does
// not change the distribution).
#include "cuda/common.cuh"
#include "cuda/sampling.h"

#include <climits>

namespace iris::cuda {
namespace {

constexpr int kThreads = 1024;

// Larger float -> larger key; -inf sorts below every finite value. -0.0 and +0.0 get one key
// (the host's comparison finds them equal and orders them by id).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Keep item (i, key) iff everything is kept, or key > bound, or key == bound and i <= last.
struct Prefix {
  bool all = true;
  uint32_t key = 0;
  int last_id = 0;
  __device__ bool keeps(int i, uint32_t k) const {
    return all || k > key || (k == key && i <= last_id);
  }
};

// Probability masses in the top-p selection are summed as 64-bit fixed point (2^-40 units;
// every exp(y - max) is in [0, 1], so a 2^24-token row cannot overflow): integer atomics
// commute, so the boundary, and with it the kept set, is the same on every run.
using Mass = unsigned long long;
__device__ __forceinline__ Mass to_mass(float e) {
  return static_cast<Mass>(static_cast<double>(e) * 1099511627776.0);
}

struct Shared {
  float f[33];
  int n[33];
  uint32_t cnt[256];
  Mass mass[256];
  uint32_t sel_prefix, sel_mask;
  int above_cnt, eq_cnt, last_id, pick;
  Mass above_mass, target_mass;
  float target;
};

template <typename T>
__device__ T block_exclusive_scan(T v, T* scratch /* 33 */, T& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  T inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const T w = lane < nwarps ? scratch[lane] : T(0);
    T winc = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const T n = __shfl_up_sync(0xffffffffu, winc, o);
      if (lane >= o) winc += n;
    }
    if (lane < nwarps) scratch[lane] = winc - w;
    if (lane == 31) scratch[32] = winc;
  }
  __syncthreads();
  const T excl = scratch[warp] + inc - v;
  total = scratch[32];
  __syncthreads();
  return excl;
}

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
__device__ uint4 philox4x32_10(uint4 ctr, uint2 key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      key.x += kW0;
      key.y += kW1;
    }
    const uint32_t lo0 = kM0 * ctr.x, hi0 = __umulhi(kM0, ctr.x);
    const uint32_t lo1 = kM1 * ctr.z, hi1 = __umulhi(kM1, ctr.z);
    ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
  }
  return ctr;
}

// Uniform double in [0, 1) with 53 random bits.
__device__ double uniform01(uint64_t seed, uint64_t offset) {
  const uint4 r = philox4x32_10(
      make_uint4(static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), 0u, 0u),
      make_uint2(static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)));
  return (static_cast<double>(r.x >> 5) * 67108864.0 + static_cast<double>(r.y >> 6)) *
         (1.0 / 9007199254740992.0);
}

// Block-wide argmax of each thread's (best, best_i), ties to the lower id; every thread gets
// the result.
__device__ void block_argmax(float& best, int& best_i, Shared& sm) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (oi < INT_MAX && (ov > best || (ov == best && oi < best_i) || best_i == INT_MAX)) {
      best = ov;
      best_i = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm.f[warp] = best;
    sm.n[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
      if (sm.n[w] != INT_MAX && (best_i == INT_MAX || sm.f[w] > best || (sm.f[w] == best && sm.n[w] < best_i))) {
        best = sm.f[w];
        best_i = sm.n[w];
      }
    sm.f[32] = best;
    sm.n[32] = best_i;
  }
  __syncthreads();
  best = sm.f[32];
  best_i = sm.n[32];
  __syncthreads();
}

struct Row {
  const float* x;  // penalised logits
  int V;
  float temperature;
  float mx;  // max of x / temperature
  __device__ float y(int i) const { return x[i] / temperature; }
  __device__ float e(float yv) const { return expf(yv - mx); }
};

// The boundary of the shortest prefix (in (value desc, id asc) order, inside `prev`) that
// holds `k` items (by_mass = false) or reaches `frac` of prev's mass (by_mass = true).
__device__ Prefix select_prefix(const Row& row, const Prefix& prev, bool by_mass, float k_or_frac,
                                Shared& sm) {
  const int tid = threadIdx.x;
  uint32_t prefix = 0, mask = 0;
  for (int level = 0; level < 4; ++level) {
    const int shift = 24 - 8 * level;
    if (tid < 256) {
      sm.cnt[tid] = 0;
      sm.mass[tid] = 0;
    }
    __syncthreads();
    for (int i = tid; i < row.V; i += blockDim.x) {
      const float yv = row.y(i);
      const uint32_t k = order_key(yv);
      if (!prev.keeps(i, k) || (k & mask) != prefix) continue;
      const int bin = (k >> shift) & 255;
      atomicAdd(&sm.cnt[bin], 1u);
      if (by_mass) atomicAdd(&sm.mass[bin], to_mass(row.e(yv)));
    }
    __syncthreads();
    if (tid == 0) {
      if (level == 0) {
        if (by_mass) {
          Mass total = 0;
          for (int d = 0; d < 256; ++d) total += sm.mass[d];
          sm.target_mass = static_cast<Mass>(static_cast<double>(k_or_frac) * static_cast<double>(total));
        }
        sm.target = k_or_frac;
        sm.above_cnt = 0;
        sm.above_mass = 0;
      }
      const float target = sm.target;
      const Mass target_mass = sm.target_mass;
      int cc = sm.above_cnt;
      Mass cm = sm.above_mass;
      int chosen = -1, last_nz = -1, cc_nz = cc;
      Mass cm_nz = cm;
      for (int d = 255; d >= 0; --d) {
        const int c = static_cast<int>(sm.cnt[d]);
        if (c == 0) continue;
        const bool reached =
            by_mass ? cm + sm.mass[d] >= target_mass : static_cast<float>(cc + c) >= target;
        if (reached) {
          chosen = d;
          break;
        }
        last_nz = d;
        cc_nz = cc;
        cm_nz = cm;
        cc += c;
        cm += sm.mass[d];
      }
      if (chosen < 0) {  // rounding left the target unreached: keep everything
        chosen = last_nz;
        cc = cc_nz;
        cm = cm_nz;
      }
      sm.sel_prefix = prefix | (static_cast<uint32_t>(chosen) << shift);
      sm.sel_mask = mask | (255u << shift);
      sm.above_cnt = cc;
      sm.above_mass = cm;
      sm.eq_cnt = static_cast<int>(sm.cnt[chosen]);
    }
    __syncthreads();
    prefix = sm.sel_prefix;
    mask = sm.sel_mask;
  }
  // prefix is now the exact boundary key b; take the first m items equal to it, by id.
  const int eq = sm.eq_cnt;
  int m;
  if (by_mass) {
    const Mass eb = to_mass(row.e(key_value(prefix)));
    const Mass need = sm.target_mass > sm.above_mass ? sm.target_mass - sm.above_mass : 0;
    m = eb > 0 ? static_cast<int>(min(static_cast<Mass>(eq), (need + eb - 1) / eb)) : eq;
  } else {
    m = static_cast<int>(k_or_frac) - sm.above_cnt;
  }
  m = max(1, min(m, eq));
  const int seg = (row.V + kThreads - 1) / kThreads;
  const int lo = min(row.V, tid * seg), hi = min(row.V, lo + seg);
  int c = 0;
  for (int i = lo; i < hi; ++i) {
    const uint32_t k = order_key(row.y(i));
    if (k == prefix && prev.keeps(i, k)) ++c;
  }
  int total = 0;
  const int excl = block_exclusive_scan(c, sm.n, total);
  if (excl < m && m <= excl + c) {
    int r = excl;
    for (int i = lo; i < hi; ++i) {
      const uint32_t k = order_key(row.y(i));
      if (k == prefix && prev.keeps(i, k) && ++r == m) {
        sm.last_id = i;
        break;
      }
    }
  }
  __syncthreads();
  Prefix p;
  p.all = false;
  p.key = prefix;
  p.last_id = sm.last_id;
  __syncthreads();
  return p;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SamplingBatch b) {
  __shared__ Shared sm;
  const int rowi = blockIdx.x, tid = threadIdx.x, V = b.vocab;
  const float* lg = b.logits + static_cast<int64_t>(rowi) * V;
  float* x = b.scratch + static_cast<int64_t>(rowi) * V;
  const SamplingRowParams p = b.params[rowi];

  // Unmodified log-softmax normaliser (for the logprob) while copying the row.
  float omax = -INFINITY;
  for (int i = tid; i < V; i += blockDim.x) {
    const float v = lg[i];
    x[i] = v;
    omax = fmaxf(omax, v);
  }
  omax = block_max(omax, sm.f);
  float osum = 0.0f;
  for (int i = tid; i < V; i += blockDim.x) osum += expf(lg[i] - omax);
  osum = block_sum(osum, sm.f);
  const float log_z = omax + logf(osum);

  // The best top_logprobs of the unmodified distribution: rounds of a block-wide argmax,
  // each over the entries after the previous pick in (value desc, id asc) order.
  if (p.top_logprobs > 0 && b.out_top_ids != nullptr) {
    float prev_v = INFINITY;
    int prev_i = -1;
    for (int r = 0; r < p.top_logprobs && r < V; ++r) {
      float best = -INFINITY;
      int best_i = INT_MAX;
      for (int i = tid; i < V; i += blockDim.x) {
        const float v = lg[i];
        if (!(v < prev_v || (v == prev_v && i > prev_i))) continue;
        if (best_i == INT_MAX || v > best) {
          best = v;
          best_i = i;
        }
      }
      block_argmax(best, best_i, sm);
      if (best_i == INT_MAX) break;
      if (tid == 0) {
        b.out_top_ids[rowi * SamplingParams::kMaxTopLogprobs + r] = best_i;
        b.out_top_logprobs[rowi * SamplingParams::kMaxTopLogprobs + r] = best - log_z;
      }
      prev_v = best;
      prev_i = best_i;
    }
  }

  // Penalties, bias, banned ids, then the mask. Entries are distinct ids, so no two threads
  // touch one x within a phase.
  if (b.penalty_offsets != nullptr) {
    const int e0 = b.penalty_offsets[rowi], e1 = b.penalty_offsets[rowi + 1];
    for (int e = e0 + tid; e < e1; e += blockDim.x) {
      const int t = b.penalty_tokens[e];
      if (t < 0 || t >= V) continue;
      float v = x[t];
      if (p.repetition_penalty != 1.0f)
        v = v > 0.0f ? v / p.repetition_penalty : v * p.repetition_penalty;
      const int n = b.penalty_counts[e];
      if (n > 0) v -= p.presence_penalty + p.frequency_penalty * static_cast<float>(n);
      x[t] = v;
    }
  }
  __syncthreads();
  if (b.bias_offsets != nullptr) {
    const int e0 = b.bias_offsets[rowi], e1 = b.bias_offsets[rowi + 1];
    for (int e = e0 + tid; e < e1; e += blockDim.x) {
      const int t = b.bias_tokens[e];
      if (t >= 0 && t < V) x[t] += b.bias_values[e];
    }
  }
  __syncthreads();
  if (b.banned_offsets != nullptr) {
    const int e0 = b.banned_offsets[rowi], e1 = b.banned_offsets[rowi + 1];
    for (int e = e0 + tid; e < e1; e += blockDim.x) {
      const int t = b.banned_tokens[e];
      if (t >= 0 && t < V) x[t] = -INFINITY;
    }
  }
  __syncthreads();
  if (b.allowed != nullptr && b.has_mask[rowi]) {
    const uint32_t* m = b.allowed + static_cast<int64_t>(rowi) * b.mask_words;
    for (int i = tid; i < V; i += blockDim.x)
      if (!((m[i >> 5] >> (i & 31)) & 1u)) x[i] = -INFINITY;
  }
  __syncthreads();

  if (p.temperature == 0.0f) {
    // Argmax, ties to the lowest id: each thread scans increasing ids with a strict >.
    float best = -INFINITY;
    int best_i = V;
    for (int i = tid; i < V; i += blockDim.x) {
      const float v = x[i];
      if (best_i == V || v > best) {
        best = v;
        best_i = i;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (ov > best || (ov == best && oi < best_i)) {
        best = ov;
        best_i = oi;
      }
    }
    const int lane = tid & 31, warp = tid >> 5;
    if (lane == 0) {
      sm.f[warp] = best;
      sm.n[warp] = best_i;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
        if (sm.f[w] > best || (sm.f[w] == best && sm.n[w] < best_i)) {
          best = sm.f[w];
          best_i = sm.n[w];
        }
      const int tok = best_i < V ? best_i : 0;
      b.out_tokens[rowi] = tok;
      b.out_logprobs[rowi] = lg[tok] - log_z;
    }
    return;
  }

  Row row{x, V, p.temperature, 0.0f};
  float mx = -INFINITY;
  for (int i = tid; i < V; i += blockDim.x) mx = fmaxf(mx, row.y(i));
  row.mx = block_max(mx, sm.f);

  Prefix kept;  // all
  if (p.top_k > 0 && p.top_k < V)
    kept = select_prefix(row, kept, false, static_cast<float>(p.top_k), sm);
  if (p.top_p < 1.0f) kept = select_prefix(row, kept, true, p.top_p, sm);

  // Min-p and the draw: inverse CDF over the kept set in id order, per-thread segments.
  const int seg = (V + kThreads - 1) / kThreads;
  const int lo = min(V, tid * seg), hi = min(V, lo + seg);
  float mass = 0.0f;
  int last_kept = -1;
  for (int i = lo; i < hi; ++i) {
    const float yv = row.y(i);
    const float ev = row.e(yv);
    if (!kept.keeps(i, order_key(yv)) || (p.min_p > 0.0f && ev < p.min_p)) continue;
    mass += ev;
    if (ev > 0.0f) last_kept = i;
  }
  float total = 0.0f;
  const float excl = block_exclusive_scan(mass, sm.f, total);
  const float target = static_cast<float>(uniform01(p.seed, p.offset)) * total;
  if (tid == 0) sm.pick = INT_MAX;
  __syncthreads();
  // Rounding can make two threads' intervals overlap, or leave the target inside a thread's
  // interval but past its own running sum: each thread that claims the target offers its
  // pick (or its last kept token) and the lowest id wins, so the result has one writer and
  // is the same on every run.
  if (excl <= target && target < excl + mass) {
    float cum = excl;
    int mine = last_kept;
    for (int i = lo; i < hi; ++i) {
      const float yv = row.y(i);
      const float ev = row.e(yv);
      if (!kept.keeps(i, order_key(yv)) || (p.min_p > 0.0f && ev < p.min_p)) continue;
      cum += ev;
      if (target < cum) {
        mine = i;
        break;
      }
    }
    if (mine >= 0) atomicMin(&sm.pick, mine);
  }
  // Fallback when rounding put the target past the end: the last kept token.
  int fallback = last_kept;
  for (int o = 16; o > 0; o >>= 1)
    fallback = max(fallback, __shfl_xor_sync(0xffffffffu, fallback, o));
  if ((tid & 31) == 0) sm.n[tid >> 5] = fallback;
  __syncthreads();
  if (tid == 0) {
    int tok = sm.pick == INT_MAX ? -1 : sm.pick;
    if (tok < 0) {
      for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) tok = max(tok, sm.n[w]);
      if (tok < 0) tok = 0;
    }
    b.out_tokens[rowi] = tok;
    b.out_logprobs[rowi] = lg[tok] - log_z;
  }
}

}  // namespace

void launch_sample(const SamplingBatch& batch, cudaStream_t stream) {
  if (batch.num_rows == 0) return;
  IRIS_CHECK(batch.vocab > 0 && batch.logits && batch.scratch && batch.params && batch.out_tokens &&
             batch.out_logprobs)
      << "cuda sampling: incomplete batch (vocab " << batch.vocab << ")";
  IRIS_CHECK(!batch.penalty_offsets || (batch.penalty_tokens && batch.penalty_counts))
      << "cuda sampling: penalty offsets without tokens/counts";
  IRIS_CHECK(!batch.banned_offsets || batch.banned_tokens)
      << "cuda sampling: banned offsets without tokens";
  sample_kernel<<<batch.num_rows, kThreads, 0, stream>>>(batch);
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace iris::cuda
