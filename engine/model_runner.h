// ModelRunner turns one step — a list of sequence chunks, each with its tokens, start
// position and block table — into the flat device inputs (token ids, positions, slot
// mapping, block tables, query offsets) once, runs Model::forward, and returns the logits
// rows that will be sampled. Device buffers are sized once at construction.
#pragma once

#include <cstdint>
#include <memory>
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
};

class ModelRunner {
 public:
  ModelRunner(Backend& backend, Model& model, KvCache& kv, RunnerLimits limits);

  // Runs one step. Returns host logits [n_wanted, vocab shard], rows in chunk order (this
  // rank's columns of the vocabulary: model.vocab_shard()).
  const std::vector<float>& run(const std::vector<SeqChunk>& chunks);

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
  std::vector<int32_t> h_embed_rows_;
  std::vector<float> h_embeds_;
  std::vector<int32_t> h_tokens_, h_positions_, h_logits_idx_, h_qstart_, h_seq_lens_,
      h_tables_, h_slots_;
  std::vector<float> h_logits_;
};

}  // namespace iris
