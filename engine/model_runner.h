// ModelRunner turns one step — a list of sequence chunks, each with its tokens, start
// position and block table — into the flat device inputs (token ids, positions, slot
// mapping, block tables, query offsets) once, runs Model::forward, and returns the logits
// rows that will be sampled. Device buffers are sized once at construction.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/models/model.h"

namespace iris {

struct SeqChunk {
  const int32_t* tokens = nullptr;  // the tokens fed this step
  int num_tokens = 0;
  int start_pos = 0;                  // tokens of this sequence already in the KV cache
  const int32_t* block_table = nullptr;
  int num_blocks = 0;                 // entries in block_table
  bool want_logits = false;           // sample after the chunk's last token
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
  Buffer token_ids_, positions_, logits_indices_, query_start_, seq_lens_, block_tables_,
      slot_mapping_, logits_;
  std::vector<int32_t> h_tokens_, h_positions_, h_logits_idx_, h_qstart_, h_seq_lens_,
      h_tables_, h_slots_;
  std::vector<float> h_logits_;
};

}  // namespace iris
