// `iris generate`: one prompt through one model, printed as text or as one JSON object
// (prompt ids, output ids, their log-probabilities, text, finish reason).
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/cli.h"
#include "server/engine_options.h"

namespace iris::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  int max_tokens = 16;
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int> top_k;
  float presence_penalty = 0.0f, frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;
  int min_tokens = 0;
  bool ignore_eos = false;
  bool json = false;
  bool prompt_given = false;
  std::vector<std::string> stop;
  std::vector<std::string> images;
  std::vector<std::string> videos;  // video files (Qwen2.5-VL)
  double max_video_seconds = 600;
  uint64_t max_image_pixels = 89'478'485;
  EngineOptions engine;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      fail("--prompt-ids: '", item, "' is not an integer");
    }
    if (used != item.size() && item.find_first_not_of(" \t", used) != std::string::npos)
      fail("--prompt-ids: '", item, "' is not an integer");
    if (v < INT32_MIN || v > INT32_MAX) fail("--prompt-ids: ", item, " is out of range");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

int run_generate(const GenerateOptions& o) {
  // The tokenizer is optional: a checkpoint without tokenizer files still runs --prompt-ids.
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(std::filesystem::path(o.model) / "tokenizer.json"))
    tokenizer = Tokenizer::from_dir(o.model);
  std::vector<int32_t> prompt;
  if (o.prompt_given) {
    if (!tokenizer) fail("--prompt: ", o.model, " has no tokenizer.json; use --prompt-ids");
    prompt = tokenizer->encode(o.prompt, /*add_special_tokens=*/true);
  } else {
    prompt = parse_ids(o.prompt_ids);
  }
  if (prompt.empty()) fail("the prompt is empty");

  LoadedModel m = load(o.model, o.engine);
  const ModelConfig& cfg = m.config;
  // Images: decoded and preprocessed here, encoded by the engine when prefill reaches them;
  // each image placeholder token of the prompt becomes the vision tower's number of tokens.
  std::vector<MediaEmbeds> media;
  if (!o.images.empty() || !o.videos.empty()) {
    if (!m.image_encoder) fail("--image/--video: ", o.model, " is not a vision-language model");
    const ImageEncoder& encoder = *m.image_encoder;
    image::DecodeLimits limits;
    limits.max_pixels = o.max_image_pixels;
    auto read = [](const char* flag, const std::string& path) {
      std::ifstream in(path, std::ios::binary);
      if (!in) fail(flag, " ", path, ": cannot open");
      return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    std::vector<ImageEncoder::Prepared> prepared, videos;
    for (const std::string& path : o.images) {
      const std::vector<uint8_t> bytes = read("--image", path);
      try {
        prepared.push_back(encoder.prepare(bytes, limits));
      } catch (const Error& e) {
        fail("--image ", path, ": ", e.what());
      }
    }
    if (!o.videos.empty() && !encoder.qwen_processor())
      fail("--video: ", o.model, " does not take videos");
    image::VideoLimits vlimits;
    vlimits.max_pixels = o.max_image_pixels;
    vlimits.max_seconds = o.max_video_seconds;
    for (const std::string& path : o.videos) {
      const std::vector<uint8_t> bytes = read("--video", path);
      try {
        videos.push_back(encoder.prepare_video_file(bytes, vlimits));
      } catch (const Error& e) {
        fail("--video ", path, ": ", e.what());
      }
    }
    try {
      media = encoder.qwen_processor()
                  ? expand_media_placeholders(prompt, encoder.image_token_id(), prepared,
                                              encoder.video_token_id(), videos)
                  : expand_image_placeholders(prompt, encoder.image_token_id(),
                                              encoder.tokens_per_image(), prepared, encoder.markup());
    } catch (const Error& e) {
      fail("--image/--video: ", e.what());
    }
  }
  SamplingParams p;
  p.max_tokens = o.max_tokens;
  p.temperature = o.temperature.value_or(cfg.generation.temperature.value_or(1.0f));
  p.top_p = o.top_p.value_or(cfg.generation.top_p.value_or(1.0f));
  p.top_k = o.top_k.value_or(cfg.generation.top_k.value_or(-1));
  p.min_p = o.min_p.value_or(cfg.generation.min_p.value_or(0.0f));
  p.repetition_penalty = o.repetition_penalty.value_or(cfg.generation.repetition_penalty.value_or(1.0f));
  p.presence_penalty = o.presence_penalty;
  p.frequency_penalty = o.frequency_penalty;
  p.seed = o.seed;
  p.min_tokens = o.min_tokens;
  p.ignore_eos = o.ignore_eos;
  p.stop = o.stop;

  // One request through the batching engine: the same path `iris serve` takes.
  EngineConfig ec = o.engine.config();
  if (ec.num_kv_blocks == 0 && ec.kv_cache_memory_bytes == 0) {
    const int64_t ctx = std::min<int64_t>(cfg.max_position_embeddings,
                                          static_cast<int64_t>(prompt.size()) + p.max_tokens);
    ec.num_kv_blocks = static_cast<int>((ctx + ec.block_size - 1) / ec.block_size) + 1;
  }
  ec.max_num_seqs = 1;
  std::unique_ptr<Engine> engine_ptr = m.make_engine(ec, tokenizer.get());
  Engine& engine = *engine_ptr;
  struct {
    std::vector<int32_t> output_ids;
    std::vector<float> logprobs;
    std::string text;
    FinishReason finish_reason = FinishReason::kLength;
    std::string error;
  } r;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  std::optional<clock::time_point> first_token;
  EngineRequest request;
  request.id = "generate";
  request.prompt = prompt;
  request.params = p;
  request.media = std::move(media);
  engine.submit(std::move(request), [&](const EngineOutput& out) {
    if (!first_token && !out.token_ids.empty()) first_token = clock::now();
    r.output_ids.insert(r.output_ids.end(), out.token_ids.begin(), out.token_ids.end());
    r.logprobs.insert(r.logprobs.end(), out.logprobs.begin(), out.logprobs.end());
    r.text += out.text;
    if (out.finish_reason) r.finish_reason = *out.finish_reason;
    if (!out.error.empty()) r.error = out.error;
  });
  while (engine.has_work()) engine.step();
  if (!r.error.empty()) fail(r.error);
  const double ttft = std::chrono::duration<double>(first_token.value_or(clock::now()) - t0).count();
  const double total = std::chrono::duration<double>(clock::now() - t0).count();

  if (o.json) {
    nlohmann::json j;
    j["prompt_ids"] = prompt;
    j["output_ids"] = r.output_ids;
    j["logprobs"] = r.logprobs;
    j["text"] = r.text;
    j["finish_reason"] = finish_reason_name(r.finish_reason);
    const EngineStats st = engine.stats();
    j["kv_blocks_total"] = st.num_total_blocks;
    j["kv_cache_bytes"] = st.kv_cache_bytes;
    j["kv_cache_dtype"] = std::string(dtype_name(kv_storage_dtype(ec.kv_cache_dtype, m.backends[0]->compute_dtype())));
    std::cout << j.dump() << std::endl;
  } else {
    if (tokenizer) {
      std::cout << r.text << "\n";
    } else {
      for (size_t i = 0; i < r.output_ids.size(); ++i) std::cout << (i ? " " : "") << r.output_ids[i];
      std::cout << "\n";
    }
    std::cerr << "finish_reason=" << finish_reason_name(r.finish_reason) << " prompt_tokens="
              << prompt.size() << " completion_tokens=" << r.output_ids.size()
              << " time_to_first_token=" << ttft * 1e3 << "ms total=" << total * 1e3 << "ms\n";
  }
  return 0;
}

}  // namespace

