// Checkpoint loading: valid single/sharded files, and every malformed-checkpoint case
// fails with iris::Error naming the file and tensor (never a crash or an out-of-bounds read;
// CI runs this under ASan/UBSan).
#include <catch2/catch.hpp>
#include <filesystem>

#include "engine/backend.h"
#include "engine/core/check.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/loader/safetensors.h"
#include "engine/models/model.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;
using Catch::Matchers::Contains;

namespace {

std::string write_st(const std::string& name, const std::string& bytes) {
  const std::string dir = temp_dir(name);
  const std::string path = dir + "/model.safetensors";
  write_file(path, bytes);
  return path;
}

std::string header_file(const std::string& header_json, size_t data_bytes) {
  std::string h = header_json;
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h + std::string(data_bytes, '\x01');
}

}  // namespace

TEST_CASE("a valid safetensors file opens and indexes its tensors") {
  std::map<std::string, RawTensor> t;
  t["a"] = random_f32({2, 3}, 1);
  t["b"] = random_f32({4}, 2);
  const auto path = write_st("valid", safetensors_bytes(t));
  auto f = SafetensorsFile::open(path);
  REQUIRE(f->tensors().size() == 2);
  REQUIRE(f->find("a")->shape == std::vector<int64_t>{2, 3});
  REQUIRE(f->find("missing") == nullptr);
}

TEST_CASE("malformed safetensors files fail with a clear error") {
  SECTION("truncated below the length prefix") {
    const auto path = write_st("trunc", "abc");
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("truncated") && Contains(path));
  }
  SECTION("header length past EOF") {
    std::string b(8, '\0');
    b[0] = 100;
    b += "{}";
    const auto path = write_st("pasteof", b);
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("past the end of the file"));
  }
  SECTION("absurd header length") {
    std::string b(8, '\xff');
    const auto path = write_st("absurd", b + "{}");
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("absurd"));
  }
  SECTION("header not JSON") {
    const auto path = write_st("notjson", header_file("{not json", 0));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("not valid JSON"));
  }
  SECTION("unknown dtype names the tensor") {
    const auto path = write_st(
        "dtype", header_file(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("'w'") && Contains("unknown dtype"));
  }
  SECTION("data_offsets out of range") {
    const auto path = write_st(
        "range", header_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("'w'") && Contains("past the end"));
  }
  SECTION("data_offsets inverted") {
    const auto path = write_st(
        "inv", header_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("begin > end"));
  }
  SECTION("overlapping tensors") {
    const auto path = write_st(
        "overlap",
        header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    12));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("overlapping"));
  }
  SECTION("shape disagrees with byte count") {
    const auto path = write_st(
        "bytes", header_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("'w'") && Contains("shape"));
  }
  SECTION("huge shape does not overflow") {
    const auto path = write_st(
        "huge",
        header_file(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", 8));
    REQUIRE_THROWS_AS(SafetensorsFile::open(path), Error);
  }
  SECTION("negative shape") {
    const auto path = write_st(
        "neg", header_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8));
    REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Contains("non-negative"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(SafetensorsFile::open("/nonexistent/x.safetensors"), Contains("cannot open"));
  }
}

TEST_CASE("config.json validation") {
  SECTION("unknown architecture") {
    auto c = small_llama_config({{"architectures", {"GPTBigCodeForCausalLM"}}});
    REQUIRE_THROWS_WITH(ModelConfig::from_json(c, nullptr, "config.json"),
                        Contains("unknown architecture 'GPTBigCodeForCausalLM'"));
  }
  SECTION("missing field") {
    auto c = small_llama_config();
    c.erase("hidden_size");
    REQUIRE_THROWS_WITH(ModelConfig::from_json(c, nullptr, "config.json"), Contains("hidden_size"));
  }
  SECTION("heads not divisible") {
    auto c = small_llama_config({{"num_key_value_heads", 3}});
    REQUIRE_THROWS_WITH(ModelConfig::from_json(c, nullptr, "config.json"), Contains("multiple"));
  }
  SECTION("head_dim, eos lists and llama3 scaling are read") {
    auto c = small_llama_config({{"head_dim", 16}, {"eos_token_id", {2, 5}},
                                 {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0},
                                                   {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                                   {"original_max_position_embeddings", 64}}}});
    nlohmann::json gen = {{"eos_token_id", {5, 7}}, {"temperature", 0.6}};
    auto cfg = ModelConfig::from_json(c, gen, "config.json");
    REQUIRE(cfg.head_dim == 16);
    REQUIRE(cfg.eos_token_ids == std::vector<int32_t>{2, 5, 7});
    REQUIRE(cfg.rope_scaling.type == RopeScaling::Type::kLlama3);
    REQUIRE(cfg.generation.temperature.value() == Approx(0.6));
  }
  SECTION("unsupported rope scaling") {
    auto c = small_llama_config({{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}});
    REQUIRE_THROWS_WITH(ModelConfig::from_json(c, nullptr, "config.json"), Contains("yarn"));
  }
}

