// Stop strings and streamed text through the batching engine, as a client sees them: matches
// inside a token, across token boundaries and across a multi-byte character split over byte
// tokens; held-back text emitted on every kind of finish; min_tokens with stop strings; n > 1
// with choices that finish at different steps; every streamed piece valid UTF-8. The
// tokenizers are real (the SentencePiece-style and byte-level BPE test vocabularies, and
// iris-tiny's); the tokens come from iris-tiny itself or from a scripted model that says
// exactly what a case needs. Every expectation is computed from the tokenizer's decode of
// the whole token list (tests/unit/engine_text_util.h).
#include <catch2/catch.hpp>

#include <set>

#include "engine/engine.h"
#include "tests/tokenizer/tiny_tokenizers.h"
#include "tests/unit/engine_text_util.h"
#include "tests/unit/scripted_model.h"

using namespace iris;
using namespace iris::test;

namespace {

enum class Vocab { kSentencePiece, kByteLevel, kIrisTiny };

const char* vocab_name(Vocab v) {
  switch (v) {
    case Vocab::kSentencePiece: return "sentencepiece (byte fallback)";
    case Vocab::kByteLevel: return "byte-level BPE";
    case Vocab::kIrisTiny: return "iris-tiny byte-level BPE";
  }
  return "?";
}

// A real tokenizer, the prompt "ab", and a scripted model behind a real engine.
struct Scripted {
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> eos;
  int32_t special_id = 0;  // a special token that is neither EOS nor in the prompt
  std::vector<int32_t> prompt;
  std::unique_ptr<Backend> backend = make_cpu_backend(1);
  std::unique_ptr<ScriptedModel> model;
  std::unique_ptr<Engine> engine;

  explicit Scripted(Vocab v) {
    switch (v) {
      case Vocab::kSentencePiece:
        tok = Tokenizer::from_json(tiny_sentencepiece_json());
        eos = {2};         // </s>
        special_id = 1;    // <s>
        break;
      case Vocab::kByteLevel:
        tok = Tokenizer::from_json(tiny_bytelevel_json());
        eos = {301};       // <|end_of_text|>
        special_id = 300;  // <|begin_of_text|>
        break;
      case Vocab::kIrisTiny:
        tok = Tokenizer::from_dir(std::string(IRIS_SOURCE_DIR) + "/models/iris-tiny");
        eos = {2044, 2047};
        special_id = 2045;  // <|start_header_id|>
        break;
    }
    REQUIRE(tok->is_special(special_id));
    prompt = tok->encode("ab");
  }

  std::vector<int32_t> ids(const std::string& text) const { return tok->encode(text, false); }
  int32_t id(const std::string& token) const {
    const auto i = tok->token_to_id(token);
    REQUIRE(i.has_value());
    return *i;
  }

  // The model answers the prompt with `answer` (one candidate set per step), then EOS.
  void script(const std::vector<std::vector<int32_t>>& answer) {
    std::vector<std::vector<int32_t>> tape(prompt.size() - 1);
    tape.insert(tape.end(), answer.begin(), answer.end());
    model = std::make_unique<ScriptedModel>(tok->vocab_size(), eos, tape);
    EngineConfig ec;
    ec.num_kv_blocks = 64;
    ec.max_num_seqs = 16;
    ec.max_num_batched_tokens = 128;
    engine = std::make_unique<Engine>(*backend, *model, ec, tok.get());
  }
  void script_text(const std::string& text, std::vector<int32_t> then = {}) {
    std::vector<std::vector<int32_t>> answer;
    for (int32_t i : ids(text)) answer.push_back({i});
    for (int32_t i : then) answer.push_back({i});
    script(answer);
  }

  EngineRequest request(SamplingParams p, int n = 1, const std::string& id = "r") const {
    EngineRequest r;
    r.id = id;
    r.prompt = prompt;
    r.params = std::move(p);
    r.n = n;
    return r;
  }
};

SamplingParams greedy(int max_tokens, std::vector<std::string> stop = {}) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = max_tokens;
  p.stop = std::move(stop);
  return p;
}

// The whole (EOS-ended) greedy answer of iris-tiny to "Hello", as in the bug report.
struct TinyHello {
  IrisTiny m;
  std::vector<int32_t> prompt = m.tok->encode("Hello");
  EngineRequest request(SamplingParams p) const {
    EngineRequest r;
    r.id = "hello";
    r.prompt = prompt;
    r.params = std::move(p);
    return r;
  }
};

}  // namespace

