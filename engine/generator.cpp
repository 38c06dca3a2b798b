// Single-request generation loop (see generator.h).
#include "engine/generator.h"

#include <chrono>
#include <numeric>

#include "engine/core/check.h"
#include "engine/sequence_constraint.h"

namespace iris {

Generator::Generator(Backend& backend, Model& model, int max_tokens_per_step, int block_size)
    : backend_(backend), model_(model), max_tokens_per_step_(max_tokens_per_step),
      block_size_(block_size) {}

GenerationResult Generator::generate(const std::vector<int32_t>& prompt,
                                     const SamplingParams& params) {
  params.validate();
  const ModelConfig& cfg = model_.config();
  const int64_t max_len = cfg.max_position_embeddings;
  IRIS_CHECK(!prompt.empty()) << "the prompt is empty";
  if (static_cast<int64_t>(prompt.size()) >= max_len)
    fail("prompt of ", prompt.size(), " tokens does not fit the context of ", max_len, " tokens");
  for (int32_t id : prompt)
    if (id < 0 || id >= cfg.vocab_size)
      fail("prompt token id ", id, " is outside the vocabulary [0, ", cfg.vocab_size, ")");

  const int64_t total = std::min<int64_t>(static_cast<int64_t>(prompt.size()) + params.max_tokens, max_len);
  const int num_blocks = static_cast<int>((total + block_size_ - 1) / block_size_);
  KvCache kv = allocate_kv_cache(backend_, model_, num_blocks, block_size_);
  std::vector<int32_t> table(num_blocks);
  std::iota(table.begin(), table.end(), 0);
  ModelRunner runner(backend_, model_, kv,
                     RunnerLimits{max_tokens_per_step_, 1, num_blocks});

  GenerationResult res;
  SequenceSampler sampler(params, prompt);
  check_constraint_fits(params, cfg.vocab_size);
  std::unique_ptr<SequenceConstraint> constraint;
  if (params.constraint) constraint = std::make_unique<SequenceConstraint>(params.constraint);
  std::vector<int32_t> tokens = prompt;
  const auto vocab = cfg.vocab_size;
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();

  int computed = 0;
  const std::vector<float>* logits = nullptr;
  while (computed < static_cast<int>(tokens.size())) {
    const int n = std::min<int>(max_tokens_per_step_, static_cast<int>(tokens.size()) - computed);
    SeqChunk c{tokens.data() + computed, n, computed, table.data(), num_blocks,
               computed + n == static_cast<int>(tokens.size())};
    logits = &runner.run({c});
    computed += n;
  }
  res.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  while (true) {
    const auto banned = banned_tokens(params, cfg.eos_token_ids, static_cast<int>(res.output_ids.size()));
    auto s = sampler.sample(logits->data(), vocab, banned,
                            constraint ? constraint->next_mask(vocab) : nullptr);
    sampler.append(s.token);
    res.output_ids.push_back(s.token);
    res.logprobs.push_back(s.logprob);
    tokens.push_back(s.token);
    auto stop = check_token_stop(params, cfg.eos_token_ids, s.token,
                                 static_cast<int>(res.output_ids.size()),
                                 static_cast<int64_t>(tokens.size()), max_len);
    if (constraint && (!stop || *stop == FinishReason::kLength))
      if (auto c = constraint->advance(s.token)) stop = c;
    if (stop) {
      res.finish_reason = *stop;
      break;
    }
    SeqChunk c{tokens.data() + computed, 1, computed, table.data(), num_blocks, true};
    logits = &runner.run({c});
    computed += 1;
  }
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return res;
}

}  // namespace iris
