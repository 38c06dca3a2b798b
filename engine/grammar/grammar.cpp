// GrammarBuilder: rule construction helpers and the checks that make a grammar safe to run.
#include "engine/grammar/grammar.h"

#include <algorithm>
#include <functional>

#include "engine/core/check.h"

namespace iris::grammar {

void GrammarBuilder::set_time_limit(double limit_ms) {
  limit_ms_ = limit_ms;
  deadline_ = std::chrono::steady_clock::now() +
              std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                  std::chrono::duration<double, std::milli>(limit_ms));
}

void GrammarBuilder::check_time() const {
  if (limit_ms_ <= 0 || (++ticks_ & 255u) != 0) return;
  if (std::chrono::steady_clock::now() > deadline_)
    fail("the constraint took longer than ", limit_ms_, " ms to compile (the compile time cap)");
}

void GrammarBuilder::count(size_t n) {
  check_time();
  elements_ += n;
  if (elements_ > kMaxElements)
    fail("the constraint is too large: its grammar exceeds ", kMaxElements,
         " elements (large repetition bounds such as maxLength or {m,n} unroll)");
}

int32_t GrammarBuilder::add_rule(std::string name) {
  names_.push_back(std::move(name));
  rules_.emplace_back();
  return static_cast<int32_t>(names_.size() - 1);
}

void GrammarBuilder::add_alternative(int32_t rule, Sequence seq) {
  count(seq.size() + 1);
  rules_.at(rule).push_back(std::move(seq));
}

Symbol GrammarBuilder::rule_of(std::vector<Sequence> alts, std::string name) {
  const int32_t r = add_rule(name.empty() ? "_" + std::to_string(names_.size()) : std::move(name));
  for (Sequence& s : alts) add_alternative(r, std::move(s));
  return Symbol{true, r};
}

Symbol GrammarBuilder::byte_class(const ByteSet& set) {
  std::string key = set.to_string();
  auto it = class_index_.find(key);
  if (it != class_index_.end()) return Symbol{false, it->second};
  classes_.push_back(set);
  const int32_t id = static_cast<int32_t>(classes_.size() - 1);
  class_index_.emplace(std::move(key), id);
  return Symbol{false, id};
}

Symbol GrammarBuilder::byte(uint8_t b) {
  ByteSet s;
  s.set(b);
  return byte_class(s);
}

Sequence GrammarBuilder::literal(std::string_view bytes) {
  Sequence seq;
  seq.reserve(bytes.size());
  for (char c : bytes) seq.push_back(byte(static_cast<uint8_t>(c)));
  return seq;
}

Symbol GrammarBuilder::star(const Sequence& x) {
  // R ::= x R | ε — the recursive reference is in tail position, so the stack stays flat.
  const int32_t r = add_rule("_" + std::to_string(names_.size()) + "_star");
  Sequence loop = x;
  loop.push_back(Symbol{true, r});
  add_alternative(r, std::move(loop));
  add_alternative(r, {});
  return Symbol{true, r};
}

Symbol GrammarBuilder::plus(const Sequence& x) {
  Sequence s = x;
  s.push_back(star(x));
  return rule_of({std::move(s)});
}

Symbol GrammarBuilder::optional(const Sequence& x) { return rule_of({x, {}}); }

Symbol GrammarBuilder::repeat(const Sequence& x, int min, int max) {
  IRIS_CHECK(min >= 0 && (max < 0 || max >= min))
      << "repetition bounds {" << min << "," << max << "} are invalid";
  // One symbol for x so unrolling copies a reference, not the whole sequence.
  const Symbol one = x.size() == 1 ? x[0] : rule_of({x});
  Sequence out(static_cast<size_t>(min), one);
  count(out.size());
  if (max < 0) {
    out.push_back(star({one}));
  } else if (max > min) {
    // T_k ::= x T_{k-1} | ε with T_1 ::= x | ε: at most max - min more, stack stays flat.
    Symbol tail = optional({one});
    for (int k = 2; k <= max - min; ++k) tail = rule_of({{one, tail}, {}});
    out.push_back(tail);
  }
  return rule_of({std::move(out)});
}