TEST_CASE("iris-tiny: text held back for a possible stop string is not lost when EOS ends the answer") {
  TinyHello t;
  const SamplingParams plain = greedy(20);
  auto engine = t.m.engine();
  const Choice whole = run_alone(*engine, t.request(plain)).at(0);
  // The report's case: the answer ends on EOS with text that starts the stop string.
  REQUIRE(whole.finish == FinishReason::kStop);
  REQUIRE(std::count(t.m.cfg.eos_token_ids.begin(), t.m.cfg.eos_token_ids.end(), whole.tokens.back()) == 1);
  const std::string full = reference_text(*t.m.tok, t.prompt, whole.tokens, true);
  REQUIRE(full.size() > 6);
  const std::string stop = full.substr(full.size() - 6) + "x";  // e.g. "world." + "x"
  REQUIRE(full.find(stop) == std::string::npos);

  const SamplingParams with_stop = greedy(20, {stop});
  const Choice c = run_alone(*engine, t.request(with_stop)).at(0);
  check_choice(*t.m.tok, t.prompt, c, with_stop, t.m.cfg.eos_token_ids);
  CHECK(c.tokens == whole.tokens);
  CHECK(c.text() == full);
  CHECK(c.finish == FinishReason::kStop);
}

TEST_CASE("iris-tiny: a stop string that min_tokens overrides does not swallow the rest of the text") {
  TinyHello t;
  SamplingParams p = greedy(20);
  p.min_tokens = 12;
  auto engine = t.m.engine();
  const Choice whole = run_alone(*engine, t.request(p)).at(0);
  const std::string full = reference_text(*t.m.tok, t.prompt, whole.tokens, true);
  const std::string first12 = reference_text(
      *t.m.tok, t.prompt, std::vector<int32_t>(whole.tokens.begin(), whole.tokens.begin() + 12), true);
  INFO("answer '" << full << "', its first 12 tokens '" << first12 << "'");
  // The report's case: "world" occurs within the first 12 tokens (the match min_tokens
  // overrides) and the answer goes on after them.
  REQUIRE(first12.find("world") != std::string::npos);
  REQUIRE(whole.tokens.size() > 12);

  p.stop = {"world"};
  const Choice c = run_alone(*engine, t.request(p)).at(0);
  check_choice(*t.m.tok, t.prompt, c, p, t.m.cfg.eos_token_ids);
  CHECK(c.tokens.size() > 12);
  // Tokens and text agree: the text is the decode of the streamed tokens up to the cut.
  const std::string streamed_decode = reference_text(*t.m.tok, t.prompt, c.tokens, true);
  CHECK(streamed_decode.compare(0, c.text().size(), c.text()) == 0);
  CHECK(c.text().size() > first12.size());
}

TEST_CASE("held-back text is emitted whatever ends the sequence: EOS, stop id, length, abort") {
  const Vocab v = GENERATE(Vocab::kSentencePiece, Vocab::kByteLevel, Vocab::kIrisTiny);
  const std::string how = GENERATE(as<std::string>{}, "eos", "stop id", "length", "abort");
  INFO(vocab_name(v) << ", finished by " << how);
  Scripted s(v);
  // " st" could be the start of "stop": the detokenizer holds it back when it arrives.
  const std::vector<int32_t> answer = s.ids("ab st");
  SamplingParams p = greedy(32, {"stop"});
  std::vector<int32_t> expect_tokens = answer;
  FinishReason expect = FinishReason::kStop;
  if (how == "eos") {
    s.script_text("ab st");  // then EOS
    expect_tokens.push_back(s.eos[0]);
  } else if (how == "stop id") {
    s.script_text("ab st", {s.special_id});
    p.stop_token_ids = {s.special_id};
    expect_tokens.push_back(s.special_id);
  } else if (how == "length") {
    s.script_text("ab st");
    p.max_tokens = static_cast<int>(answer.size());
    expect = FinishReason::kLength;
  } else {
    s.script_text("ab st", {s.id("o"), s.id("o")});
    expect_tokens.push_back(s.id("o"));  // "sto" is held when the abort arrives
    expect = FinishReason::kAbort;
  }
  Choices out;
  s.engine->submit(s.request(p), collect_into(out));
  int steps = 0;
  while (s.engine->has_work()) {
    s.engine->step();
    REQUIRE(++steps < 100);
    if (how == "abort" && !out[0].finish && out[0].tokens.size() == expect_tokens.size())
      s.engine->abort("r");
  }
  const Choice& c = out.at(0);
  CHECK(c.tokens == expect_tokens);
  REQUIRE(c.finish == expect);
  const std::string full = reference_text(*s.tok, s.prompt, c.tokens, true);
  const std::string held = how == "abort" ? "sto" : "st";
  REQUIRE(full.size() >= held.size());
  CHECK(full.compare(full.size() - held.size(), held.size(), held) == 0);
  CHECK(c.text() == full);  // nothing held back is lost
  CHECK(c.completion_tokens == static_cast<int>(c.tokens.size()));
  for (const auto& piece : c.pieces) CHECK(valid_utf8(piece));
  if (how != "abort") check_choice(*s.tok, s.prompt, c, p, s.eos);
  CHECK(s.engine->stats().num_free_blocks == s.engine->stats().num_total_blocks);
}

