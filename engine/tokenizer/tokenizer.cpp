// Tokenizer: loads tokenizer.json (+ tokenizer_config.json) into the pipeline stages and runs
// them: added-token split -> normalize -> added-token split on normalized text -> pre-tokenize
// -> model -> post-process. Decoding maps ids to token strings and runs the decoder chain.
#include "engine/tokenizer/tokenizer.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "engine/core/check.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/unicode.h"

namespace iris {

using tok::json;

struct Tokenizer::Impl {
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Model> model;
  std::unique_ptr<tok::PostProcessor> post_processor;
  std::unique_ptr<tok::Decoder> decoder;
  tok::AddedVocabulary added;
  // Model ids whose token text is a special added token: HF's skip_special_tokens skips by text.
  std::unordered_set<int32_t> model_ids_spelling_special;
  std::string bos, eos, pad, unk;
  bool byte_level_decoder = false;  // token text is in the GPT-2 byte alphabet
  bool clean_up_tokenization_spaces = false;  // tokenizer_config.json; transformers' decode

};

namespace {

json parse_json(const std::string& text, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(what, " is not valid JSON: ", e.what());
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IRIS_CHECK(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

tok::AddedToken parse_added_token(const json& j, std::optional<int32_t> id, const char* where) {
  IRIS_CHECK(j.is_object()) << where << ": added token must be an object, got " << j.dump();
  tok::AddedToken t;
  if (id) {
    t.id = *id;
  } else {
    const json& jid = tok::require(j, "id", where);
    IRIS_CHECK(jid.is_number_integer() && jid.get<int64_t>() >= 0)
        << where << ": added token id must be a non-negative integer, got " << jid.dump();
    t.id = jid.get<int32_t>();
  }
  t.content = tok::get_string(j, "content", where);
  IRIS_CHECK(!t.content.empty()) << where << ": added token " << t.id << " has empty content";
  t.single_word = tok::get_bool(j, "single_word", false);
  t.lstrip = tok::get_bool(j, "lstrip", false);
  t.rstrip = tok::get_bool(j, "rstrip", false);
  t.special = tok::get_bool(j, "special", false);
  t.normalized = tok::get_bool(j, "normalized", !t.special);
  return t;
}

// tokenizer_config.json token fields are a string, {"content": ...} or null.
std::string config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  fail("tokenizer_config.json: '", key, "' must be a string or {\"content\": ...}");
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_dir(const std::string& dir) {
  std::string tj = read_file(dir + "/tokenizer.json");
  std::string cfg;
  if (std::ifstream(dir + "/tokenizer_config.json").good()) {
    cfg = read_file(dir + "/tokenizer_config.json");
  }
  return from_json(tj, cfg);
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(const std::string& tokenizer_json,
                                                const std::string& tokenizer_config_json) {
  json root = parse_json(tokenizer_json, "tokenizer.json");
  IRIS_CHECK(root.is_object()) << "tokenizer.json: top level must be an object";
  json config = tokenizer_config_json.empty() ? json::object()
                                              : parse_json(tokenizer_config_json, "tokenizer_config.json");
  IRIS_CHECK(config.is_object()) << "tokenizer_config.json: top level must be an object";

  auto impl = std::make_unique<Impl>();
  auto field = [&](const char* key) -> const json& {
    static const json null_json;
    auto it = root.find(key);
    return it == root.end() ? null_json : *it;
  };
  impl->normalizer = tok::make_normalizer(field("normalizer"));
  impl->pre_tokenizer = tok::make_pre_tokenizer(field("pre_tokenizer"));
  IRIS_CHECK(root.contains("model")) << "tokenizer.json: missing 'model'";
  impl->model = tok::make_model(root["model"]);
  impl->post_processor = tok::make_post_processor(field("post_processor"));
  impl->decoder = tok::make_decoder(field("decoder"));
  impl->byte_level_decoder = field("decoder").dump().find("\"ByteLevel\"") != std::string::npos;

  if (const json& added = field("added_tokens"); !added.is_null()) {
    IRIS_CHECK(added.is_array()) << "tokenizer.json: 'added_tokens' must be a list";
    for (size_t i = 0; i < added.size(); ++i) {
      std::string where = "tokenizer.json: added_tokens[" + std::to_string(i) + "]";
      impl->added.add(parse_added_token(added[i], std::nullopt, where.c_str()));
    }
  }
  // transformers adds tokens listed only in tokenizer_config.json's added_tokens_decoder.
  if (auto it = config.find("added_tokens_decoder"); it != config.end() && it->is_object()) {
    for (auto e = it->begin(); e != it->end(); ++e) {
      int32_t id = 0;
      try {
        id = std::stoi(e.key());
      } catch (const std::exception&) {
        fail("tokenizer_config.json: added_tokens_decoder key '", e.key(), "' is not an id");
      }
      auto token = parse_added_token(e.value(), id, "tokenizer_config.json: added_tokens_decoder");
      if (!impl->added.id_of(token.content) && !impl->added.by_id(id)) impl->added.add(token);
    }
  }
  if (auto it = config.find("additional_special_tokens"); it != config.end() && it->is_array()) {
    for (const auto& t : *it) {
      if (t.is_string()) impl->added.mark_special(t.get<std::string>());
      if (t.is_object() && t.contains("content") && t["content"].is_string()) {
        impl->added.mark_special(t["content"].get<std::string>());
      }
    }
  }
  impl->added.build(impl->normalizer.get());
  for (int32_t id = 0; id <= impl->added.max_id(); ++id) {
    const tok::AddedToken* t = impl->added.by_id(id);
    if (!t || !t->special) continue;
    if (auto model_id = impl->model->token_to_id(t->content); model_id && !impl->added.by_id(*model_id)) {
      impl->model_ids_spelling_special.insert(*model_id);
    }
  }

  impl->bos = config_token(config, "bos_token");
  impl->eos = config_token(config, "eos_token");
  impl->pad = config_token(config, "pad_token");
  impl->unk = config_token(config, "unk_token");
  if (auto it = config.find("clean_up_tokenization_spaces"); it != config.end() && it->is_boolean())
    impl->clean_up_tokenization_spaces = it->get<bool>();

  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
  Impl& im = *tokenizer->impl_;
  // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from add_bos_token /
  // add_eos_token (update_post_processor); other classes use tokenizer.json's as is.
  std::string cls = config.value("tokenizer_class", std::string());
  bool rebuilds = cls.rfind("LlamaTokenizer", 0) == 0 || cls.rfind("GemmaTokenizer", 0) == 0 ||
                  cls.rfind("CodeLlamaTokenizer", 0) == 0;
  if (rebuilds && (config.contains("add_bos_token") || config.contains("add_eos_token"))) {
    bool add_bos = config.value("add_bos_token", true);
    bool add_eos = config.value("add_eos_token", false);
    std::optional<int32_t> bos, eos;
    if (add_bos) {
      bos = im.bos.empty() ? std::nullopt : tokenizer->token_to_id(im.bos);
      IRIS_CHECK(bos.has_value()) << "tokenizer_config.json: add_bos_token is true but bos_token '"
                                  << im.bos << "' is not in the vocabulary";
    }
    if (add_eos) {
      eos = im.eos.empty() ? std::nullopt : tokenizer->token_to_id(im.eos);
      IRIS_CHECK(eos.has_value()) << "tokenizer_config.json: add_eos_token is true but eos_token '"
                                  << im.eos << "' is not in the vocabulary";
    }
    im.post_processor = tok::make_bos_eos_template(bos, eos);
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool add_special_tokens,
                                       bool parse_special) const {
  return encode_impl(input, add_special_tokens, parse_special, nullptr);
}

std::vector<int32_t> Tokenizer::encode_with_literals(
    std::string_view text, bool add_special_tokens,
    const std::vector<std::pair<size_t, size_t>>& literal) const {
  return encode_impl(text, add_special_tokens, /*parse_special=*/true, &literal);
}

bool Tokenizer::contains_special_token(std::string_view input) const {
  const std::string text = tok::to_valid_utf8(input);
  for (const auto& seg : impl_->added.split(text, /*normalized_pass=*/false, true))
    if (seg.id >= 0 && impl_->added.is_special_id(seg.id)) return true;
  return false;
}

std::vector<int32_t> Tokenizer::encode_impl(
    std::string_view input, bool add_special_tokens, bool parse_special,
    const std::vector<std::pair<size_t, size_t>>* literal) const {
  const Impl& im = *impl_;
  std::string text = tok::to_valid_utf8(input);
  // Literal ranges index the caller's bytes; a replacement changes offsets, so then no
  // special token is recognized at all (the safe side).
  if (literal && !literal->empty() && text != input) parse_special = false;
  std::vector<int32_t> ids;
  for (const auto& seg : im.added.split(text, /*normalized_pass=*/false, parse_special, literal)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string normalized = text.substr(seg.begin, seg.end - seg.begin);
    if (im.normalizer) im.normalizer->normalize(normalized);
    // Normalization moves offsets: inside a segment that touches a literal range, no
    // normalized special token is recognized.
    bool seg_special = parse_special;
    if (literal)
      for (const auto& [lb, le] : *literal)
        if (seg.begin < le && lb < seg.end) seg_special = false;
    for (const auto& sub : im.added.split(normalized, /*normalized_pass=*/true, seg_special)) {
      if (sub.id >= 0) {
        ids.push_back(sub.id);
        continue;
      }
      std::vector<tok::Piece> pieces{
          {normalized.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0}};
      if (im.pre_tokenizer) im.pre_tokenizer->pre_tokenize(pieces);
      for (const auto& p : pieces) im.model->tokenize(p.text, ids);
    }
  }
  if (im.post_processor) im.post_processor->process(ids, add_special_tokens);
  return ids;
}

std::string Tokenizer::decode_continuation(const int32_t* ids, size_t n, bool skip_special_tokens,
                                           bool continuation) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string* s = nullptr;
    if (const tok::AddedToken* t = im.added.by_id(ids[i])) {
      if (skip_special_tokens && t->special) continue;
      s = &t->content;
    } else {
      if (skip_special_tokens && im.model_ids_spelling_special.count(ids[i])) continue;
      s = im.model->id_to_token(ids[i]);
    }
    if (s) tokens.push_back(*s);
  }
  if (!im.decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  tok::DecodeContext ctx{continuation};
  im.decoder->decode_chain(tokens, ctx);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

bool Tokenizer::ends_inside_character(const int32_t* ids, size_t n) const {
  const Impl& im = *impl_;
  // The last 4 tokens that carry text are enough to hold any incomplete character.
  std::vector<std::string> tail;
  for (size_t i = n; i > 0 && tail.size() < 4; --i) {
    std::string token = id_to_token(ids[i - 1]);
    if (!token.empty()) tail.push_back(std::move(token));
  }
  std::string bytes;
  for (auto it = tail.rbegin(); it != tail.rend(); ++it) {
    const std::string& t = *it;
    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
        std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]))) {
      bytes.push_back(static_cast<char>(std::strtol(t.substr(3, 2).c_str(), nullptr, 16)));
      continue;
    }
    if (im.byte_level_decoder && !im.added.id_of(t)) {
      std::string mapped;
      size_t i = 0;
      bool ok = true;
      while (i < t.size() && ok) {
        int b = tok::unicode_to_byte(tok::next_code_point(t, i));
        ok = b >= 0;
        mapped.push_back(static_cast<char>(b));
      }
      if (ok) {
        bytes += mapped;
        continue;
      }
    }
    bytes += t;
  }
  return tok::incomplete_utf8_tail(bytes) > 0;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode_continuation(ids.data(), ids.size(), skip_special_tokens, false);
}

int32_t Tokenizer::vocab_size() const {
  return std::max(impl_->model->vocab_size(), impl_->added.max_id() + 1);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = impl_->added.id_of(token)) return id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const tok::AddedToken* t = impl_->added.by_id(id)) return t->content;
  const std::string* s = impl_->model->id_to_token(id);
  return s ? *s : std::string();
}