Grammar GrammarBuilder::build(int32_t root) const {
  const size_t n = rules_.size();
  IRIS_CHECK(root >= 0 && static_cast<size_t>(root) < n) << "internal: bad grammar root";
  auto usable = [&](const Symbol& s, const std::vector<char>& ok) {
    return s.is_rule ? ok[s.id] != 0 : classes_[s.id].any();
  };
  // Productive rules: those that derive at least one finite string.
  std::vector<char> productive(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      check_time();
      if (productive[r]) continue;
      for (const Sequence& alt : rules_[r])
        if (std::all_of(alt.begin(), alt.end(), [&](const Symbol& s) { return usable(s, productive); })) {
          productive[r] = 1;
          changed = true;
          break;
        }
    }
  }
  if (!productive[root]) fail("the constraint admits no output at all");
  // Alternatives that can never finish are dropped so generation never walks into them.
  std::vector<std::vector<const Sequence*>> alts(n);
  for (size_t r = 0; r < n; ++r)
    for (const Sequence& alt : rules_[r])
      if (std::all_of(alt.begin(), alt.end(), [&](const Symbol& s) { return usable(s, productive); }))
        alts[r].push_back(&alt);

  // Nullable rules.
  std::vector<char> nullable(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      check_time();
      if (nullable[r]) continue;
      for (const Sequence* alt : alts[r])
        if (std::all_of(alt->begin(), alt->end(),
                        [&](const Symbol& s) { return s.is_rule && nullable[s.id]; })) {
          nullable[r] = 1;
          changed = true;
          break;
        }
    }
  }
  // Left-corner edges A → B (B reachable at the start of A). An edge is "growing" when B is
  // not the last item of its alternative (the matcher pushes a return position). A cycle
  // through a growing edge is left recursion that would grow the stack without bound; cycles
  // of tail edges only are harmless (the matcher revisits the same stack).
  struct Edge {
    int32_t to;
    bool grows;
  };
  std::vector<std::vector<Edge>> edges(n);
  for (size_t r = 0; r < n; ++r)
    for (const Sequence* alt : alts[r])
      for (size_t i = 0; i < alt->size(); ++i) {
        const Symbol& s = (*alt)[i];
        if (!s.is_rule) break;
        edges[r].push_back(Edge{s.id, i + 1 < alt->size()});
        if (!nullable[s.id]) break;
      }
  // Tarjan's strongly connected components, iteratively.
  std::vector<int32_t> index(n, -1), low(n, 0), comp(n, -1), stack;
  std::vector<char> on_stack(n, 0);
  int32_t next_index = 0, next_comp = 0;
  for (size_t start = 0; start < n; ++start) {
    if (index[start] >= 0) continue;
    std::vector<std::pair<int32_t, size_t>> work{{static_cast<int32_t>(start), 0}};
    index[start] = low[start] = next_index++;
    stack.push_back(static_cast<int32_t>(start));
    on_stack[start] = 1;
    while (!work.empty()) {
      auto& [v, ei] = work.back();
      if (ei < edges[v].size()) {
        const int32_t w = edges[v][ei++].to;
        if (index[w] < 0) {
          index[w] = low[w] = next_index++;
          stack.push_back(w);
          on_stack[w] = 1;
          work.emplace_back(w, 0);
        } else if (on_stack[w]) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      if (low[v] == index[v]) {
        while (true) {
          const int32_t w = stack.back();
          stack.pop_back();
          on_stack[w] = 0;
          comp[w] = next_comp;
          if (w == v) break;
        }
        ++next_comp;
      }
      const int32_t done = v;
      work.pop_back();
      if (!work.empty()) low[work.back().first] = std::min(low[work.back().first], low[done]);
    }
  }
  for (size_t r = 0; r < n; ++r)
    for (const Edge& e : edges[r])
      if (e.grows && comp[r] == comp[e.to])
        fail("the grammar is left-recursive through rule '", names_[r],
             "' (rewrite it with right recursion or repetition)");

  Grammar g;
  g.classes = classes_;
  g.rule_names = names_;
  g.root = root;
  g.alternatives.resize(n);
  for (size_t r = 0; r < n; ++r)
    for (const Sequence* alt : alts[r]) {
      g.alternatives[r].push_back(static_cast<int32_t>(g.elements.size()));
      for (const Symbol& s : *alt)
        g.elements.push_back(
            Grammar::Element{s.is_rule ? Grammar::Op::kRule : Grammar::Op::kClass, s.id});
      g.elements.push_back(Grammar::Element{Grammar::Op::kEnd, static_cast<int32_t>(r)});
    }
  return g;
}

}  // namespace iris::grammar
