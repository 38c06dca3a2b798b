// Step input construction and the forward call (see model_runner.h).
#include "engine/model_runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>

#include "engine/core/check.h"

namespace iris {

ModelRunner::ModelRunner(Backend& backend, Model& model, KvCache& kv, RunnerLimits limits)
    : backend_(backend), model_(model), kv_(kv), limits_(limits) {
  IRIS_CHECK(limits.max_tokens > 0 && limits.max_seqs > 0 && limits.max_blocks_per_seq > 0)
      << "runner limits";
  const int64_t t = limits.max_tokens, s = limits.max_seqs;
  token_ids_ = backend.allocate(DType::I32, {t});
  position_rows_ = model.config().mrope_section.empty()
                       ? 1 : static_cast<int>(model.config().mrope_section.size());
  positions_ = position_rows_ == 1 ? backend.allocate(DType::I32, {t})
                                   : backend.allocate(DType::I32, {t, position_rows_});
  slot_mapping_ = backend.allocate(DType::I32, {t});
  logits_indices_ = backend.allocate(DType::I32, {s});
  query_start_ = backend.allocate(DType::I32, {s + 1});
  seq_lens_ = backend.allocate(DType::I32, {s});
  block_tables_ = backend.allocate(DType::I32, {s, limits.max_blocks_per_seq});
  logits_ = backend.allocate(DType::F32, {s, model.vocab_shard().second});
  if (model.config().multimodal || model.config().qwen_vl) {
    embed_rows_ = backend.allocate(DType::I32, {t});
    embeds_ = backend.allocate(backend.compute_dtype(), {t, model.config().hidden_size});
    media_bidirectional_ = model.config().multimodal && model.config().multimodal->gemma.has_value();
    if (media_bidirectional_) media_span_ = backend.allocate(DType::I32, {t, 2});
  }
  model.reserve(limits.max_tokens, limits.max_seqs);
  if (!limits.enforce_eager && model.supports_step_graphs() && backend.communicator() == nullptr)
    graphs_ = backend.make_step_graphs(graph_buckets(std::min(limits.max_seqs, limits.max_tokens)));
}

std::vector<int> ModelRunner::graph_buckets(int max_seqs) {
  // 1, 2, 4, 8, then every multiple of 8 (as vLLM), up to the step's sequence limit.
  std::vector<int> b;
  for (int n : {1, 2, 4}) if (n <= max_seqs) b.push_back(n);
  for (int n = 8; n <= max_seqs; n += 8) b.push_back(n);
  if (b.empty() || b.back() != max_seqs) b.push_back(max_seqs);
  return b;
}

const std::vector<float>& ModelRunner::run(const std::vector<SeqChunk>& chunks,
                                           const std::vector<uint8_t>* host_rows) {
  const int num_seqs = static_cast<int>(chunks.size());
  IRIS_CHECK(num_seqs > 0 && num_seqs <= limits_.max_seqs)
      << num_seqs << " sequences in a step (limit " << limits_.max_seqs << ")";
  const int bs = kv_.block_size;
  const int mb = limits_.max_blocks_per_seq;
  h_tokens_.clear();
  h_positions_.clear();
  h_slots_.clear();
  h_logits_idx_.clear();
  h_qstart_.assign(1, 0);
  h_seq_lens_.clear();
  h_tables_.assign(static_cast<size_t>(num_seqs) * mb, 0);
  h_embed_rows_.clear();
  h_embeds_.clear();
  h_media_span_.clear();
  step_has_span_ = false;
  const int64_t hidden = model_.config().hidden_size;
  int max_q = 0, max_len = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const SeqChunk& c = chunks[s];
    const int end = c.start_pos + c.num_tokens;
    IRIS_CHECK(c.num_tokens > 0 && c.start_pos >= 0 && c.num_blocks <= mb &&
               end <= c.num_blocks * bs)
        << "chunk " << s << ": " << c.num_tokens << " tokens at " << c.start_pos << " with "
        << c.num_blocks << " blocks of " << bs;
    for (int b = 0; b < c.num_blocks; ++b) {
      IRIS_CHECK(c.block_table[b] >= 0 && c.block_table[b] < kv_.num_blocks)
          << "block " << c.block_table[b] << " outside the KV cache";
      h_tables_[static_cast<size_t>(s) * mb + b] = c.block_table[b];
    }
    // Media spans overlapping this chunk: their rows take the given embeddings.
    if (c.media) {
      const int row0 = static_cast<int>(h_tokens_.size());
      for (const MediaEmbeds& m : *c.media) {
        const int lo = std::max(c.start_pos, m.position);
        const int hi = std::min(end, m.position + m.length);
        IRIS_CHECK(lo >= hi || (embeds_.tensor.defined() && m.embeds &&
                                static_cast<int64_t>(m.embeds->size()) == m.length * hidden))
            << "media span of chunk " << s << " has no usable embeddings";
        for (int p = lo; p < hi; ++p) {
          h_embed_rows_.push_back(row0 + (p - c.start_pos));
          const float* src = m.embeds->data() + static_cast<int64_t>(p - m.position) * hidden;
          h_embeds_.insert(h_embeds_.end(), src, src + hidden);
        }
      }
    }
    // Bidirectional images: every fed token inside a span sees the whole span, so the span's
    // K/V must all be written by the end of this chunk (the scheduler keeps it in one chunk).
    if (media_bidirectional_) {
      const size_t first = h_media_span_.size();
      h_media_span_.resize(first + 2 * static_cast<size_t>(c.num_tokens), 0);
      if (c.media) {
        for (const MediaEmbeds& m : *c.media) {
          const int lo = std::max(c.start_pos, m.position);
          const int hi = std::min(end, m.position + m.length);
          if (lo >= hi) continue;
          IRIS_CHECK(m.position + m.length <= end)
              << "a prefill chunk ending at " << end << " splits the image at positions ["
              << m.position << ", " << m.position + m.length
              << "), whose tokens attend to each other";
          for (int p = lo; p < hi; ++p) {
            h_media_span_[first + 2 * (p - c.start_pos)] = m.position;
            h_media_span_[first + 2 * (p - c.start_pos) + 1] = m.position + m.length;
          }
          step_has_span_ = true;
        }
      }
    }
    for (int i = 0; i < c.num_tokens; ++i) {
      const int pos = c.start_pos + i;
      h_tokens_.push_back(c.tokens[i]);
      if (position_rows_ == 1) {
        h_positions_.push_back(pos);
      } else if (c.mrope) {
        int32_t p3[3];
        c.mrope->at(pos, p3);
        h_positions_.insert(h_positions_.end(), p3, p3 + 3);
      } else {
        h_positions_.insert(h_positions_.end(), position_rows_, pos);
      }
      h_slots_.push_back(c.block_table[pos / bs] * bs + pos % bs);
    }
    h_qstart_.push_back(static_cast<int32_t>(h_tokens_.size()));
    h_seq_lens_.push_back(end);
    if (c.want_logits) h_logits_idx_.push_back(static_cast<int32_t>(h_tokens_.size()) - 1);
    max_q = std::max(max_q, c.num_tokens);
    max_len = std::max(max_len, end);
  }
  const int wanted = static_cast<int>(h_logits_idx_.size());
  // A decode step for a graph: pad to the bucket (padded sequences: one token at position
  // 0, nothing stored, any valid block; their logits rows are ignored).
  int bucket = 0;
  if (graphs_ && backend_.communicator() == nullptr && max_q == 1 && h_embed_rows_.empty() &&
      wanted == num_seqs)
    bucket = graphs_->bucket_for(num_seqs);
  if (bucket > 0) {
    h_tables_.resize(static_cast<size_t>(bucket) * mb, 0);
    for (int p = num_seqs; p < bucket; ++p) {
      h_tokens_.push_back(0);
      h_positions_.insert(h_positions_.end(), position_rows_, 0);
      h_slots_.push_back(-1);
      h_qstart_.push_back(p + 1);
      h_seq_lens_.push_back(1);
      h_logits_idx_.push_back(p);
    }
  }
  const int step_seqs = bucket > 0 ? bucket : num_seqs;
  const int num_tokens = static_cast<int>(h_tokens_.size());
  IRIS_CHECK(num_tokens <= limits_.max_tokens)
      << num_tokens << " tokens in a step (limit " << limits_.max_tokens << ")";
  const int64_t vocab = model_.config().vocab_size;
  for (int32_t id : h_tokens_)
    IRIS_CHECK(id >= 0 && id < vocab) << "token id " << id << " outside the vocabulary (" << vocab << ")";