Command add_generate(CLI::App& app) {
  auto opts = std::make_shared<GenerateOptions>();
  CLI::App* sub = app.add_subcommand("generate", "Generate from one prompt");
  sub->add_option("--model", opts->model,
                  "Hugging Face checkpoint directory (default: the embedded iris-tiny)");
  auto* prompt = sub->add_option("--prompt", opts->prompt, "prompt text (needs tokenizer files)");
  auto* ids = sub->add_option("--prompt-ids", opts->prompt_ids, "prompt token ids, comma-separated");
  prompt->excludes(ids);
  sub->add_option("--max-tokens", opts->max_tokens, "tokens to generate at most");
  sub->add_option("--temperature", opts->temperature, "0 = greedy");
  sub->add_option("--top-k", opts->top_k, "-1 = off");
  sub->add_option("--top-p", opts->top_p);
  sub->add_option("--min-p", opts->min_p);
  sub->add_option("--repetition-penalty", opts->repetition_penalty);
  sub->add_option("--presence-penalty", opts->presence_penalty);
  sub->add_option("--frequency-penalty", opts->frequency_penalty);
  sub->add_option("--seed", opts->seed);
  sub->add_option("--min-tokens", opts->min_tokens);
  sub->add_flag("--ignore-eos", opts->ignore_eos);
  sub->add_option("--stop", opts->stop, "stop string (repeatable; needs a tokenizer)");
  sub->add_option("--image", opts->images,
                  "image file (JPEG/PNG; repeatable): the prompt holds the model's image token once "
                  "per image, in order");
  sub->add_option("--video", opts->videos,
                  "video file (MP4, WebM/Matroska, AVI; Qwen2.5-VL; repeatable): the prompt holds "
                  "the video token once per video, in order; frames sampled as the processor does");
  sub->add_option("--max-image-pixels", opts->max_image_pixels,
                  "refuse larger images and video frames (checked on the header)")->capture_default_str();
  sub->add_option("--max-video-seconds", opts->max_video_seconds,
                  "refuse longer video files (checked before decoding)")->capture_default_str();
  opts->engine.add_to(*sub);
  sub->add_flag("--json", opts->json, "print one JSON object");
  return {sub, [opts, prompt, ids]() {
            if (prompt->count() == 0 && ids->count() == 0)
              fail("one of --prompt or --prompt-ids is required");
            opts->prompt_given = prompt->count() > 0;
            if (opts->model.empty()) opts->model = default_model_dir();
            return run_generate(*opts);
          }};
}

}  // namespace iris::cli
