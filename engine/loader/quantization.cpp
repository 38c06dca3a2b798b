// quantization_config parsing and exact dequantization of FP8, AWQ, GPTQ and
// compressed-tensors pack-quantized weights (see quantization.h for the formats).
#include "engine/loader/quantization.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "engine/core/check.h"

namespace iris {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// quantization_config

class QReader {
 public:
  QReader(const json& j, std::string where, const std::string& source)
      : j_(j), where_(std::move(where)), source_(source) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  std::string field(const char* key) const { return where_ + "." + key; }

  [[noreturn]] void bad(const char* key, const std::string& why) const {
    fail(source_, ": ", field(key), " ", why);
  }
  std::string get_string(const char* key, std::optional<std::string> def = std::nullopt) const {
    if (!has(key)) {
      if (def) return *def;
      fail(source_, ": missing ", field(key));
    }
    if (!j_[key].is_string()) bad(key, "must be a string");
    return j_[key].get<std::string>();
  }
  int64_t get_int(const char* key, std::optional<int64_t> def = std::nullopt) const {
    if (!has(key)) {
      if (def) return *def;
      fail(source_, ": missing ", field(key));
    }
    if (!j_[key].is_number_integer()) bad(key, "must be an integer");
    return j_[key].get<int64_t>();
  }
  bool get_bool(const char* key, bool def) const {
    if (!has(key)) return def;
    if (!j_[key].is_boolean()) bad(key, "must be true or false");
    return j_[key].get<bool>();
  }
  // [rows, cols] block sizes, both positive.
  std::pair<int64_t, int64_t> get_block(const char* key) const {
    const json& v = j_[key];
    if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer() ||
        v[0].get<int64_t>() <= 0 || v[1].get<int64_t>() <= 0)
      bad(key, "must be two positive integers, got " + v.dump());
    return {v[0].get<int64_t>(), v[1].get<int64_t>()};
  }
  const json& at(const char* key) const { return j_[key]; }