  StepInputs in;
  in.token_ids = token_ids_.tensor.rows(0, num_tokens);
  in.positions = positions_.tensor.rows(0, num_tokens);
  in.logits_indices = logits_indices_.tensor.rows(0, static_cast<int64_t>(h_logits_idx_.size()));
  in.attn.query_start = query_start_.tensor.rows(0, step_seqs + 1);
  in.attn.seq_lens = seq_lens_.tensor.rows(0, step_seqs);
  in.attn.block_tables = block_tables_.tensor.rows(0, step_seqs);
  in.attn.slot_mapping = slot_mapping_.tensor.rows(0, num_tokens);
  in.attn.num_seqs = step_seqs;
  in.attn.num_tokens = num_tokens;
  in.attn.max_query_len = max_q;
  // A graph's launch configuration must not change between replays: the capacity stands in
  // for the longest sequence (kernels read the real lengths from seq_lens).
  in.attn.max_seq_len = bucket > 0 ? mb * bs : max_len;
  in.attn.max_blocks_per_seq = mb;
  backend_.upload_i32(h_tokens_.data(), in.token_ids);
  backend_.upload_i32(h_positions_.data(), in.positions);
  backend_.upload_i32(h_slots_.data(), in.attn.slot_mapping);
  backend_.upload_i32(h_qstart_.data(), in.attn.query_start);
  backend_.upload_i32(h_seq_lens_.data(), in.attn.seq_lens);
  backend_.upload_i32(h_tables_.data(), in.attn.block_tables);
  if (!h_logits_idx_.empty()) backend_.upload_i32(h_logits_idx_.data(), in.logits_indices);