bool Tokenizer::is_special(int32_t id) const { return impl_->added.is_special_id(id); }

std::optional<std::string> Tokenizer::token_bytes(int32_t id) const {
  const Impl& im = *impl_;
  if (const tok::AddedToken* t = im.added.by_id(id)) {
    if (t->special) return std::nullopt;
    return t->content;
  }
  if (im.model_ids_spelling_special.count(id)) return std::nullopt;
  const std::string* s = im.model->id_to_token(id);
  if (!s) return std::nullopt;
  const std::string& t = *s;
  if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
      std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4])))
    return std::string(1, static_cast<char>(std::strtol(t.substr(3, 2).c_str(), nullptr, 16)));
  if (im.byte_level_decoder) {
    std::string mapped;
    size_t i = 0;
    while (i < t.size()) {
      const int b = tok::unicode_to_byte(tok::next_code_point(t, i));
      if (b < 0) return decode_continuation(&id, 1, false, true);
      mapped.push_back(static_cast<char>(b));
    }
    return mapped;
  }
  return decode_continuation(&id, 1, false, true);
}
const std::string& Tokenizer::bos_token() const { return impl_->bos; }
const std::string& Tokenizer::eos_token() const { return impl_->eos; }
const std::string& Tokenizer::pad_token() const { return impl_->pad; }
const std::string& Tokenizer::unk_token() const { return impl_->unk; }