 private:
  const json& j_;
  std::string where_;
  const std::string& source_;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void parse_fp8(const QReader& r, QuantizationConfig& q) {
  q.format = QuantFormat::kFp8;
  q.bits = 8;
  const std::string fmt = r.get_string("fmt", "e4m3");
  if (fmt != "e4m3") r.bad("fmt", "'" + fmt + "' is not supported (only e4m3)");
  const std::string act = r.get_string("activation_scheme", "dynamic");
  if (act == "dynamic") {
    q.dynamic_activations = true;
  } else if (act == "static") {
    q.static_input_scale = true;
  } else {
    r.bad("activation_scheme", "'" + act + "' (expected dynamic or static)");
  }
  if (r.has("weight_block_size")) {
    // DeepSeek-V3 / Qwen3-FP8: one fp32 scale per block, stored as "weight_scale_inv"
    // (the dequantization multiplier, despite its name).
    std::tie(q.block_out, q.block_in) = r.get_block("weight_block_size");
    q.strategy = ScaleStrategy::kBlock;
    q.scale_name = "weight_scale_inv";
    if (q.static_input_scale)
      r.bad("activation_scheme", "'static' with weight_block_size is not a published format");
  } else {
    q.strategy = ScaleStrategy::kTensor;  // per-tensor "weight_scale" (vLLM-style FP8)
  }
}

void parse_fbgemm_fp8(const QReader&, QuantizationConfig& q) {
  q.format = QuantFormat::kFp8;
  q.bits = 8;
  q.strategy = ScaleStrategy::kChannel;  // weight_scale [out, 1]
  q.dynamic_activations = true;          // per-token scales, bounded by activation_scale_ub
}

void parse_awq(const QReader& r, QuantizationConfig& q) {
  q.format = QuantFormat::kAwq;
  q.bits = static_cast<int>(r.get_int("bits", r.has("w_bit") ? r.get_int("w_bit") : 4));
  if (q.bits != 4) r.bad("bits", "= " + std::to_string(q.bits) + " is not supported (only 4)");
  q.group_size = r.get_int("group_size", r.has("q_group_size") ? r.get_int("q_group_size") : 128);
  if (q.group_size <= 0 && q.group_size != -1)
    r.bad("group_size", "= " + std::to_string(q.group_size) + " must be positive or -1");
  q.strategy = ScaleStrategy::kGroup;
  if (!r.get_bool("zero_point", true)) r.bad("zero_point", "false is not supported (AWQ GEMM stores qzeros)");
  q.symmetric = false;
  const std::string version = lower(r.get_string("version", "gemm"));
  if (version != "gemm")
    r.bad("version", "'" + version + "' is not supported (only the GEMM packing)");
}

void parse_gptq(const QReader& r, QuantizationConfig& q) {
  q.format = QuantFormat::kGptq;
  q.bits = static_cast<int>(r.get_int("bits"));
  if (q.bits != 4) r.bad("bits", "= " + std::to_string(q.bits) + " is not supported (only 4)");
  q.group_size = r.get_int("group_size", 128);
  if (q.group_size <= 0 && q.group_size != -1)
    r.bad("group_size", "= " + std::to_string(q.group_size) + " must be positive or -1");
  q.strategy = ScaleStrategy::kGroup;
  q.desc_act = r.get_bool("desc_act", false);
  q.symmetric = r.get_bool("sym", true);
  const char* key = r.has("checkpoint_format") ? "checkpoint_format" : "format";
  const std::string fmt = r.get_string(key, "gptq");
  if (fmt == "gptq") {
    q.gptq_zeros_minus_one = true;
  } else if (fmt == "gptq_v2") {
    q.gptq_zeros_minus_one = false;
  } else {
    r.bad(key, "'" + fmt + "' is not supported (gptq or gptq_v2)");
  }
}

// compressed-tensors' kv_cache_scheme: FP8 E4M3 K and V with one static scale per layer and
// tensor (the self_attn.k_scale / v_scale tensors the model reads for --kv-cache-dtype fp8).
// Anything else (integer, per-channel/per-head or dynamic KV scales) is refused by field.
bool parse_kv_cache_scheme(const QReader& r, const std::string& source) {
  if (!r.has("kv_cache_scheme")) return false;
  if (!r.at("kv_cache_scheme").is_object())
    fail(source, ": ", r.field("kv_cache_scheme"), " must be an object or null");
  QReader kv(r.at("kv_cache_scheme"), r.field("kv_cache_scheme"), source);
  const std::string type = kv.get_string("type", "int");
  const int64_t bits = kv.get_int("num_bits");
  if (type != "float" || bits != 8)
    kv.bad("type", "'" + type + "' with " + std::to_string(bits) +
                       " bits is not supported (only 8-bit float: FP8 E4M3 KV cache)");
  const std::string strategy = kv.get_string("strategy", "tensor");
  if (strategy != "tensor")
    kv.bad("strategy", "'" + strategy + "' is not supported (one scale per layer: tensor)");
  if (kv.get_bool("dynamic", false)) kv.bad("dynamic", "true is not supported (static k/v scales)");
  if (!kv.get_bool("symmetric", true)) kv.bad("symmetric", "false is not supported for FP8");
  return true;
}

void parse_compressed_tensors(const QReader& r, QuantizationConfig& q, const std::string& source) {
  if (r.has("sparsity_config") && !r.at("sparsity_config").empty() &&
      !(r.at("sparsity_config").is_object() && r.at("sparsity_config").value("format", "") == "dense"))
    r.bad("sparsity_config", "is not supported (sparse checkpoints)");
  // "frozen" / "calibration" checkpoints hold fake-quantized float weights beside their
  // scales; only the compressed form is a storage format.
  const std::string status = r.get_string("quantization_status", "compressed");
  if (status != "compressed")
    r.bad("quantization_status", "'" + status + "' is not supported (only compressed checkpoints)");
  q.kv_cache_fp8 = parse_kv_cache_scheme(r, source);
  if (!r.has("config_groups") || !r.at("config_groups").is_object() || r.at("config_groups").empty())
    fail(source, ": ", r.field("config_groups"), " must be a non-empty object");
  // The top-level format may be "mixed" when each group names its own.
  std::string format = r.get_string("format", "");
  if (format == "mixed") format.clear();
  const json* weights = nullptr;
  json acts_value;  // copied: a group may omit input_activations (null)
  const json* acts = &acts_value;
  std::string first_group;
  for (auto it = r.at("config_groups").begin(); it != r.at("config_groups").end(); ++it) {
    const std::string g = r.field("config_groups") + "." + it.key();
    if (!it.value().is_object()) fail(source, ": ", g, " must be an object");
    if (!it.value().contains("weights") || !it.value()["weights"].is_object())
      fail(source, ": ", g, ".weights must be an object");
    const json& w = it.value()["weights"];
    const json a = it.value().contains("input_activations") ? it.value()["input_activations"]
                                                              : json();
    if (it.value().contains("format") && it.value()["format"].is_string()) {
      const std::string f = it.value()["format"].get<std::string>();
      if (!format.empty() && f != format)
        fail(source, ": ", g, ".format '", f, "' differs from the checkpoint's '", format,
             "' (mixed formats are not supported)");
      format = f;
    }
    if (weights) {
      if (w != *weights || a != *acts)
        fail(source, ": ", g, " quantizes differently from ", first_group,
             " (one scheme per checkpoint is supported)");
      continue;
    }
    first_group = g;
    weights = &w;
    acts_value = a;
  }
  const std::string where = first_group + ".weights";
  QReader w(*weights, where, source);
  q.bits = static_cast<int>(w.get_int("num_bits"));
  const std::string type = w.get_string("type", "int");
  const std::string strategy = w.get_string("strategy", "tensor");
  q.symmetric = w.get_bool("symmetric", true);
  if (w.get_bool("dynamic", false)) w.bad("dynamic", "true is not supported for weights");
  if (format.empty()) fail(source, ": missing ", r.field("format"));

  if (format == "float-quantized" || (format == "naive-quantized" && type == "float")) {
    q.format = QuantFormat::kFp8;
    if (type != "float" || q.bits != 8)
      fail(source, ": ", where, " is ", type, " with ", q.bits, " bits; ", format,
           " needs 8-bit float (FP8 e4m3)");
    if (!q.symmetric) w.bad("symmetric", "false is not supported for FP8");
    if (strategy == "tensor") {
      q.strategy = ScaleStrategy::kTensor;
    } else if (strategy == "channel") {
      q.strategy = ScaleStrategy::kChannel;
    } else if (strategy == "block") {
      q.strategy = ScaleStrategy::kBlock;
      if (!w.has("block_structure")) fail(source, ": missing ", w.field("block_structure"));
      std::tie(q.block_out, q.block_in) = w.get_block("block_structure");
    } else {
      w.bad("strategy", "'" + strategy + "' is not supported for FP8 (tensor, channel, block)");
    }
    if (!acts->is_null()) {
      if (!acts->is_object()) fail(source, ": ", first_group, ".input_activations must be an object");
      QReader a(*acts, first_group + ".input_activations", source);
      if (a.get_bool("dynamic", false)) {
        q.dynamic_activations = true;
      } else {
        q.static_input_scale = true;
      }
    }
  } else if (format == "pack-quantized") {
    q.format = QuantFormat::kPackQuantized;
    if (type != "int" || q.bits != 4)
      fail(source, ": ", where, " is ", type, " with ", q.bits, " bits; pack-quantized is "
           "supported for 4-bit int weights");
    if (strategy == "group") {
      q.strategy = ScaleStrategy::kGroup;
      q.group_size = w.get_int("group_size");
      if (q.group_size <= 0)
        w.bad("group_size", "= " + std::to_string(q.group_size) + " must be positive");
    } else if (strategy == "channel") {
      q.strategy = ScaleStrategy::kGroup;
      q.group_size = -1;
    } else {
      w.bad("strategy", "'" + strategy + "' is not supported for pack-quantized (group, channel)");
    }
    if (!acts->is_null())
      fail(source, ": ", first_group, ".input_activations is set: only weight-only (W4A16) "
           "pack-quantized checkpoints are supported");
  } else {
    fail(source, ": ", r.field("format"), " '", format, "' is not supported "
         "(float-quantized, pack-quantized)");
  }
}

// ---------------------------------------------------------------------------------------
// Tensor access

struct Module {
  const Checkpoint& ck;
  const QuantizationConfig& q;
  std::string weight;  // "<module>.weight"
  std::string prefix;  // "<module>."

