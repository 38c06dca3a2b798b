// Compares the loader's dequantized weights with the reference's bit for bit: for every
// quantized fixture checkpoint, fixtures.json["dequant"] holds one weight's shape, the fp32
// bit patterns of its first row and an FNV-1a 64 hash of all its fp32 bytes, both computed
// from tests/parity/reference_dequant.py's output.
//
// The packed layout the CPU backend keeps (engine/core/packed_weight.h) is checked against
// the same dequantized weight: row and column shards at offsets that cut scale groups and
// 4-bit byte pairs, and shards fused back together, must dequantize to the very same bits.
//
// Loading the model with a CPU backend that keeps weights packed must hold the linear
// layers in about 1 byte (FP8) or 0.6 byte (4-bit) per weight instead of 4, on one rank and
// on each of two tensor-parallel ranks.
//
// usage: check_dequant FIXTURE_DIR
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/core/check.h"
#include "engine/loader/model_config.h"
#include "engine/models/model.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/quantization.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::ifstream in(dir + "/fixtures.json");
  const nlohmann::json fx = nlohmann::json::parse(in);
  int passed = 0, failed = 0;
  for (auto it = fx["dequant"].begin(); it != fx["dequant"].end(); ++it) {
    const std::string model = it.key();
    const auto& d = it.value();
    try {
      auto ck = iris::Checkpoint::open(dir + "/" + model);
      if (!ck->quantization()) iris::fail(model, ": no quantization_config detected");
      const std::vector<int64_t> shape = d["shape"].get<std::vector<int64_t>>();
      const iris::HostTensor h = ck->read(d["tensor"].get<std::string>(), shape);
      if (h.dtype != iris::DType::F32 || h.shape != shape) iris::fail(model, ": not F32 ", iris::shape_str(shape));
      const auto* w = static_cast<const float*>(h.data);
      const auto bits = d["first_row_bits"].get<std::vector<uint32_t>>();
      int mismatches = 0;
      for (size_t i = 0; i < bits.size(); ++i) {
        uint32_t b;
        std::memcpy(&b, &w[i], 4);
        if (b != bits[i] && mismatches++ < 3)
          std::printf("FAIL %s: element [0, %zu] bits 0x%08x, reference 0x%08x\n", model.c_str(), i, b, bits[i]);
      }
      uint64_t hash = 0xcbf29ce484222325ull;
      const auto* bytes = static_cast<const uint8_t*>(h.data);
      for (size_t i = 0; i < static_cast<size_t>(h.numel()) * 4; ++i)
        hash = (hash ^ bytes[i]) * 0x100000001b3ull;
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
      const bool hash_ok = d["fnv1a64"].get<std::string>() == hex;
      if (!hash_ok)
        std::printf("FAIL %s: FNV-1a of all values %s, reference %s\n", model.c_str(), hex,
                    d["fnv1a64"].get<std::string>().c_str());
      // Packed shards: every value bit-equal to the dequantized weight's.
      const std::string tensor = d["tensor"].get<std::string>();
      const int64_t rows = shape[0], cols = shape[1];
      auto same = [&](const iris::PackedWeight& p, int64_t r0, int64_t c0, const char* what) {
        if (!ck->is_quantized(tensor)) iris::fail(model, ": ", tensor, " not detected as quantized");
        p.validate(tensor);
        const iris::HostTensor got = iris::dequantize(p);
        const auto* g = static_cast<const float*>(got.data);
        for (int64_t r = 0; r < p.rows; ++r)
          for (int64_t c = 0; c < p.cols; ++c)
            if (std::memcmp(&g[r * p.cols + c], &w[(r0 + r) * cols + c0 + c], 4) != 0) {
              std::printf("FAIL %s: packed %s differs at [%lld, %lld]\n", model.c_str(), what,
                          static_cast<long long>(r0 + r), static_cast<long long>(c0 + c));
              ++mismatches;
              return;
            }
      };
      same(ck->read_packed(tensor, shape), 0, 0, "whole");
      same(ck->read_packed(tensor, shape, {0, 5, rows - 12}), 5, 0, "rows [5, -7)");
      same(ck->read_packed(tensor, shape, {1, 37, cols / 2 - 3}), 0, 37, "columns from 37");
      same(ck->read_packed(tensor, shape, {1, 64, cols - 64}), 0, 64, "columns from 64");
      const iris::PackedWeight cut = ck->read_packed(tensor, shape, {1, 3, cols - 10});
      same(cut.slice_cols(7, cut.cols - 20), 0, 10, "columns of columns");
      iris::PackedWeight fused = ck->read_packed(tensor, shape, {0, 0, 3});
      fused.append_rows(ck->read_packed(tensor, shape, {0, 3, rows - 3}), tensor);
      same(fused, 0, 0, "fused rows");
      same(fused.slice_rows(2, rows - 4), 2, 0, "rows of fused");
      // Held bytes of the loaded model, dequantized vs packed.
      const iris::ModelConfig cfg = iris::ModelConfig::from_dir(dir + "/" + model);
      const double linear = static_cast<double>(cfg.num_layers) *
          (static_cast<double>(cfg.hidden_size) * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) +
           3.0 * cfg.hidden_size * cfg.intermediate_size);
      const bool fp8 = ck->quantization()->format == iris::QuantFormat::kFp8;
      // Bytes per packed weight, scales included. With desc_act every column shard uses
      // nearly every group (g_idx scatters them), so a row-parallel shard of these 320-column
      // layers (groups of 32) keeps all 10 groups' scales for its 160 columns.
      const double held_max = fp8 ? 1.1 : ck->quantization()->desc_act ? 0.8 : 0.7;
      for (const int world : {1, 2}) {
        size_t dense = 0, packed = 0;
        for (int rank = 0; rank < world; ++rank) {
          for (const bool keep : {false, true}) {
            auto backend = iris::make_cpu_backend(1, iris::DType::F32, keep);
            auto m = iris::load_model(*ck, cfg, *backend, iris::ParallelConfig{rank, world, false});
            (keep ? packed : dense) += m->weight_bytes();
          }
        }
        const double saved = static_cast<double>(dense) - static_cast<double>(packed);
        if (saved < linear * (4.0 - held_max)) {
          std::printf("FAIL %s: TP %d holds %zu bytes packed vs %zu dequantized; %.0f linear weights "
                      "should save at least %.0f\n", model.c_str(), world, packed, dense, linear,
                      linear * (4.0 - held_max));
          ++mismatches;
        } else {
          std::printf("     %s TP %d: %zu bytes packed, %zu dequantized (linear layers %.2f bytes/weight)\n",
                      model.c_str(), world, packed, dense, 4.0 - saved / linear);
        }
      }
      if (mismatches || !hash_ok || bits.empty()) {
        ++failed;
      } else {
        std::printf("ok   %s: %s %s bit-identical (%s)\n", model.c_str(),
                    d["tensor"].get<std::string>().c_str(), iris::shape_str(shape).c_str(),
                    ck->quantization()->describe().c_str());
        ++passed;
      }
    } catch (const std::exception& e) {
      std::printf("FAIL %s: %s\n", model.c_str(), e.what());
      ++failed;
    }
  }
  // Quantized mixture-of-experts models: every expert's projections are packed too, on one
  // rank, sharded over two, and placed whole with expert parallelism (the float router and
  // embeddings are under a tenth of these models' weights, so the held bytes fall below
  // 0.45x; dequantized experts would keep them above 0.9x).
  std::set<std::string> moe_models;
  for (const auto& c : fx["cases"]) {
    const std::string name = c["model"].get<std::string>();
    if (name.find("moe") != std::string::npos || name.find("mixtral") != std::string::npos)
      moe_models.insert(name);
  }
  for (const std::string& model : moe_models) {
    try {
      auto ck = iris::Checkpoint::open(dir + "/" + model);
      const iris::ModelConfig cfg = iris::ModelConfig::from_dir(dir + "/" + model);
      for (const auto& [world, ep] : {std::pair{1, false}, std::pair{2, false}, std::pair{2, true}}) {
        size_t dense = 0, packed = 0;
        for (int rank = 0; rank < world; ++rank)
          for (const bool keep : {false, true}) {
            auto backend = iris::make_cpu_backend(1, iris::DType::F32, keep);
            auto m = iris::load_model(*ck, cfg, *backend, iris::ParallelConfig{rank, world, ep});
            (keep ? packed : dense) += m->weight_bytes();
          }
        const double ratio = static_cast<double>(packed) / static_cast<double>(dense);
        std::printf("%s %s TP %d%s: %zu bytes packed, %zu dequantized (%.2fx)\n",
                    ratio < 0.45 ? "ok  " : "FAIL", model.c_str(), world, ep ? " EP" : "", packed,
                    dense, ratio);
        (ratio < 0.45 ? passed : failed) += 1;
      }
    } catch (const std::exception& e) {
      std::printf("FAIL %s: %s\n", model.c_str(), e.what());
      ++failed;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}
