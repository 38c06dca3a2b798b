// Catch2 unit tests for the tokenizer that need no reference packages: the streaming
// detokenizer (stop strings across token boundaries, characters split across byte-fallback
// tokens, held-back partial stops), split behaviors and other pre-tokenizers checked against
// the examples in HF's documentation, added-token options, and malformed tokenizer.json.
#include <catch2/catch.hpp>

#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/tokenizer/tiny_tokenizers.h"

using iris::IncrementalDetokenizer;
using iris::Tokenizer;
using nlohmann::json;

namespace {

std::vector<std::string> pre_tokenize(const json& config, const std::string& text) {
  auto pt = iris::tok::make_pre_tokenizer(config);
  std::vector<iris::tok::Piece> pieces{{text, true}};
  pt->pre_tokenize(pieces);
  std::vector<std::string> out;
  for (auto& p : pieces) out.push_back(p.text);
  return out;
}

}  // namespace

TEST_CASE("SentencePiece byte_fallback round trip", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json());
  auto ids = tok->encode("ab 你 stop");
  REQUIRE(ids.front() == 1);  // <s>
  CHECK(tok->decode(ids) == "<s> ab 你 stop");
  CHECK(tok->decode(ids, true) == "ab 你 stop");
  // 你 = E4 BD A0 comes out as three byte-fallback tokens.
  CHECK(std::count_if(ids.begin(), ids.end(), [](int32_t id) { return id >= 3 && id < 259; }) == 3);
  CHECK(tok->encode("<s>", false, /*parse_special=*/false) != std::vector<int32_t>{1});
  CHECK(tok->encode("<s>", false, /*parse_special=*/true) == std::vector<int32_t>{1});
}

TEST_CASE("streaming never cuts a character split across byte-fallback tokens", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json());
  auto ids = tok->encode("ab 你好 ab", false);
  IncrementalDetokenizer d(*tok, {}, {}, false);
  std::string all;
  for (int32_t id : ids) {
    auto delta = d.push(id);
    // Every delta is whole UTF-8: never a lone lead or continuation byte.
    for (size_t i = 0; i < delta.text.size();) {
      auto c = static_cast<unsigned char>(delta.text[i]);
      size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      REQUIRE(i + len <= delta.text.size());
      i += len;
    }
    all += delta.text;
  }
  all += d.flush();
  CHECK(all == tok->decode(ids));
  CHECK(all == "ab 你好 ab");
}

TEST_CASE("streaming keeps SentencePiece leading spaces after a prompt", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json());
  auto prompt = tok->encode("ab");
  auto gen = tok->encode("ab stop", false);  // "▁ab", "▁stop"
  IncrementalDetokenizer d(*tok, prompt, {}, true);
  std::string all;
  for (int32_t id : gen) all += d.push(id).text;
  all += d.flush();
  CHECK(all == " ab stop");  // the first generated token keeps its space: it continues "ab"
}

TEST_CASE("stop string spanning token boundaries", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json());
  auto ids = tok->encode("ab stop here ab", false);
  IncrementalDetokenizer d(*tok, {}, {"p he"}, false);
  std::string all;
  bool stopped = false;
  std::string matched;
  for (int32_t id : ids) {
    auto delta = d.push(id);
    all += delta.text;
    if (delta.stopped) {
      stopped = true;
      matched = delta.matched_stop;
      break;
    }
  }
  CHECK(stopped);
  CHECK(matched == "p he");
  CHECK(all == "ab sto");
  CHECK(d.push(ids.back()).stopped);
  CHECK(d.push(ids.back()).text.empty());
  CHECK(d.flush().empty());
}

TEST_CASE("partial stop strings are held back until resolved", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json());
  // Tokens: "▁ab" then "▁s", "t", "o", ... one at a time through explicit ids.
  auto id = [&](const char* t) { return *tok->token_to_id(t); };
  IncrementalDetokenizer d(*tok, {}, {"stop!"}, false);
  CHECK(d.push(id("\u2581ab")).text == "ab");
  CHECK(d.push(id("\u2581s")).text == " ");  // "s" could start "stop!": held back
  CHECK(d.push(id("t")).text.empty());
  CHECK(d.push(id("o")).text.empty());
  auto delta = d.push(id("e"));  // "stoe" can no longer be "stop!": released
  CHECK(delta.text == "stoe");
  CHECK_FALSE(delta.stopped);
  CHECK(d.push(id("\u2581st")).text == " ");
  CHECK(d.flush() == "st");  // end of generation: the held partial stop is emitted
}

TEST_CASE("stop string inside one token and the earliest of several stops wins", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json());
  auto ids = tok->encode("ab stop here", false);
  IncrementalDetokenizer d(*tok, {}, {"here", "to"}, false);
  std::string all;
  IncrementalDetokenizer::Delta last;
  for (int32_t i : ids) {
    last = d.push(i);
    all += last.text;
    if (last.stopped) break;
  }
  CHECK(last.stopped);
  CHECK(last.matched_stop == "to");
  CHECK(all == "ab s");
}

TEST_CASE("byte-level streaming with an incomplete emoji", "[tokenizer]") {
  auto tok = Tokenizer::from_json(iris::test::tiny_bytelevel_json());
  std::string text = "the 😀 in<|end_of_text|> er";
  auto ids = tok->encode(text);
  CHECK(tok->decode(ids) == "<|begin_of_text|>" + text);
  CHECK(tok->decode(ids, true) == "the 😀 in er");
  IncrementalDetokenizer d(*tok, {}, {}, true);
  std::string all;
  for (int32_t id : ids) all += d.push(id).text;
  all += d.flush();
  CHECK(all == "the 😀 in er");
}