  std::string t(const char* suffix) const { return prefix + suffix; }
  bool has(const char* suffix) const { return ck.has(t(suffix)); }

  [[noreturn]] void missing(const std::string& tensor, const std::string& why) const {
    fail(ck.dir(), ": missing tensor '", tensor, "' (", why, ")");
  }
  const SafetensorInfo& need(const std::string& tensor, const std::string& why) const {
    if (!ck.has(tensor)) missing(tensor, why);
    return ck.info(tensor);
  }
  void check_shape(const SafetensorInfo& info, const std::vector<int64_t>& want,
                   const std::string& implied_by) const {
    if (info.shape != want)
      fail(ck.dir(), ": tensor '", info.name, "' has shape ", shape_str(info.shape), " but ",
           implied_by, " implies ", shape_str(want));
  }
  void check_dtype(const SafetensorInfo& info, std::initializer_list<DType> allowed) const {
    for (DType d : allowed)
      if (info.dtype == d) return;
    std::string names;
    for (DType d : allowed) names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
    fail(ck.dir(), ": tensor '", info.name, "' has dtype ", dtype_name(info.dtype), "; ",
         q.quant_method, " needs ", names);
  }
  // A float tensor (F32/F16/BF16) as fp32; every value finite.
  std::vector<float> floats(const SafetensorInfo& info) const {
    check_dtype(info, {DType::F32, DType::F16, DType::BF16});
    std::vector<float> v(static_cast<size_t>(info.numel()));
    convert_to_f32(ck.bytes(info.name), info.dtype, v.data(), v.size());
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i]))
        fail(ck.dir(), ": tensor '", info.name, "' holds a non-finite value (", v[i],
             ") at element ", i);
    return v;
  }
  // An I32 tensor (read through memcpy: the mapping need not be aligned).
  std::vector<int32_t> ints(const SafetensorInfo& info) const {
    check_dtype(info, {DType::I32});
    std::vector<int32_t> v(static_cast<size_t>(info.numel()));
    std::memcpy(v.data(), ck.bytes(info.name), v.size() * 4);
    return v;
  }
  std::string config_says(const std::string& detail) const {
    return "quantization_config (" + q.quant_method + ", " + detail + ")";
  }
};

