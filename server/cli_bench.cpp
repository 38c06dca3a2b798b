// `iris bench offline` (`iris bench serve` is in cli_bench_serve.cpp): a synthetic workload through the batching engine. Prints
// throughput and where each step's time goes (schedule, prepare inputs + forward, sample).
// With --json-schema every request is constrained by that schema (compiled once, as a server's
// constraint cache would), which measures what structured output costs end to end.
// Figures only: it never fails on a timing.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/grammar/constraint.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/cli.h"
#include "server/engine_options.h"

namespace iris::cli {
namespace {

struct BenchOptions {
  std::string model;
  int num_prompts = 64;
  int input_len = 128;
  int output_len = 128;
  uint64_t seed = 0;
  bool json = false;
  std::string json_schema;  // a file; empty: unconstrained
  double temperature = 0;
  EngineOptions engine;
};

int run_offline(const BenchOptions& o) {
  IRIS_CHECK(o.num_prompts > 0 && o.input_len > 0 && o.output_len > 0)
      << "--num-prompts, --input-len and --output-len must be positive";
  LoadedModel m = load(o.model, o.engine);
  std::unique_ptr<Engine> engine_ptr = m.make_engine(o.engine.config());
  Engine& engine = *engine_ptr;
  std::shared_ptr<const grammar::CompiledConstraint> constraint;
  double compile_ms = 0;
  if (!o.json_schema.empty()) {
    IRIS_CHECK(std::filesystem::exists(std::filesystem::path(o.model) / "tokenizer.json"))
        << "--json-schema: " << o.model << " has no tokenizer.json";
    const std::unique_ptr<Tokenizer> tokenizer = Tokenizer::from_dir(o.model);
    std::ifstream in(o.json_schema);
    IRIS_CHECK(in.good()) << "--json-schema: cannot read " << o.json_schema;
    std::stringstream text;
    text << in.rdbuf();
    const auto c0 = std::chrono::steady_clock::now();
    grammar::ConstraintCache cache(grammar::TokenVocabulary::from_tokenizer(
        *tokenizer, static_cast<int32_t>(m.config.vocab_size), m.config.eos_token_ids));
    constraint = cache.get({grammar::ConstraintKind::kJsonSchema, text.str()});
    compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();
  }
  std::mt19937_64 rng(o.seed);
  const int64_t vocab = m.config.vocab_size;
  int64_t generated = 0;
  int errors = 0;
  for (int i = 0; i < o.num_prompts; ++i) {
    EngineRequest r;
    r.id = "bench-" + std::to_string(i);
    for (int k = 0; k < o.input_len; ++k) r.prompt.push_back(static_cast<int32_t>(rng() % vocab));
    r.params.temperature = static_cast<float>(o.temperature);
    r.params.seed = o.seed + static_cast<uint64_t>(i);
    r.params.max_tokens = o.output_len;
    // Unconstrained runs generate exactly --output-len tokens; a constrained one ends when
    // its output is complete (EOS is then the only token allowed).
    r.params.ignore_eos = constraint == nullptr;
    r.params.constraint = constraint;
    engine.submit(r, [&](const EngineOutput& out) {
      generated += static_cast<int64_t>(out.token_ids.size());
      if (!out.error.empty()) ++errors;
    });
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (engine.has_work()) engine.step();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const EngineStats s = engine.stats();
  const double steps = static_cast<double>(std::max<uint64_t>(1, s.num_steps));
  nlohmann::json j = {
      {"model", o.model}, {"num_prompts", o.num_prompts}, {"input_len", o.input_len},
      {"output_len", o.output_len}, {"errors", errors}, {"seconds", secs},
      {"json_schema", o.json_schema}, {"vocabulary_and_schema_compile_ms", compile_ms},
      {"output_tokens", generated},
      {"output_tokens_per_s", generated / secs},
      {"total_tokens_per_s", (generated + static_cast<double>(o.num_prompts) * o.input_len) / secs},
      {"steps", s.num_steps}, {"preemptions", s.num_preemptions},
      {"ms_per_step", {{"schedule", s.schedule_seconds * 1e3 / steps},
                       {"prepare_and_forward", s.prepare_forward_seconds * 1e3 / steps},
                       {"sample_and_update", s.sample_seconds * 1e3 / steps}}}};
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("requests %d (errors %d), input %d, output up to %d tokens each, %lld in all\n",
                o.num_prompts, errors, o.input_len, o.output_len, static_cast<long long>(generated));
    if (constraint)
      std::printf("constrained by %s (vocabulary + schema compiled in %.1f ms, before timing)\n",
                  o.json_schema.c_str(), compile_ms);
    std::printf("wall %.2f s | output %.1f tokens/s | total %.1f tokens/s | steps %llu | "
                "preemptions %lld\n",
                secs, j["output_tokens_per_s"].get<double>(), j["total_tokens_per_s"].get<double>(),
                static_cast<unsigned long long>(s.num_steps), static_cast<long long>(s.num_preemptions));
    std::printf("per step: schedule %.3f ms | prepare+forward %.3f ms | sample+update %.3f ms\n",
                s.schedule_seconds * 1e3 / steps, s.prepare_forward_seconds * 1e3 / steps,
                s.sample_seconds * 1e3 / steps);
  }
  return errors == 0 ? 0 : 1;
}

}  // namespace

Command add_bench(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* off = bench->add_subcommand("offline", "Synthetic offline throughput");
  off->add_option("--model", opts->model, "checkpoint directory")->required();
  off->add_option("--num-prompts", opts->num_prompts)->capture_default_str();
  off->add_option("--input-len", opts->input_len)->capture_default_str();
  off->add_option("--output-len", opts->output_len)->capture_default_str();
  off->add_option("--seed", opts->seed);
  off->add_option("--temperature", opts->temperature, "sampling temperature (0: greedy)")
      ->capture_default_str();
  off->add_option("--json-schema", opts->json_schema,
                  "constrain every output by the JSON Schema in this file");
  off->add_flag("--json", opts->json);
  opts->engine.add_to(*off);
  std::function<int()> serve = add_bench_serve(*bench);
  return {bench, [opts, off, serve]() {
            if (off->parsed()) return run_offline(*opts);
            return serve();
          }};
}

}  // namespace iris::cli