TEST_CASE("stop strings inside a token, across tokens and across a character split over byte tokens") {
  const Vocab v = GENERATE(Vocab::kSentencePiece, Vocab::kByteLevel, Vocab::kIrisTiny);
  const std::vector<std::string> stop = GENERATE(
      std::vector<std::string>{"p he"},        // across a token boundary
      std::vector<std::string>{"to"},          // inside one token
      std::vector<std::string>{"你"},          // completes on the last byte of a split character
      std::vector<std::string>{"好 s"},        // a split character, then across tokens
      std::vector<std::string>{"😀a"},         // a four-byte character, then one more token
      std::vector<std::string>{"b😀"},
      std::vector<std::string>{"here", "to"},  // the earliest match wins
      std::vector<std::string>{"ok"},          // at the very end
      std::vector<std::string>{"ab"},          // the first token already matches
      std::vector<std::string>{"zz", "好x"});  // never matches: runs to EOS
  Scripted s(v);
  const std::string text = "ab stop here ab 你好 stop ab😀ab ok";
  s.script_text(text);
  const SamplingParams p = greedy(64, stop);
  INFO(vocab_name(v) << ", stop '" << stop[0] << "'");
  const Choice c = run_alone(*s.engine, s.request(p)).at(0);
  check_choice(*s.tok, s.prompt, c, p, s.eos);
  // The same cut from first principles: decode everything the model would say, find the stop.
  const std::vector<int32_t> all = s.ids(text);
  const std::string whole = reference_text(*s.tok, s.prompt, all, true);
  size_t cut = std::string::npos;
  for (const auto& st : stop) cut = std::min(cut, whole.find(st));
  if (cut == std::string::npos) {
    CHECK(c.text() == whole);
  } else {
    CHECK(c.text() == whole.substr(0, cut));
    CHECK(c.tokens.size() <= all.size());
  }
  CHECK(std::equal(c.tokens.begin(), c.tokens.end() - (cut == std::string::npos ? 1 : 0), all.begin()));
}

TEST_CASE("min_tokens: a stop string counts only when its match ends after the first min_tokens tokens") {
  Scripted s(Vocab::kSentencePiece);
  // " ab", " stop", " ab", " stop", " ab", then EOS.
  s.script_text("ab stop ab stop ab");
  REQUIRE(s.ids("ab stop ab stop ab").size() == 5);
  struct Case {
    int min_tokens;
    std::string stop;
    size_t tokens;
    std::string text;
  };
  const Case k = GENERATE(values<Case>({
      {0, "stop", 2, " ab "},
      {1, "stop", 2, " ab "},          // the match ends in the 2nd token's text: counts
      {2, "stop", 4, " ab stop ab "},  // ends within the first 2 tokens: ignored, next one counts
      {3, "stop", 4, " ab stop ab "},
      {4, "stop", 6, " ab stop ab stop ab"},  // both ignored: the answer runs to EOS
      {5, "stop", 6, " ab stop ab stop ab"},
      {2, "p ab", 3, " ab sto"},  // starts within the first 2 tokens, ends after: counts
  }));
  SamplingParams p = greedy(20, {k.stop});
  p.min_tokens = k.min_tokens;
  INFO("min_tokens " << k.min_tokens << ", stop '" << k.stop << "'");
  const Choice c = run_alone(*s.engine, s.request(p)).at(0);
  check_choice(*s.tok, s.prompt, c, p, s.eos);
  CHECK(c.tokens.size() == k.tokens);
  CHECK(c.text() == k.text);
  CHECK(c.finish == FinishReason::kStop);
}