HostTensor f32_tensor(const std::vector<int64_t>& shape) {
  HostTensor h;
  h.dtype = DType::F32;
  h.shape = shape;
  h.owned.resize(static_cast<size_t>(h.numel()) * 4);
  h.data = h.owned.data();
  return h;
}

float* f32_data(HostTensor& h) { return reinterpret_cast<float*>(h.owned.data()); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

uint32_t nibble(int32_t word, int k) {
  return (static_cast<uint32_t>(word) >> (4 * k)) & 0xFu;
}

// Input columns per group (a group size of -1 means the whole row) and the group count.
std::pair<int64_t, int64_t> groups_of(const Module& m, int64_t in) {
  const int64_t g = m.q.group_size == -1 ? in : m.q.group_size;
  return {g, ceil_div(in, g)};
}

PackedWeight packed_layout(PackedWeight::Kind kind, int64_t rows, int64_t cols, int64_t group_size,
                           int64_t groups) {
  PackedWeight p;
  p.kind = kind;
  p.rows = rows;
  p.cols = cols;
  p.group_size = group_size;
  p.groups_per_row = groups;
  p.codes.assign(static_cast<size_t>(rows * p.row_bytes()), 0);
  p.scales.resize(static_cast<size_t>(rows * groups));
  if (kind == PackedWeight::Kind::kInt4) p.zeros.resize(p.scales.size());
  p.segments.push_back({rows, {}});
  return p;
}

void put_nibble(PackedWeight& p, int64_t r, int64_t c, uint32_t v) {
  p.codes[static_cast<size_t>(r * p.row_bytes() + c / 2)] |= static_cast<uint8_t>(v << (4 * (c % 2)));
}

// A group index per input column, or empty when it is the contiguous c / g anyway.
std::vector<int32_t> column_groups(std::vector<int32_t> gidx, int64_t g) {
  for (size_t i = 0; i < gidx.size(); ++i)
    if (gidx[i] != static_cast<int32_t>(static_cast<int64_t>(i) / g)) return gidx;
  return {};
}

PackedWeight pack_fp8(const Module& m, const std::vector<int64_t>& expected) {
  const int64_t out = expected[0], in = expected[1];
  const SafetensorInfo& w = m.need(m.weight, m.q.quant_method + " weight");
  if (w.dtype != DType::F8_E4M3)
    fail(m.ck.dir(), ": tensor '", w.name, "' has dtype ", dtype_name(w.dtype), " but ",
         m.q.quant_method, " stores weights as F8_E4M3 (module has '", m.t(m.q.scale_name.c_str()),
         "')");
  m.check_shape(w, expected, "config.json");

  const std::string scale_name = m.t(m.q.scale_name.c_str());
  const SafetensorInfo& si = m.need(scale_name, "scale of F8_E4M3 '" + w.name + "'");
  const std::vector<float> s = m.floats(si);
  // Scale index of weight element (o, i) as (o / rows_per) * cols + i / cols_per.
  int64_t rows_per = out, cols_per = in, cols = 1;
  switch (m.q.strategy) {
    case ScaleStrategy::kTensor:
      if (si.numel() != 1 || si.shape.size() > 2)
        fail(m.ck.dir(), ": tensor '", si.name, "' has shape ", shape_str(si.shape), " but ",
             m.config_says("per-tensor scale"), " implies one element");
      break;
    case ScaleStrategy::kChannel:
      if (!(si.shape == std::vector<int64_t>{out, 1} || si.shape == std::vector<int64_t>{out}))
        m.check_shape(si, {out, 1}, m.config_says("per-channel scale"));
      rows_per = 1;
      break;
    case ScaleStrategy::kBlock: {
      rows_per = m.q.block_out;
      cols_per = m.q.block_in;
      cols = ceil_div(in, cols_per);
      m.check_shape(si, {ceil_div(out, rows_per), cols},
                    m.config_says("blocks of " + std::to_string(rows_per) + "x" +
                                  std::to_string(cols_per)));
      break;
    }
    case ScaleStrategy::kGroup:
      fail("FP8 with group scales");
  }
  if (m.q.static_input_scale) {
    // Activations stay unquantized here, but a static-activation checkpoint must carry them.
    const SafetensorInfo& ai =
        m.need(m.t("input_scale"), "static activation scale (activation_scheme static)");
    for (float v : m.floats(ai))
      if (!(v > 0)) fail(m.ck.dir(), ": tensor '", ai.name, "' holds a non-positive scale ", v);
  }

  // One scale group of cols_per columns per row; a block's scale is repeated on its rows.
  PackedWeight p = packed_layout(PackedWeight::Kind::kFp8, out, in, cols_per, cols);
  p.dynamic_activations = m.q.dynamic_activations;
  const uint8_t* codes = m.ck.bytes(w.name);
  for (int64_t o = 0; o < out; ++o) {
    const float* srow = s.data() + (m.q.strategy == ScaleStrategy::kTensor ? 0 : (o / rows_per) * cols);
    std::copy_n(srow, cols, p.scales.begin() + o * cols);
    for (int64_t i = 0; i < in; ++i) {
      const uint8_t c = codes[o * in + i];
      if ((c & 0x7F) == 0x7F)
        fail(m.ck.dir(), ": tensor '", w.name, "' holds an e4m3 NaN (0x", std::hex,
             static_cast<int>(c), std::dec, ") at [", o, ", ", i, "]");
      p.codes[static_cast<size_t>(o * in + i)] = c;
    }
  }
  return p;
}

// AutoAWQ GEMM packing: the 8 nibbles of qweight[r][c] (nibble k = bits 4k..4k+3) hold
// output columns 8c + kAwqOrder[k]; qzeros packs the zero points the same way.
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

PackedWeight pack_awq(const Module& m, const std::vector<int64_t>& expected) {
  const int64_t out = expected[0], in = expected[1];
  const auto [g, groups] = groups_of(m, in);
  if (in % g != 0)
    fail(m.ck.dir(), ": '", m.weight, "' has ", in, " input features, not a multiple of ",
         m.q.source, " quantization_config.group_size ", m.q.group_size);
  if (out % 8 != 0)
    fail(m.ck.dir(), ": '", m.weight, "' has ", out, " output features; AWQ packs 8 per int32");
  const std::string what = m.config_says("group_size " + std::to_string(m.q.group_size));
  const SafetensorInfo& qw = m.need(m.t("qweight"), "AWQ packed weight");
  const SafetensorInfo& qz = m.need(m.t("qzeros"), "AWQ zero points");
  const SafetensorInfo& sc = m.need(m.t("scales"), "AWQ group scales");
  m.check_shape(qw, {in, out / 8}, "config.json (AWQ: [in, out / 8])");
  m.check_shape(qz, {groups, out / 8}, what);
  m.check_shape(sc, {groups, out}, what);
  const std::vector<int32_t> w = m.ints(qw);
  const std::vector<int32_t> z = m.ints(qz);
  const std::vector<float> s = m.floats(sc);

  // Element (col, r) = (nibble - zero nibble) * scale, stored transposed: rows are outputs.
  PackedWeight p = packed_layout(PackedWeight::Kind::kInt4, out, in, g, groups);
  const int64_t packed = out / 8;
  for (int64_t r = 0; r < in; ++r) {
    const int64_t grp = r / g;
    for (int64_t c = 0; c < packed; ++c) {
      const int32_t word = w[r * packed + c];
      const int32_t zword = z[grp * packed + c];
      for (int k = 0; k < 8; ++k) {
        const int64_t col = 8 * c + kAwqOrder[k];
        put_nibble(p, col, r, nibble(word, k));
        if (r % g == 0) {
          p.zeros[static_cast<size_t>(col * groups + grp)] = static_cast<int8_t>(nibble(zword, k));
          p.scales[static_cast<size_t>(col * groups + grp)] = s[grp * out + col];
        }
      }
    }
  }
  return p;
}

PackedWeight pack_gptq(const Module& m, const std::vector<int64_t>& expected) {
  const int64_t out = expected[0], in = expected[1];
  const auto [g, groups] = groups_of(m, in);
  if (in % 8 != 0)
    fail(m.ck.dir(), ": '", m.weight, "' has ", in, " input features; GPTQ packs 8 per int32");
  if (out % 8 != 0)
    fail(m.ck.dir(), ": '", m.weight, "' has ", out, " output features; GPTQ packs 8 zero "
         "points per int32");
  const std::string what = m.config_says("group_size " + std::to_string(m.q.group_size));
  const SafetensorInfo& qw = m.need(m.t("qweight"), "GPTQ packed weight");
  const SafetensorInfo& qz = m.need(m.t("qzeros"), "GPTQ zero points");
  const SafetensorInfo& sc = m.need(m.t("scales"), "GPTQ group scales");
  m.check_shape(qw, {in / 8, out}, "config.json (GPTQ: [in / 8, out])");
  m.check_shape(qz, {groups, out / 8}, what);
  m.check_shape(sc, {groups, out}, what);
  const std::vector<int32_t> w = m.ints(qw);
  const std::vector<int32_t> z = m.ints(qz);
  const std::vector<float> s = m.floats(sc);

  // g_idx[i] is the group of input column i; without desc_act it is i / group_size.
  std::vector<int32_t> gidx;
  if (m.has("g_idx")) {
    const SafetensorInfo& gi = m.ck.info(m.t("g_idx"));
    m.check_shape(gi, {in}, "config.json (one group index per input feature)");
    gidx = m.ints(gi);
    for (int64_t i = 0; i < in; ++i)
      if (gidx[i] < 0 || gidx[i] >= groups)
        fail(m.ck.dir(), ": tensor '", gi.name, "' maps input ", i, " to group ", gidx[i],
             " outside the ", groups, " groups of ", m.t("scales"));
  } else if (m.q.desc_act) {
    m.missing(m.t("g_idx"), "quantization_config.desc_act is true");
  } else {
    gidx.resize(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) gidx[i] = static_cast<int32_t>(i / g);
  }

  // Zero points: the "gptq" (v1) format stores zero - 1, "gptq_v2" the zero itself; a
  // symmetric checkpoint's zero is 2^(bits - 1) = 8 throughout.
  const int zero_bias = m.q.gptq_zeros_minus_one ? 1 : 0;
  std::vector<int> zero(static_cast<size_t>(groups * out));
  for (int64_t gr = 0; gr < groups; ++gr)
    for (int64_t o = 0; o < out; ++o) {
      const int zv = static_cast<int>(nibble(z[gr * (out / 8) + o / 8], static_cast<int>(o % 8))) + zero_bias;
      if (m.q.symmetric && zv != 8)
        fail(m.ck.dir(), ": tensor '", qz.name, "' gives zero point ", zv, " at [", gr, ", ", o,
             "] but quantization_config.sym is true (expected 8; does checkpoint_format '",
             m.q.gptq_zeros_minus_one ? "gptq" : "gptq_v2", "' match the file?)");
      zero[gr * out + o] = zv;
    }

  // Element (o, i) = (nibble - zero[g_idx[i]]) * scale[g_idx[i]].
  PackedWeight p = packed_layout(PackedWeight::Kind::kInt4, out, in, g, groups);
  p.segments.back().gidx = column_groups(gidx, g);
  for (int64_t i = 0; i < in; ++i) {
    const int32_t* row = w.data() + (i / 8) * out;
    const int k = static_cast<int>(i % 8);
    for (int64_t o = 0; o < out; ++o) put_nibble(p, o, i, nibble(row[o], k));
  }
  for (int64_t o = 0; o < out; ++o)
    for (int64_t gr = 0; gr < groups; ++gr) {
      p.zeros[static_cast<size_t>(o * groups + gr)] = static_cast<int8_t>(zero[gr * out + o]);
      p.scales[static_cast<size_t>(o * groups + gr)] = s[gr * out + o];
    }
  return p;
}

PackedWeight pack_pack_quantized(const Module& m, const std::vector<int64_t>& expected) {
  const int64_t out = expected[0], in = expected[1];
  const auto [g, groups] = groups_of(m, in);
  const std::string what = m.config_says(
      m.q.group_size == -1 ? std::string("channel") : "group_size " + std::to_string(m.q.group_size));
  const SafetensorInfo& wp = m.need(m.t("weight_packed"), "pack-quantized weight");
  const SafetensorInfo& ws = m.need(m.t("weight_shape"), "pack-quantized original shape");
  const SafetensorInfo& sc = m.need(m.t("weight_scale"), "pack-quantized scales");
  m.check_dtype(ws, {DType::I32, DType::I64});
  m.check_shape(ws, {2}, "compressed-tensors ([out, in])");
  int64_t shape[2];
  for (int d = 0; d < 2; ++d) {
    if (ws.dtype == DType::I64) {
      std::memcpy(&shape[d], m.ck.bytes(ws.name) + 8 * d, 8);
    } else {
      int32_t v;
      std::memcpy(&v, m.ck.bytes(ws.name) + 4 * d, 4);
      shape[d] = v;
    }
  }
  if (shape[0] != out || shape[1] != in)
    fail(m.ck.dir(), ": tensor '", ws.name, "' holds [", shape[0], ", ", shape[1],
         "] but config.json implies ", shape_str(expected));
  const int64_t packed = ceil_div(in, 8);
  m.check_shape(wp, {out, packed}, "config.json (pack-quantized: [out, ceil(in / 8)])");
  m.check_shape(sc, {out, groups}, what);
  const std::vector<int32_t> w = m.ints(wp);
  const std::vector<float> s = m.floats(sc);

  std::vector<int32_t> gidx(static_cast<size_t>(in));
  if (m.has("weight_g_idx")) {
    const SafetensorInfo& gi = m.ck.info(m.t("weight_g_idx"));
    m.check_shape(gi, {in}, "config.json (one group index per input feature)");
    gidx = m.ints(gi);
    for (int64_t i = 0; i < in; ++i)
      if (gidx[i] < 0 || gidx[i] >= groups)
        fail(m.ck.dir(), ": tensor '", gi.name, "' maps input ", i, " to group ", gidx[i],
             " outside the ", groups, " groups of ", sc.name);
  } else {
    for (int64_t i = 0; i < in; ++i) gidx[i] = static_cast<int32_t>(i / g);
  }
  // Zero points (asymmetric only) are packed 8 per int32 along the output dimension.
  std::vector<int> zero(static_cast<size_t>(out * groups), 0);
  if (!m.q.symmetric) {
    const SafetensorInfo& zi = m.need(m.t("weight_zero_point"), "quantization_config "
                                      "weights.symmetric is false");
    m.check_shape(zi, {ceil_div(out, 8), groups}, what + " packed 8 rows per int32");
    const std::vector<int32_t> zp = m.ints(zi);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t gr = 0; gr < groups; ++gr)
        zero[o * groups + gr] = static_cast<int>(nibble(zp[(o / 8) * groups + gr], static_cast<int>(o % 8))) - 8;
  } else if (m.has("weight_zero_point")) {
    fail(m.ck.dir(), ": tensor '", m.t("weight_zero_point"), "' is present but quantization_config "
         "weights.symmetric is true");
  }

  // Stored unsigned with an offset of 8: the signed value is nibble - 8, so element (o, i)
  // = (nibble - 8 - zero) * scale = (nibble - (zero + 8)) * scale, the same integer.
  PackedWeight p = packed_layout(PackedWeight::Kind::kInt4, out, in, g, groups);
  p.segments.back().gidx = column_groups(gidx, g);
  for (int64_t o = 0; o < out; ++o) {
    const int32_t* row = w.data() + o * packed;
    for (int64_t i = 0; i < in; ++i)
      put_nibble(p, o, i, nibble(row[i / 8], static_cast<int>(i % 8)));
    for (int64_t gr = 0; gr < groups; ++gr) {
      p.zeros[static_cast<size_t>(o * groups + gr)] = static_cast<int8_t>(zero[o * groups + gr] + 8);
      p.scales[static_cast<size_t>(o * groups + gr)] = s[o * groups + gr];
    }
  }
  return p;
}