  if (step_has_span_) {
    in.attn.media_span = media_span_.tensor.rows(0, num_tokens);
    backend_.upload_i32(h_media_span_.data(), in.attn.media_span);
  }
  if (!h_embed_rows_.empty()) {
    const int64_t n = static_cast<int64_t>(h_embed_rows_.size());
    in.embed_rows = embed_rows_.tensor.rows(0, n);
    in.embeds = embeds_.tensor.rows(0, n);
    backend_.upload_i32(h_embed_rows_.data(), in.embed_rows);
    backend_.upload(h_embeds_.data(), DType::F32, in.embeds);
  }

  step_in_ = in;
  step_logits_ = logits_.tensor.rows(0, static_cast<int64_t>(h_logits_idx_.size()));
  if (bucket == 0) {
    model_.forward(step_in_, kv_, step_logits_);
  } else if (graphs_->captured(bucket)) {
    graphs_->replay(bucket);
    ++graph_replays_;
  } else if (warmed_.insert(bucket).second) {
    model_.forward(step_in_, kv_, step_logits_);  // warm-up: kernels loaded, GEMM plans cached
  } else {
    try {
      // The captured forward reads step_in_ / step_logits_, whose tensors are the same views
      // of the same buffers at every step of this bucket.
      graphs_->capture(bucket, [this] { model_.forward(step_in_, kv_, step_logits_); });
      ++graph_captures_;
      graphs_->replay(bucket);
      ++graph_replays_;
    } catch (const std::exception& e) {
      spdlog::warn("decode-step graph capture failed at batch {} ({}); running eagerly from now on",
                   bucket, e.what());
      graphs_.reset();
      model_.forward(step_in_, kv_, step_logits_);
    }
  }
  const int64_t vocab_cols = step_logits_.dim(1);
  h_logits_.resize(static_cast<size_t>(wanted * vocab_cols));
  if (wanted == 0) return h_logits_;
  if (!host_rows) {
    backend_.download_f32(step_logits_.rows(0, wanted), h_logits_.data());
    return h_logits_;
  }
  IRIS_CHECK(static_cast<int>(host_rows->size()) == wanted)
      << host_rows->size() << " host-row flags for " << wanted << " logits rows";
  for (int r = 0; r < wanted;) {  // each run of consecutive flagged rows in one copy
    if (!(*host_rows)[r]) {
      ++r;
      continue;
    }
    int e = r;
    while (e < wanted && (*host_rows)[e]) ++e;
    backend_.download_f32(step_logits_.rows(r, e - r), h_logits_.data() + static_cast<size_t>(r) * vocab_cols);
    r = e;
  }
  return h_logits_;
}

}  // namespace iris