TEST_CASE("min_tokens ending inside a character split over byte tokens: the character counts after it") {
  Scripted s(Vocab::kSentencePiece);
  // " ab", "▁", then 你 as E4 BD A0 and 好 as E5 A5 BD (byte fallback), then EOS.
  const std::vector<int32_t> ids = s.ids("ab 你好");
  REQUIRE(ids.size() == 8);
  s.script_text("ab 你好");
  struct Case {
    int min_tokens;
    size_t tokens;
    std::string text;
  };
  const Case k = GENERATE(values<Case>({
      {3, 5, " ab "},        // the boundary cuts 你 after E4: 你 is text of token 5, so it counts
      {4, 5, " ab "},
      {5, 9, " ab 你好"},    // 你 is complete within the first 5 tokens: ignored; EOS ends it
  }));
  SamplingParams p = greedy(20, {"你"});
  p.min_tokens = k.min_tokens;
  INFO("min_tokens " << k.min_tokens);
  const Choice c = run_alone(*s.engine, s.request(p)).at(0);
  check_choice(*s.tok, s.prompt, c, p, s.eos);
  CHECK(c.tokens.size() == k.tokens);
  CHECK(c.text() == k.text);
}

TEST_CASE("n > 1: choices that finish at different steps each get their own text, tokens and reason") {
  Scripted s(Vocab::kSentencePiece);
  const int32_t ab = s.id("\u2581ab"), stop = s.id("\u2581stop"), here = s.id("\u2581here"),
                sp = s.id("\u2581s");
  // Each choice flips a coin twice between " stop" (the stop string) and " here"; those that
  // never say it end on " s" (held back: it could start "stop") and EOS, or at max_tokens.
  s.script({{ab}, {stop, here}, {ab}, {stop, here}, {sp}});
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 11;
  p.stop = {"stop"};
  p.max_tokens = 30;
  SamplingParams capped = p;
  capped.max_tokens = 5;
  Choices a, b;
  s.engine->submit(s.request(p, 8, "a"), collect_into(a));
  s.engine->submit(s.request(capped, 8, "b"), collect_into(b));
  while (s.engine->has_work()) {
    s.engine->step();
    REQUIRE(s.engine->check_invariants().empty());
  }
  std::set<size_t> lengths_a, lengths_b;
  std::set<FinishReason> reasons_b;
  for (int i = 0; i < 8; ++i) {
    INFO("choice " << i);
    check_choice(*s.tok, s.prompt, a.at(i), p, s.eos);
    check_choice(*s.tok, s.prompt, b.at(i), capped, s.eos);
    lengths_a.insert(a.at(i).tokens.size());
    lengths_b.insert(b.at(i).tokens.size());
    reasons_b.insert(*b.at(i).finish);
    if (a.at(i).tokens.size() == 6) CHECK(a.at(i).text().substr(a.at(i).text().size() - 2) == " s");
  }
  // The seed gives a spread: some choices stop on the string, some run to the end.
  CHECK(lengths_a.size() >= 2);
  CHECK(lengths_b.size() >= 2);
  CHECK(reasons_b.count(FinishReason::kLength) == 1);
  CHECK(s.engine->stats().num_free_blocks == s.engine->stats().num_total_blocks);
}

TEST_CASE("every streamed piece is valid UTF-8 when emoji and CJK characters are split across tokens") {
  const Vocab v = GENERATE(Vocab::kSentencePiece, Vocab::kByteLevel, Vocab::kIrisTiny);
  // Stop strings that share a first character with the text keep whole characters held back
  // and released again; none of them matches.
  const std::vector<std::string> stop = GENERATE(std::vector<std::string>{},
                                                 std::vector<std::string>{"好x", "😀🎉x", "é!"});
  INFO(vocab_name(v) << ", " << stop.size() << " stop strings");
  Scripted s(v);
  const std::string text = "你好, 世界! 😀🎉 naïve café — 한국어 ok 🇫🇷";
  const std::vector<int32_t> ids = s.ids(text);
  // The test is about characters split over tokens: some token must decode to a fragment.
  int fragments = 0;
  for (int32_t id : ids)
    if (!valid_utf8(s.tok->decode({id}, false)) || s.tok->decode({id}, false).find("\xEF\xBF\xBD") != std::string::npos)
      ++fragments;
  REQUIRE(fragments >= 4);
  s.script_text(text);
  const SamplingParams p = greedy(128, stop);
  const Choice c = run_alone(*s.engine, s.request(p)).at(0);
  CHECK(c.pieces.size() == c.tokens.size());
  for (size_t i = 0; i < c.pieces.size(); ++i) {
    INFO("piece " << i << " '" << c.pieces[i] << "'");
    REQUIRE(valid_utf8(c.pieces[i]));
  }
  CHECK(c.text() == reference_text(*s.tok, s.prompt, ids, true));
  check_choice(*s.tok, s.prompt, c, p, s.eos);
}