const char* format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::kFp8: return "FP8 (F8_E4M3 weight + scale)";
    case QuantFormat::kAwq: return "AWQ (qweight/qzeros/scales)";
    case QuantFormat::kGptq: return "GPTQ (qweight/qzeros/scales/g_idx)";
    case QuantFormat::kPackQuantized: return "pack-quantized (weight_packed/weight_scale)";
  }
  return "?";
}

}  // namespace

std::string QuantizationConfig::describe() const {
  std::ostringstream s;
  s << quant_method << ": " << format_name(format)
    << (format == QuantFormat::kFp8 ? ", FP8 e4m3 weights" : ", " + std::to_string(bits) + "-bit weights");
  switch (strategy) {
    case ScaleStrategy::kTensor: s << ", per-tensor scales"; break;
    case ScaleStrategy::kChannel: s << ", per-channel scales"; break;
    case ScaleStrategy::kBlock: s << ", " << block_out << "x" << block_in << " block scales"; break;
    case ScaleStrategy::kGroup:
      if (group_size == -1) {
        s << ", per-channel scales";
      } else {
        s << ", group size " << group_size;
      }
      break;
  }
  if (desc_act) s << ", desc_act";
  if (kv_cache_fp8) s << ", FP8 KV-cache scales (used with --kv-cache-dtype fp8)";
  s << "; exact dequantization (at load, or per tile when kept packed), activations unquantized";
  return s.str();
}

