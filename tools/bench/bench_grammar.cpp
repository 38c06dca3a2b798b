// Structured-output constraint speed on a large vocabulary: for every JSON schema of a corpus,
// the time to compile it and compute the first token mask (what a request pays before its
// first sample when the schema is not cached), then the time of each next-token mask along a
// generation that picks random allowed tokens (as the grammar tests do) until the output is
// complete. Each schema runs twice: "cold" on a freshly compiled constraint and "warm" on the
// same compiled constraint again (a repeated schema from the cache: states and masks known).
// Prints figures only; never fails on a timing. The last line, "RESULT {...}", is JSON.
//
// usage: bench_grammar [SCHEMA_DIR=tests/grammar/schemas] [TOKENIZER_DIR] [max_tokens=600]
//   Without TOKENIZER_DIR the vocabulary is the synthetic 150k-token byte-level one of
//   tests/grammar/synthetic_vocab.h (151,936 logits, like Qwen2).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/grammar/constraint.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/grammar/synthetic_vocab.h"

using namespace iris;
using namespace iris::grammar;
using clock_type = std::chrono::steady_clock;

namespace {

double us_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t).count();
}

struct Summary {
  double mean = 0, p50 = 0, p99 = 0, max = 0;
  size_t n = 0;
};
Summary summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  auto pct = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))]; };
  s.p50 = pct(0.5);
  s.p99 = pct(0.99);
  s.max = v.back();
  return s;
}