TEST_CASE("checkpoint-level errors name the file and tensor") {
  auto backend = make_cpu_backend(1);
  const auto cfg_json = small_llama_config();
  SECTION("a valid checkpoint loads") {
    const auto dir = write_checkpoint("ok", cfg_json, random_weights(cfg_json, 1));
    auto cfg = ModelConfig::from_dir(dir);
    auto ck = Checkpoint::open(dir);
    auto model = load_model(*ck, cfg, *backend);
    REQUIRE(model->weight_bytes() > 0);
  }
  SECTION("missing tensor") {
    auto w = random_weights(cfg_json, 1);
    w.erase("model.layers.1.mlp.up_proj.weight");
    const auto dir = write_checkpoint("missing", cfg_json, w);
    auto ck = Checkpoint::open(dir);
    REQUIRE_THROWS_WITH(load_model(*ck, ModelConfig::from_dir(dir), *backend),
                        Contains("missing tensor 'model.layers.1.mlp.up_proj.weight'"));
  }
  SECTION("shape disagrees with config.json") {
    auto w = random_weights(cfg_json, 1);
    w["model.layers.0.self_attn.k_proj.weight"] = random_f32({24, 32}, 9);
    const auto dir = write_checkpoint("shape", cfg_json, w);
    auto ck = Checkpoint::open(dir);
    REQUIRE_THROWS_WITH(load_model(*ck, ModelConfig::from_dir(dir), *backend),
                        Contains("model.layers.0.self_attn.k_proj.weight") &&
                            Contains("[24, 32]") && Contains("[16, 32]"));
  }
  SECTION("integer weights are refused") {
    auto w = random_weights(cfg_json, 1);
    w["model.norm.weight"].dtype = "I32";
    const auto dir = write_checkpoint("intw", cfg_json, w);
    auto ck = Checkpoint::open(dir);
    REQUIRE_THROWS_WITH(load_model(*ck, ModelConfig::from_dir(dir), *backend),
                        Contains("model.norm.weight") && Contains("I32"));
  }
  SECTION("index naming a tensor its shard lacks") {
    const auto dir = write_checkpoint("index", cfg_json, random_weights(cfg_json, 1));
    std::filesystem::rename(dir + "/model.safetensors", dir + "/model-00001-of-00001.safetensors");
    write_file(dir + "/model.safetensors.index.json",
               R"({"weight_map":{"model.norm.weight":"model-00001-of-00001.safetensors",)"
               R"("ghost.weight":"model-00001-of-00001.safetensors"}})");
    REQUIRE_THROWS_WITH(Checkpoint::open(dir), Contains("ghost.weight"));
  }
  SECTION("index pointing outside the directory") {
    const auto dir = temp_dir("escape");
    write_file(dir + "/model.safetensors.index.json", R"({"weight_map":{"a":"../../etc/passwd"}})");
    REQUIRE_THROWS_WITH(Checkpoint::open(dir), Contains("outside the checkpoint"));
  }
  SECTION("no weights at all") {
    const auto dir = temp_dir("empty");
    REQUIRE_THROWS_WITH(Checkpoint::open(dir), Contains("no model.safetensors"));
  }
}

TEST_CASE("sliced reads return one shard") {
  std::map<std::string, RawTensor> t;
  t["m"] = random_f32({4, 6}, 3);
  const auto dir = temp_dir("slice");
  write_file(dir + "/model.safetensors", safetensors_bytes(t));
  auto ck = Checkpoint::open(dir);
  const float* all = static_cast<const float*>(ck->read("m", {4, 6}).data);
  auto rows = ck->read("m", {4, 6}, Slice{0, 2, 2});
  REQUIRE(rows.shape == std::vector<int64_t>{2, 6});
  REQUIRE(static_cast<const float*>(rows.data)[0] == all[12]);
  auto cols = ck->read("m", {4, 6}, Slice{1, 3, 3});
  REQUIRE(cols.shape == std::vector<int64_t>{4, 3});
  const float* c = static_cast<const float*>(cols.data);
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 3; ++k) REQUIRE(c[r * 3 + k] == all[r * 6 + 3 + k]);
  REQUIRE_THROWS_AS(ck->read("m", {4, 6}, Slice{1, 4, 3}), Error);
}