std::optional<QuantizationConfig> parse_quantization_config(const json& config,
                                                            const std::string& source) {
  if (!config.is_object() || !config.contains("quantization_config") ||
      config["quantization_config"].is_null())
    return std::nullopt;
  const json& j = config["quantization_config"];
  if (!j.is_object()) fail(source, ": \"quantization_config\" must be an object");
  QReader r(j, "quantization_config", source);
  QuantizationConfig q;
  q.source = source;
  q.quant_method = r.get_string("quant_method");
  if (q.quant_method == "fp8") {
    parse_fp8(r, q);
  } else if (q.quant_method == "fbgemm_fp8") {
    parse_fbgemm_fp8(r, q);
  } else if (q.quant_method == "awq") {
    parse_awq(r, q);
  } else if (q.quant_method == "gptq") {
    parse_gptq(r, q);
  } else if (q.quant_method == "compressed-tensors") {
    // A KV-cache-only checkpoint (no weight groups): float weights, FP8 KV scales.
    const bool no_groups = !r.has("config_groups") ||
                           (r.at("config_groups").is_object() && r.at("config_groups").empty());
    if (no_groups && parse_kv_cache_scheme(r, source)) return std::nullopt;
    parse_compressed_tensors(r, q, source);
  } else {
    fail(source, ": quantization_config.quant_method '", q.quant_method, "' is not supported "
         "(fp8, fbgemm_fp8, compressed-tensors, awq, gptq)");
  }
  return q;
}