// One generation: random allowed tokens (half of the time among punctuation-only ones) until
// complete (then EOS with probability 0.3 per step) or max_tokens. Returns per-token mask times.
void generate(const std::shared_ptr<const CompiledConstraint>& c, uint32_t seed, int max_tokens,
              std::vector<double>& mask_us, std::vector<double>& advance_us, int& tokens,
              bool& complete) {
  const TokenVocabulary& vocab = c->vocabulary();
  Matcher m(c);
  std::mt19937 rng(seed);
  std::vector<uint32_t> words(static_cast<size_t>(m.mask_words()));
  std::vector<int32_t> ids, punct;
  complete = false;
  tokens = 0;
  for (int step = 0; step < max_tokens; ++step) {
    if (m.is_terminated()) {
      complete = true;
      return;
    }
    auto t0 = clock_type::now();
    m.fill_next_token_bitmask(words.data());
    mask_us.push_back(us_since(t0));
    ids.clear();
    punct.clear();
    bool eos = false;
    for (int32_t t = 0; t < m.vocab_size(); ++t) {
      if (!(words[t >> 5] >> (t & 31) & 1u)) continue;
      if (vocab.is_eos(t)) {
        eos = true;
        continue;
      }
      ids.push_back(t);
      const std::string& b = *vocab.bytes(t);
      if (std::none_of(b.begin(), b.end(), [](char ch) {
            return std::isalnum(static_cast<unsigned char>(ch)) || static_cast<unsigned char>(ch) >= 0x80;
          }))
        punct.push_back(t);
    }
    if (eos && (ids.empty() || rng() % 10 < 3)) {
      complete = true;
      return;
    }
    if (ids.empty()) return;  // a dead end (the tests assert there are none)
    const int32_t pick = !punct.empty() && rng() % 2 == 0 ? punct[rng() % punct.size()] : ids[rng() % ids.size()];
    t0 = clock_type::now();
    m.accept_token(pick);
    advance_us.push_back(us_since(t0));
    ++tokens;
  }
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--help") {
    std::printf("usage: %s [SCHEMA_DIR=tests/grammar/schemas] [TOKENIZER_DIR] [max_tokens=600]\n", argv[0]);
    return 0;
  }
  const std::string dir = argc > 1 ? argv[1] : "tests/grammar/schemas";
  const std::string tok_dir = argc > 2 ? argv[2] : "";
  const int max_tokens = argc > 3 ? std::atoi(argv[3]) : 600;

  auto t0 = clock_type::now();
  std::unique_ptr<Tokenizer> tok = tok_dir.empty() ? Tokenizer::from_json(test::synthetic_bytelevel_json())
                                                   : Tokenizer::from_dir(tok_dir);
  int32_t size = tok_dir.empty() ? 151936 : tok->vocab_size();
  std::vector<int32_t> eos;
  if (auto e = tok->eos_token_id()) eos.push_back(*e);
  else if (auto e2 = tok->token_to_id("<|endoftext|>")) eos.push_back(*e2);
  auto vocab = TokenVocabulary::from_tokenizer(*tok, size, eos);
  const double vocab_ms = us_since(t0) / 1000;
  std::printf("vocabulary: %d logits, %zu tokens in the trie (%zu nodes, max %d bytes); built in %.0f ms\n",
              vocab->size(), vocab->trie_tokens().size(), vocab->trie().size(), vocab->max_depth(), vocab_ms);

  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());

  std::vector<double> first_ms, cold_mask, warm_mask, advance;
  int total_tokens = 0, completed = 0, runs = 0;
  std::printf("%-34s %9s %7s %10s %10s %10s\n", "schema", "first ms", "tokens", "cold p50us", "cold maxus", "warm p50us");
  for (const auto& f : files) {
    const std::string text = read(f);
    auto t = clock_type::now();
    auto c = compile_constraint({ConstraintKind::kJsonSchema, text}, vocab);  // incl. first mask
    first_ms.push_back(us_since(t) / 1000);
    std::vector<double> cold, warm;
    int n = 0;
    bool done = false;
    generate(c, 1, max_tokens, cold, advance, n, done);
    total_tokens += n;
    completed += done;
    ++runs;
    generate(c, 1, max_tokens, warm, advance, n, done);  // the same generation, warm caches
    const Summary sc = summarize(cold), sw = summarize(warm);
    const auto st = c->automaton().stats();
    std::printf("%-34s %9.2f %7d %10.1f %10.1f %10.1f  states %zu, walks: %llu local, %llu shared, %llu full\n",
                f.filename().string().c_str(), first_ms.back(), n, sc.p50, sc.max, sw.p50, st.states,
                static_cast<unsigned long long>(st.local_walks),
                static_cast<unsigned long long>(st.shared_local_hits),
                static_cast<unsigned long long>(st.full_walks));
    cold_mask.insert(cold_mask.end(), cold.begin(), cold.end());
    warm_mask.insert(warm_mask.end(), warm.begin(), warm.end());
  }
  const Summary fm = summarize(first_ms), cm = summarize(cold_mask), wm = summarize(warm_mask),
                am = summarize(advance);
  std::printf("\n%d schemas, %d tokens, %d of %d generations complete\n", runs, total_tokens, completed, runs);
  std::printf("compile + first mask (ms):   mean %.2f  p50 %.2f  p99 %.2f  max %.2f\n", fm.mean, fm.p50, fm.p99, fm.max);
  std::printf("next-token mask, cold (us):  mean %.1f  p50 %.1f  p99 %.1f  max %.1f  (n=%zu)\n", cm.mean, cm.p50, cm.p99, cm.max, cm.n);
  std::printf("next-token mask, warm (us):  mean %.1f  p50 %.1f  p99 %.1f  max %.1f  (n=%zu)\n", wm.mean, wm.p50, wm.p99, wm.max, wm.n);
  std::printf("advance by a token (us):     mean %.2f  p50 %.2f  p99 %.2f  max %.2f\n", am.mean, am.p50, am.p99, am.max);
  nlohmann::json r = {{"vocab", vocab->size()},
                      {"schemas", runs},
                      {"first_mask_ms", {{"mean", fm.mean}, {"p50", fm.p50}, {"p99", fm.p99}, {"max", fm.max}}},
                      {"mask_cold_us", {{"mean", cm.mean}, {"p50", cm.p50}, {"p99", cm.p99}, {"max", cm.max}}},
                      {"mask_warm_us", {{"mean", wm.mean}, {"p50", wm.p50}, {"p99", wm.p99}, {"max", wm.max}}},
                      {"advance_us", {{"mean", am.mean}, {"p50", am.p50}, {"p99", am.p99}, {"max", am.max}}}};
  std::printf("RESULT %s\n", r.dump().c_str());
  return 0;
}