bool Tokenizer::clean_up_tokenization_spaces() const { return impl_->clean_up_tokenization_spaces; }

std::string clean_up_tokenization(std::string_view text) {
  // transformers' PreTrainedTokenizerBase.clean_up_tokenization: the same replacements, in
  // the same order, each over the whole string.
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  std::string out(text);
  for (const auto& [from, to] : kRules) {
    std::string next;
    next.reserve(out.size());
    size_t pos = 0;
    while (true) {
      const size_t at = out.find(from, pos);
      if (at == std::string::npos) break;
      next.append(out, pos, at - pos);
      next.append(to);
      pos = at + from.size();
    }
    next.append(out, pos, std::string::npos);
    out = std::move(next);
  }
  return out;
}

std::string Tokenizer::decode_like_transformers(const std::vector<int32_t>& ids,
                                                bool skip_special_tokens) const {
  std::string text = decode(ids, skip_special_tokens);
  return impl_->clean_up_tokenization_spaces ? clean_up_tokenization(text) : text;
}
std::optional<int32_t> Tokenizer::bos_token_id() const {
  return impl_->bos.empty() ? std::nullopt : token_to_id(impl_->bos);
}
std::optional<int32_t> Tokenizer::eos_token_id() const {
  return impl_->eos.empty() ? std::nullopt : token_to_id(impl_->eos);
}

}  // namespace iris
