// The tree-walking evaluator and the pieces filters, tests and methods share with it:
// scopes (Frame), argument binding (ArgBinder), attribute/item access with jinja2's
// sandboxed semantics, and the step/size/depth accounting behind RenderLimits.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/chat_template/ast.h"
#include "engine/chat_template/jinja.h"
#include "engine/chat_template/value.h"

namespace iris::jinja {

// One scope. Loop iterations, macro calls and `with` blocks get a child frame; `if` does not.
struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<std::string, Value>> vars;

  Value* find(std::string_view name);
  void set(const std::string& name, Value v);
};

class Evaluator {
 public:
  Evaluator(const RenderLimits& limits, std::shared_ptr<Frame> globals);
  ~Evaluator();

  std::string render(const Body& body);

  // Accounting: every evaluation step and every element or byte built is charged here.
  void charge(uint64_t steps = 1);
  void check_size(size_t bytes, const char* what);
  const RenderLimits& limits() const { return limits_; }

  Value call(const Value& callee, CallArgs& args);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  std::vector<Value> iterate(const Value& v);
  bool test(const std::string& name, const Value& v, CallArgs& args);
  Value filter(const std::string& name, const Value& v, CallArgs& args);
  Value make_namespace();

  // Fails with jinja2's UndefinedError message when `v` is undefined.
  static void require_defined(const Value& v);

  struct MacroDef;
  Value call_macro(const MacroDef& def, CallArgs& args);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  struct DepthGuard {
    explicit DepthGuard(Evaluator* e);
    ~DepthGuard() { --e->depth_; }
    Evaluator* e;
  };

  Flow exec_body(const Body& body, const std::shared_ptr<Frame>& frame);
  Flow exec(const Stmt& stmt, const std::shared_ptr<Frame>& frame);
  Flow exec_for(const ForStmt& s, const std::shared_ptr<Frame>& frame);
  void exec_macro(const MacroStmt& s, const std::shared_ptr<Frame>& frame);
  void exec_call_block(const CallBlockStmt& s, const std::shared_ptr<Frame>& frame);
  std::string capture(const Body& body, const std::shared_ptr<Frame>& frame);
  void assign(const Target& t, Value v, const std::shared_ptr<Frame>& frame);
  void append(std::string_view text);

  Value eval(const Expr& e, const std::shared_ptr<Frame>& frame);
  Value eval_binary(const BinaryExpr& e, const std::shared_ptr<Frame>& frame);
  Value eval_compare(const CompareExpr& e, const std::shared_ptr<Frame>& frame);
  Value eval_slice(const SliceExpr& e, const std::shared_ptr<Frame>& frame);
  void eval_args(const std::vector<ExprPtr>& args, const std::vector<KeywordArg>& kwargs,
                 const std::shared_ptr<Frame>& frame, CallArgs& out);
  Value make_macro(const std::string& name, const std::vector<MacroParam>* params,
                   const Body* body, const std::shared_ptr<Frame>& frame, Value caller);

  RenderLimits limits_;
  std::shared_ptr<Frame> globals_;
  std::string* out_ = nullptr;
  uint64_t steps_ = 0;
  int depth_ = 0;
  int macro_depth_ = 0;
  std::vector<std::weak_ptr<ObjectData>> namespaces_;  // cleared after render to break cycles
};

// Binds positional and keyword arguments of a builtin to its parameter names.
class ArgBinder {
 public:
  ArgBinder(CallArgs& args, const char* fn, std::initializer_list<const char*> params);
  const Value* get(size_t index) const { return index < bound_.size() ? bound_[index] : nullptr; }
  Value get_or(size_t index, Value fallback) const;
  bool has(size_t index) const { return get(index) != nullptr; }

 private:
  std::vector<const Value*> bound_;
};

// Registries implemented in filters.cpp, tests.cpp and methods.cpp.
using FilterFn = Value (*)(Evaluator&, const Value&, CallArgs&);
using TestFn = bool (*)(Evaluator&, const Value&, CallArgs&);
FilterFn find_filter(std::string_view name);
TestFn find_test(std::string_view name);
// A bound method of a str/dict/list, or undefined when there is none.
Value find_method(Evaluator& ev, const Value& obj, const std::string& name);
// Builtin globals: range, dict, namespace, joiner, cycler.
void add_builtin_globals(Frame& globals);

// Python str methods shared by filters and methods.
std::string py_strip(std::string_view s, const Value* chars, bool left, bool right);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_title(std::string_view s);
std::string py_capitalize(std::string_view s);
std::string py_replace(std::string_view s, std::string_view from, std::string_view to, int64_t count);
std::vector<Value> py_split(std::string_view s, const Value* sep, int64_t maxsplit);
// printf-style `fmt % args` as Python's str.__mod__ does it (s, d, i, f, r, x, %).
std::string py_percent_format(Evaluator& ev, std::string_view fmt, const Value& args);

}  // namespace iris::jinja