TEST_CASE("split behaviors match HF's documented examples", "[tokenizer]") {
  auto split = [](const char* behavior) {
    return pre_tokenize({{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior},
                         {"invert", false}},
                        "the-final--countdown");
  };
  using V = std::vector<std::string>;
  CHECK(split("Removed") == V{"the", "final", "countdown"});
  CHECK(split("Isolated") == V{"the", "-", "final", "-", "-", "countdown"});
  CHECK(split("MergedWithPrevious") == V{"the-", "final-", "-", "countdown"});
  CHECK(split("MergedWithNext") == V{"the", "-final", "-", "-countdown"});
  CHECK(split("Contiguous") == V{"the", "-", "final", "--", "countdown"});
  // invert: the matches are what is kept.
  CHECK(pre_tokenize({{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Removed"},
                      {"invert", true}},
                     "hi, you!") == V{"hi", "you"});
}

TEST_CASE("other pre-tokenizers", "[tokenizer]") {
  using V = std::vector<std::string>;
  CHECK(pre_tokenize({{"type", "Whitespace"}}, "Hey man!  How's it?") ==
        V{"Hey", "man", "!", "How", "'", "s", "it", "?"});
  CHECK(pre_tokenize({{"type", "WhitespaceSplit"}}, "Hey man!\t\nyes") == V{"Hey", "man!", "yes"});
  CHECK(pre_tokenize({{"type", "Punctuation"}}, "Hey friend!?") == V{"Hey friend", "!", "?"});
  CHECK(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "a123") == V{"a", "1", "2", "3"});
  CHECK(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "a123b4") ==
        V{"a", "123", "b", "4"});
  CHECK(pre_tokenize({{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"},
                      {"split", true}},
                     "Hey friend") == V{"\u2581Hey", "\u2581friend"});
  CHECK(pre_tokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}},
                     "Hello  world") == V{"\u0120Hello", "\u0120", "\u0120world"});
}

TEST_CASE("added token options: lstrip, rstrip, single_word", "[tokenizer]") {
  json j = json::parse(iris::test::tiny_bytelevel_json());
  j["added_tokens"].push_back({{"id", 310}, {"content", "<mask>"}, {"lstrip", true}, {"rstrip", true},
                               {"special", true}, {"normalized", false}});
  j["added_tokens"].push_back({{"id", 311}, {"content", "on"}, {"single_word", true},
                               {"special", false}, {"normalized", false}});
  auto tok = Tokenizer::from_json(j.dump());
  auto a = tok->encode("the  <mask>  in", false);
  auto b = tok->encode("the<mask>in", false);
  CHECK(a == b);  // the whitespace around <mask> belongs to it
  CHECK(tok->encode("on", false) == std::vector<int32_t>{311});
  CHECK(tok->encode("onion", false) != std::vector<int32_t>{311});
  auto c = tok->encode("onion", false);
  CHECK(std::find(c.begin(), c.end(), 311) == c.end());
}

TEST_CASE("malformed tokenizer.json gives a clear iris::Error", "[tokenizer]") {
  auto fails_with = [](const std::string& text, const std::string& needle) {
    try {
      Tokenizer::from_json(text);
    } catch (const iris::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
      return;
    }
    FAIL("no iris::Error for: " << text.substr(0, 200));
  };
  json good = json::parse(iris::test::tiny_bytelevel_json());
  fails_with("{not json", "not valid JSON");
  fails_with("[1, 2]", "top level must be an object");
  fails_with("{}", "missing 'model'");
  json j = good;
  j["model"]["merges"].push_back("zz qq");
  fails_with(j.dump(), "missing from the vocab");
  j = good;
  j["model"]["merges"].push_back("abc");
  fails_with(j.dump(), "two tokens separated by one space");
  j = good;
  j["model"]["vocab"]["x"] = "seven";
  fails_with(j.dump(), "non-negative integer");
  j = good;
  j["normalizer"] = {{"type", "Frobnicate"}};
  fails_with(j.dump(), "unsupported normalizer type 'Frobnicate'");
  j = good;
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  fails_with(j.dump(), "cannot compile regex");
  j = good;
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "x"}}}, {"behavior", "Sideways"}};
  fails_with(j.dump(), "unknown split behavior 'Sideways'");
  j = good;
  j["added_tokens"].push_back({{"id", 5}});
  fails_with(j.dump(), "'content'");
  j = good;
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<nope>";
  fails_with(j.dump(), "missing from special_tokens");
  j = good;
  j["model"]["type"] = "WordLevelPlus";
  fails_with(j.dump(), "unsupported model type");
  j = good;
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}};
  fails_with(j.dump(), "decoder Strip");
  CHECK_THROWS_AS(Tokenizer::from_json(good.dump(), "{bad config"), iris::Error);
  CHECK_THROWS_AS(Tokenizer::from_dir("/nonexistent/dir"), iris::Error);
}

TEST_CASE("tokenizer_config.json fields", "[tokenizer]") {
  json cfg = {{"bos_token", {{"content", "<s>"}}}, {"eos_token", "</s>"}, {"pad_token", nullptr},
              {"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", false}, {"add_eos_token", true}};
  auto tok = Tokenizer::from_json(iris::test::tiny_sentencepiece_json(), cfg.dump());
  CHECK(tok->bos_token() == "<s>");
  CHECK(tok->eos_token() == "</s>");
  CHECK(tok->pad_token().empty());
  CHECK(tok->eos_token_id() == 2);
  auto ids = tok->encode("ab");
  CHECK(ids.front() != 1);  // add_bos_token=false rebuilt the template (transformers' rule)
  CHECK(ids.back() == 2);
  CHECK(tok->vocab_size() == 284);
  CHECK(tok->id_to_token(1) == "<s>");
  CHECK(tok->is_special(1));
  CHECK_FALSE(tok->is_special(260));
}