bool stores_quantized_weight(const Checkpoint& ckpt, const std::string& name) {
  static const std::string kSuffix = ".weight";
  if (name.size() <= kSuffix.size() ||
      name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
    return false;
  const std::string prefix = name.substr(0, name.size() - std::string("weight").size());
  if (ckpt.has(name) && ckpt.info(name).dtype == DType::F8_E4M3) return true;
  for (const char* s : {"qweight", "qzeros", "scales", "g_idx", "weight_packed", "weight_scale",
                        "weight_scale_inv", "weight_zero_point", "weight_shape"})
    if (ckpt.has(prefix + s)) return true;
  return false;
}

PackedWeight pack_weight(const Checkpoint& ckpt, const QuantizationConfig& q,
                         const std::string& name, const std::vector<int64_t>& expected) {
  const std::string prefix = name.substr(0, name.size() - std::string("weight").size());
  Module m{ckpt, q, name, prefix};
  if (expected.size() != 2)
    fail(ckpt.dir(), ": tensor '", name, "' is stored quantized but the model expects shape ",
         shape_str(expected), " (only 2-D linear weights are quantized)");
  // The tensors present must be the layout quant_method describes.
  QuantFormat found = q.format;
  std::string evidence;
  if (m.has("qweight")) {
    evidence = m.t("qweight");
    if (q.format != QuantFormat::kAwq && q.format != QuantFormat::kGptq) found = QuantFormat::kAwq;
  } else if (m.has("weight_packed")) {
    evidence = m.t("weight_packed");
    found = QuantFormat::kPackQuantized;
  } else if (ckpt.has(name) && ckpt.info(name).dtype == DType::F8_E4M3) {
    evidence = name;
    found = QuantFormat::kFp8;
  }
  if (found != q.format)
    fail(ckpt.dir(), ": tensor '", evidence, "' is stored as ", format_name(found), " but ",
         q.source, " quantization_config.quant_method '", q.quant_method, "' means ",
         format_name(q.format));
  PackedWeight p;
  switch (q.format) {
    case QuantFormat::kFp8: p = pack_fp8(m, expected); break;
    case QuantFormat::kAwq: p = pack_awq(m, expected); break;
    case QuantFormat::kGptq: p = pack_gptq(m, expected); break;
    case QuantFormat::kPackQuantized: p = pack_pack_quantized(m, expected); break;
  }
  p.validate(name);
  return p;
}

HostTensor dequantize(const PackedWeight& p) {
  HostTensor h = f32_tensor({p.rows, p.cols});
  p.dequantize_rows(0, p.rows, f32_data(h));
  return h;
}

HostTensor dequantize_weight(const Checkpoint& ckpt, const QuantizationConfig& q,
                             const std::string& name, const std::vector<int64_t>& expected) {
  return dequantize(pack_weight(ckpt, q, name, expected));
}

}  // namespace iris
