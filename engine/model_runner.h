// ModelRunner turns one step — a list of sequence chunks, each with its tokens, start
// position and block table — into the flat device inputs (token ids, positions, slot
// mapping, block tables, query offsets) once, runs Model::forward, and returns the logits
// rows that will be sampled. Device buffers are sized once at construction.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "engine/models/model.h"
#include "engine/mrope_positions.h"

namespace iris {

// Embeddings that replace the input embeddings of a span of a prompt's positions (an image's
// placeholder tokens), computed by a vision encoder. Shared, read-only, on the host.
struct MediaEmbeds {
  int32_t position = 0;  // first prompt position replaced
  int32_t length = 0;    // positions replaced (rows of `embeds`)
  std::shared_ptr<const std::vector<float>> embeds;  // fp32 [length, hidden_size]
  // Of the media itself: the prefix-cache and encoder-cache key, so equal hashes must mean
  // equal embeddings (the server hashes the decoded pixels with SHA-256).
  uint64_t content_hash = 0;
  // In a request: the engine's MediaEncoder input (e.g. patchified pixels) from which it
  // computes `embeds` when a prefill chunk first needs them; null when `embeds` is given.
  // The runner reads only `embeds`.
  std::shared_ptr<const std::vector<float>> encoder_input;
  // M-RoPE models (Qwen2.5-VL): the span's grid in language-model tokens (grid_t * grid_h *
  // grid_w == length) and the temporal position step per grid frame (MropeSpan); unused
  // (grid_t = 0) otherwise.
  int32_t grid_t = 0, grid_h = 0, grid_w = 0;
  double temporal_step = 0;
};

struct SeqChunk {
  const int32_t* tokens = nullptr;  // the tokens fed this step
  int num_tokens = 0;
  int start_pos = 0;                  // tokens of this sequence already in the KV cache
  const int32_t* block_table = nullptr;
  int num_blocks = 0;                 // entries in block_table
  bool want_logits = false;           // sample after the chunk's last token
  const std::vector<MediaEmbeds>* media = nullptr;  // the sequence's media spans, if any
  // M-RoPE models: the sequence's positions when its prompt has media (null = each of the
  // three positions is the token index).
  const MropePositions* mrope = nullptr;
};

struct RunnerLimits {
  int max_tokens = 512;       // tokens per step
  int max_seqs = 64;          // sequences per step
  int max_blocks_per_seq = 0; // ceil(max_model_len / block_size)
  // Never capture decode steps as graphs (--enforce-eager); only backends that offer graphs
  // (CUDA) capture at all.
  bool enforce_eager = false;
};

class ModelRunner {
 public:
  ModelRunner(Backend& backend, Model& model, KvCache& kv, RunnerLimits limits);

  // Runs one step. Returns host logits [n_wanted, vocab shard], rows in chunk order (this
  // rank's columns of the vocabulary: model.vocab_shard()). With `host_rows` (one flag per
  // wanted row), only the flagged rows are copied to the host; the others are left unset
  // (their logits stay on the device: device_logits()).
  //
  // Decode steps (one token per sequence, no media) on a backend with graphs, one rank, a
  // model whose forward can be captured and without enforce_eager: the batch is padded to
  // a bucket size (padded rows store nothing and their logits are ignored), the first step
  // at a bucket runs eagerly (warm-up), the second captures the forward, and every later one
  // replays it.
  const std::vector<float>& run(const std::vector<SeqChunk>& chunks,
                                const std::vector<uint8_t>* host_rows = nullptr);
  // The last run()'s logits on the device: rows [0, n_wanted) in chunk order (a padded
  // decode step has more rows; they are not wanted).
  const Tensor& device_logits() const { return step_logits_; }
  // Graph captures and replays so far (0 where no graphs are used).
  uint64_t graph_captures() const { return graph_captures_; }
  uint64_t graph_replays() const { return graph_replays_; }
  // The bucket sizes decode steps are padded to when graphs are used.
  static std::vector<int> graph_buckets(int max_seqs);

  int64_t vocab_size() const { return model_.config().vocab_size; }
  // The logits of the last run().
  const std::vector<float>& last_logits() const { return h_logits_; }
  const RunnerLimits& limits() const { return limits_; }

 private:
  Backend& backend_;
  Model& model_;
  KvCache& kv_;
  RunnerLimits limits_;
  int position_rows_ = 1;  // 3 with M-RoPE
  Buffer token_ids_, positions_, logits_indices_, query_start_, seq_lens_, block_tables_,
      slot_mapping_, logits_;
  Buffer embed_rows_, embeds_;  // multimodal models only
  // Gemma 3: each fed token's image span for bidirectional attention (AttentionMetadata).
  bool media_bidirectional_ = false;
  Buffer media_span_;
  std::vector<int32_t> h_media_span_;
  bool step_has_span_ = false;
  std::vector<int32_t> h_embed_rows_;
  std::vector<float> h_embeds_;
  std::vector<int32_t> h_tokens_, h_positions_, h_logits_idx_, h_qstart_, h_seq_lens_,
      h_tables_, h_slots_;
  std::vector<float> h_logits_;
  // Decode-step graphs (null when not used) and what their captured forward reads.
  std::unique_ptr<StepGraphRunner> graphs_;
  std::set<int> warmed_;  // buckets run once eagerly, ready to capture
  StepInputs step_in_;
  Tensor step_logits_;
  uint64_t graph_captures_ = 0, graph_replays_ = 0;
};

}  // namespace iris
