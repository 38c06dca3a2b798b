// Tree-walking evaluation of statements and expressions with jinja2's semantics: Python
// arithmetic and comparison rules, per-iteration loop scopes, macros with closures, the
// default Undefined (prints empty, fails on arithmetic or attribute access), and the
// immutable sandbox. All work is charged against RenderLimits.
#include "engine/chat_template/evaluator.h"

#include <cmath>

#include "engine/core/check.h"

namespace iris::jinja {

struct Evaluator::MacroDef {
  std::string name;
  const std::vector<MacroParam>* params;
  const Body* body;
  std::weak_ptr<Frame> frame;  // weak: a frame holding its own macro must not leak
  Value caller;
};

Value* Frame::find(std::string_view name) {
  for (Frame* f = this; f; f = f->parent.get())
    for (auto& [k, v] : f->vars)
      if (k == name) return &v;
  return nullptr;
}

void Frame::set(const std::string& name, Value v) {
  for (auto& [k, old] : vars)
    if (k == name) {
      old = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

ArgBinder::ArgBinder(CallArgs& args, const char* fn, std::initializer_list<const char*> params)
    : bound_(params.size(), nullptr) {
  IRIS_CHECK(args.pos.size() <= params.size())
      << fn << "() takes at most " << params.size() << " arguments (" << args.pos.size() << " given)";
  for (size_t k = 0; k < args.pos.size(); ++k) bound_[k] = &args.pos[k];
  for (const auto& [name, value] : args.kw) {
    size_t idx = 0;
    for (const char* p : params) {
      if (name == p) break;
      ++idx;
    }
    IRIS_CHECK(idx < params.size()) << fn << "() got an unexpected keyword argument '" << name << "'";
    bound_[idx] = &value;
  }
}

Value ArgBinder::get_or(size_t index, Value fallback) const {
  const Value* v = get(index);
  return v ? *v : std::move(fallback);
}

Evaluator::DepthGuard::DepthGuard(Evaluator* ev) : e(ev) {
  if (++e->depth_ > 4 * e->limits_.max_depth)
    fail("chat template exceeded the recursion depth cap (max_depth=", e->limits_.max_depth, ")");
}

Evaluator::Evaluator(const RenderLimits& limits, std::shared_ptr<Frame> globals)
    : limits_(limits), globals_(std::move(globals)) {}

Evaluator::~Evaluator() {
  // Namespaces may reference themselves (`set ns.me = ns`); clearing breaks such cycles.
  for (auto& w : namespaces_)
    if (auto ns = w.lock()) ns->items.clear();
}

void Evaluator::charge(uint64_t steps) {
  steps_ += steps;
  if (steps_ > limits_.max_steps)
    fail("chat template exceeded the evaluation step cap (max_steps=", limits_.max_steps, ")");
}

void Evaluator::check_size(size_t bytes, const char* what) {
  if (bytes > limits_.max_output_bytes)
    fail("chat template exceeded the output size cap (max_output_bytes=", limits_.max_output_bytes,
         ") while building ", what);
  charge(bytes / 16);
}

void Evaluator::append(std::string_view text) {
  if (out_->size() + text.size() > limits_.max_output_bytes)
    fail("chat template exceeded the output size cap (max_output_bytes=", limits_.max_output_bytes, ")");
  out_->append(text);
}

void Evaluator::require_defined(const Value& v) {
  if (!v.is_undefined()) return;
  if (v.safe_error) fail("chat template security error: ", v.s);
  fail("chat template error: ", v.s.empty() ? std::string("value is undefined") : v.s);
}

std::string Evaluator::render(const Body& body) {
  std::string out;
  out_ = &out;
  auto top = std::make_shared<Frame>();
  top->parent = globals_;
  exec_body(body, top);
  return out;
}

std::string Evaluator::capture(const Body& body, const std::shared_ptr<Frame>& frame) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  try {
    exec_body(body, frame);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buf;
}

Evaluator::Flow Evaluator::exec_body(const Body& body, const std::shared_ptr<Frame>& frame) {
  for (const auto& s : body) {
    Flow f = exec(*s, frame);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Evaluator::Flow Evaluator::exec(const Stmt& stmt, const std::shared_ptr<Frame>& frame) {
  DepthGuard guard(this);
  charge();
  switch (stmt.kind) {
    case StmtKind::kText: append(static_cast<const TextStmt&>(stmt).text); return Flow::kNormal;
    case StmtKind::kOutput: {
      Value v = eval(*static_cast<const OutputStmt&>(stmt).expr, frame);
      if (v.is_string()) append(v.s);
      else append(v.str());  // undefined (even a sandboxed attribute) prints as ""

      return Flow::kNormal;
    }
    case StmtKind::kIf: {
      const auto& s = static_cast<const IfStmt&>(stmt);
      for (const auto& [cond, body] : s.branches)
        if (eval(*cond, frame).truthy()) return exec_body(body, frame);
      return exec_body(s.else_body, frame);
    }
    case StmtKind::kFor: return exec_for(static_cast<const ForStmt&>(stmt), frame);
    case StmtKind::kSet: {
      const auto& s = static_cast<const SetStmt&>(stmt);
      assign(s.target, eval(*s.value, frame), frame);
      return Flow::kNormal;
    }
    case StmtKind::kBlockSet: {
      const auto& s = static_cast<const BlockSetStmt&>(stmt);
      Value v = Value::string(capture(s.body, frame));
      if (s.filter) {
        auto f = std::make_shared<Frame>();
        f->parent = frame;
        f->set(kFilterSubject, std::move(v));
        v = eval(*s.filter, f);
      }
      assign(s.target, std::move(v), frame);
      return Flow::kNormal;
    }
    case StmtKind::kMacro: exec_macro(static_cast<const MacroStmt&>(stmt), frame); return Flow::kNormal;
    case StmtKind::kCallBlock:
      exec_call_block(static_cast<const CallBlockStmt&>(stmt), frame);
      return Flow::kNormal;
    case StmtKind::kFilterBlock: {
      const auto& s = static_cast<const FilterBlockStmt&>(stmt);
      auto f = std::make_shared<Frame>();
      f->parent = frame;
      f->set(kFilterSubject, Value::string(capture(s.body, frame)));
      append(eval(*s.filter, f).str());
      return Flow::kNormal;
    }
    case StmtKind::kWith: {
      const auto& s = static_cast<const WithStmt&>(stmt);
      auto f = std::make_shared<Frame>();
      f->parent = frame;
      std::vector<Value> values;
      for (const auto& a : s.assignments) values.push_back(eval(*a.second, frame));
      for (size_t k = 0; k < values.size(); ++k) assign(s.assignments[k].first, std::move(values[k]), f);
      return exec_body(s.body, f);
    }
    case StmtKind::kScope: return exec_body(static_cast<const ScopeStmt&>(stmt).body, frame);
    case StmtKind::kBreak: return Flow::kBreak;
    case StmtKind::kContinue: return Flow::kContinue;
  }
  return Flow::kNormal;
}

void Evaluator::assign(const Target& t, Value v, const std::shared_ptr<Frame>& frame) {
  if (!t.attr.empty()) {
    Value* ns = frame->find(t.names[0]);
    IRIS_CHECK(ns && ns->is_object() && ns->obj->is_namespace)
        << "chat template error: cannot assign attribute on non-namespace object '" << t.names[0] << "'";
    ns->obj->set(t.attr, std::move(v));
    return;
  }
  if (!t.is_tuple) {
    frame->set(t.names[0], std::move(v));
    return;
  }
  std::vector<Value> items = iterate(v);
  IRIS_CHECK(items.size() == t.names.size())
      << "chat template error: cannot unpack " << items.size() << " values into " << t.names.size() << " names";
  for (size_t k = 0; k < items.size(); ++k) frame->set(t.names[k], std::move(items[k]));
}

Evaluator::Flow Evaluator::exec_for(const ForStmt& s, const std::shared_ptr<Frame>& frame) {
  std::vector<Value> items = iterate(eval(*s.iter, frame));
  if (s.filter) {
    std::vector<Value> kept;
    for (auto& item : items) {
      charge();
      auto f = std::make_shared<Frame>();
      f->parent = frame;
      assign(s.target, item, f);
      if (eval(*s.filter, f).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec_body(s.else_body, frame);
  const int64_t n = static_cast<int64_t>(items.size());
  // One frame and one `loop` object per loop, refreshed each iteration (jinja2 also mutates a
  // single LoopContext); clearing the frame gives each iteration its own `set` scope.
  auto f = std::make_shared<Frame>();
  f->parent = frame;
  Value loop = Value::object();
  auto& o = *loop.obj;
  for (const char* key : {"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
                          "depth0", "previtem", "nextitem", "cycle"})
    o.items.emplace_back(key, Value());
  auto index0 = std::make_shared<int64_t>(0);
  o.items[7].second = Value::integer(1);
  o.items[8].second = Value::integer(0);
  o.items[6].second = Value::integer(n);
  o.items[11].second = Value::function("cycle", [index0](Evaluator&, CallArgs& a) {
    IRIS_CHECK(!a.pos.empty()) << "chat template error: no items for cycling given";
    return a.pos[static_cast<size_t>(*index0) % a.pos.size()];
  });
  for (int64_t k = 0; k < n; ++k) {
    charge();
    *index0 = k;
    o.items[0].second = Value::integer(k + 1);
    o.items[1].second = Value::integer(k);
    o.items[2].second = Value::integer(n - k);
    o.items[3].second = Value::integer(n - k - 1);
    o.items[4].second = Value::boolean(k == 0);
    o.items[5].second = Value::boolean(k == n - 1);
    o.items[9].second = k > 0 ? items[k - 1] : Value::undefined("'loop.previtem' is undefined");
    o.items[10].second = k + 1 < n ? items[k + 1] : Value::undefined("'loop.nextitem' is undefined");
    f->vars.clear();
    f->vars.emplace_back("loop", loop);
    assign(s.target, items[k], f);
    if (exec_body(s.body, f) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

Value Evaluator::make_macro(const std::string& name, const std::vector<MacroParam>* params,
                            const Body* body, const std::shared_ptr<Frame>& frame, Value caller) {
  auto def = std::make_shared<MacroDef>(MacroDef{name, params, body, frame, std::move(caller)});
  return Value::function(name, [def](Evaluator& ev, CallArgs& args) { return ev.call_macro(*def, args); });
}

void Evaluator::exec_macro(const MacroStmt& s, const std::shared_ptr<Frame>& frame) {
  frame->set(s.name, make_macro(s.name, &s.params, &s.body, frame, Value::undefined()));
}

void Evaluator::exec_call_block(const CallBlockStmt& s, const std::shared_ptr<Frame>& frame) {
  const auto& call = static_cast<const CallExpr&>(*s.call);
  Value callee = eval(*call.callee, frame);
  CallArgs args;
  eval_args(call.args, call.kwargs, frame, args);
  args.kw.emplace_back("caller", make_macro("caller", &s.caller_params, &s.body, frame, Value::undefined()));
  append(this->call(callee, args).str());
}

Value Evaluator::call_macro(const MacroDef& def, CallArgs& args) {
  DepthGuard guard(this);
  if (++macro_depth_ > limits_.max_depth) {
    --macro_depth_;
    fail("chat template exceeded the recursion depth cap (max_depth=", limits_.max_depth,
         ") in macro '", def.name, "'");
  }
  struct Release {
    int* d;
    ~Release() { --*d; }
  } release{&macro_depth_};
  auto closure = def.frame.lock();
  auto f = std::make_shared<Frame>();
  f->parent = closure ? closure : globals_;
  std::vector<bool> used_kw(args.kw.size(), false);
  for (size_t k = 0; k < def.params->size(); ++k) {
    const MacroParam& p = (*def.params)[k];
    if (k < args.pos.size()) {
      f->set(p.name, args.pos[k]);
      continue;
    }
    bool found = false;
    for (size_t j = 0; j < args.kw.size(); ++j)
      if (!used_kw[j] && args.kw[j].first == p.name) {
        f->set(p.name, args.kw[j].second);
        used_kw[j] = found = true;
        break;
      }
    if (found) continue;
    if (p.default_value) f->set(p.name, eval(*p.default_value, f));
    else f->set(p.name, Value::undefined("parameter '" + p.name + "' was not provided"));
  }
  std::vector<Value> varargs;
  for (size_t k = def.params->size(); k < args.pos.size(); ++k) varargs.push_back(args.pos[k]);
  Value kwargs = Value::object();
  for (size_t j = 0; j < args.kw.size(); ++j) {
    if (used_kw[j]) continue;
    if (args.kw[j].first == "caller") f->set("caller", args.kw[j].second);
    else kwargs.obj->set(args.kw[j].first, args.kw[j].second);
  }
  f->set("varargs", Value::array(std::move(varargs), true));
  f->set("kwargs", std::move(kwargs));
  return Value::string(capture(*def.body, f));
}

Value Evaluator::make_namespace() {
  Value ns = Value::object();
  ns.obj->is_namespace = true;
  namespaces_.push_back(ns.obj);
  return ns;
}

Value Evaluator::call(const Value& callee, CallArgs& args) {
  charge();
  if (callee.is_function()) return callee.fn->fn(*this, args);
  require_defined(callee);
  fail("chat template error: '", callee.type_name(), "' object is not callable");
}

std::vector<Value> Evaluator::iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      if (v.safe_error) require_defined(v);
      return {};
    case Value::Kind::kArray: return v.arr->items;
    case Value::Kind::kObject: {
      IRIS_CHECK(!v.obj->is_namespace) << "chat template error: 'Namespace' object is not iterable";
      std::vector<Value> keys;
      for (const auto& kv : v.obj->items) keys.push_back(Value::string(kv.first));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      size_t pos = 0;
      while (pos < v.s.size()) {
        size_t start = pos;
        utf8_decode_at(v.s, pos);
        chars.push_back(Value::string(v.s.substr(start, pos - start)));
      }
      return chars;
    }
    default: fail("chat template error: '", v.type_name(), "' object is not iterable");
  }
}

namespace {
// jinja2's message for a missing attribute, e.g. "'dict object' has no attribute 'x'".
Value no_attribute(const char* type, const std::string& name) {
  std::string msg = "'";
  msg += type;
  msg += " object' has no attribute '";
  msg += name;
  msg += "'";
  return Value::undefined(std::move(msg));
}
}  // namespace

Value Evaluator::getattr(const Value& obj, const std::string& name) {
  require_defined(obj);
  if (obj.is_object()) {
    if (obj.obj->is_namespace) {
      const Value* v = obj.obj->find(name);
      return v ? *v : no_attribute("Namespace", name);
    }
    Value m = find_method(*this, obj, name);
    if (!m.is_undefined() || m.safe_error) return m;
    const Value* v = obj.obj->find(name);
    return v ? *v : no_attribute("dict", name);
  }
  if (obj.is_string() || obj.is_array()) {
    Value m = find_method(*this, obj, name);
    if (!m.is_undefined() || m.safe_error) return m;
  }
  return no_attribute(obj.type_name(), name);
}

Value Evaluator::getitem(const Value& obj, const Value& key) {
  require_defined(obj);
  if (obj.is_object() && !obj.obj->is_namespace) {
    if (key.is_string()) {
      if (const Value* v = obj.obj->find(key.s)) return *v;
      Value m = find_method(*this, obj, key.s);
      if (!m.is_undefined() || m.safe_error) return m;
    }
    return no_attribute("dict", key.str());
  }
  if ((obj.is_array() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t idx = key.is_bool() ? key.b : key.i;
    if (obj.is_array()) {
      int64_t n = static_cast<int64_t>(obj.arr->items.size());
      if (idx < 0) idx += n;
      if (idx >= 0 && idx < n) return obj.arr->items[idx];
      return Value::undefined("list object has no element " + key.str());
    }
    std::vector<size_t> offs = utf8_offsets(obj.s);
    int64_t n = static_cast<int64_t>(offs.size()) - 1;
    if (idx < 0) idx += n;
    if (idx >= 0 && idx < n) return Value::string(obj.s.substr(offs[idx], offs[idx + 1] - offs[idx]));
    return Value::undefined("str object has no element " + key.str());
  }
  if (key.is_string()) return getattr(obj, key.s);
  return no_attribute(obj.type_name(), key.str());
}

bool Evaluator::test(const std::string& name, const Value& v, CallArgs& args) {
  TestFn fn = find_test(name);
  IRIS_CHECK(fn) << "chat template error: no test named '" << name << "'";
  charge();
  return fn(*this, v, args);
}

Value Evaluator::filter(const std::string& name, const Value& v, CallArgs& args) {
  FilterFn fn = find_filter(name);
  IRIS_CHECK(fn) << "chat template error: no filter named '" << name << "'";
  charge();
  return fn(*this, v, args);
}

void Evaluator::eval_args(const std::vector<ExprPtr>& args, const std::vector<KeywordArg>& kwargs,
                          const std::shared_ptr<Frame>& frame, CallArgs& out) {
  for (const auto& a : args) out.pos.push_back(eval(*a, frame));
  for (const auto& kw : kwargs) out.kw.emplace_back(kw.name, eval(*kw.value, frame));
}

Value Evaluator::eval(const Expr& e, const std::shared_ptr<Frame>& frame) {
  DepthGuard guard(this);
  charge();
  switch (e.kind) {
    case ExprKind::kLiteral: return static_cast<const LiteralExpr&>(e).value;
    case ExprKind::kName: {
      const auto& n = static_cast<const NameExpr&>(e);
      if (Value* v = frame->find(n.name)) return *v;
      return Value::undefined("'" + n.name + "' is undefined");
    }
    case ExprKind::kList: {
      const auto& l = static_cast<const ListExpr&>(e);
      std::vector<Value> items;
      for (const auto& item : l.items) items.push_back(eval(*item, frame));
      return Value::array(std::move(items), l.is_tuple);
    }
    case ExprKind::kDict: {
      Value d = Value::object();
      for (const auto& [k, v] : static_cast<const DictExpr&>(e).items) {
        Value key = eval(*k, frame);
        require_defined(key);
        d.obj->set(key.str(), eval(*v, frame));
      }
      return d;
    }
    case ExprKind::kUnary: {
      const auto& u = static_cast<const UnaryExpr&>(e);
      Value v = eval(*u.operand, frame);
      if (u.op == UnaryOp::kNot) return Value::boolean(!v.truthy());
      require_defined(v);
      if (v.is_bool()) v = Value::integer(v.b);
      if (v.is_int()) {
        if (u.op == UnaryOp::kPos) return v;
        IRIS_CHECK(v.i != INT64_MIN) << "chat template error: integer overflow";
        return Value::integer(-v.i);
      }
      if (v.is_float()) return Value::number(u.op == UnaryOp::kNeg ? -v.f : v.f);
      fail("chat template error: bad operand type for unary ", u.op == UnaryOp::kNeg ? "-" : "+", ": '",
           v.type_name(), "'");
    }
    case ExprKind::kBinary: return eval_binary(static_cast<const BinaryExpr&>(e), frame);
    case ExprKind::kCompare: return eval_compare(static_cast<const CompareExpr&>(e), frame);
    case ExprKind::kCond: {
      const auto& c = static_cast<const CondExpr&>(e);
      if (eval(*c.cond, frame).truthy()) return eval(*c.then_expr, frame);
      if (c.else_expr) return eval(*c.else_expr, frame);
      return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
    }
    case ExprKind::kGetAttr: {
      const auto& g = static_cast<const GetAttrExpr&>(e);
      return getattr(eval(*g.object, frame), g.name);
    }
    case ExprKind::kGetItem: {
      const auto& g = static_cast<const GetItemExpr&>(e);
      Value obj = eval(*g.object, frame);
      return getitem(obj, eval(*g.key, frame));
    }
    case ExprKind::kSlice: return eval_slice(static_cast<const SliceExpr&>(e), frame);
    case ExprKind::kCall: {
      const auto& c = static_cast<const CallExpr&>(e);
      Value callee = eval(*c.callee, frame);
      CallArgs args;
      eval_args(c.args, c.kwargs, frame, args);
      return call(callee, args);
    }
    case ExprKind::kFilter: {
      const auto& f = static_cast<const FilterExpr&>(e);
      Value subject = eval(*f.subject, frame);
      CallArgs args;
      eval_args(f.args, f.kwargs, frame, args);
      return filter(f.name, subject, args);
    }
    case ExprKind::kTest: {
      const auto& t = static_cast<const FilterExpr&>(e);
      Value subject = eval(*t.subject, frame);
      CallArgs args;
      eval_args(t.args, t.kwargs, frame, args);
      return Value::boolean(test(t.name, subject, args) != t.negated);
    }
  }
  return Value::undefined();
}

namespace {

[[noreturn]] void type_error(const char* op, const Value& a, const Value& b) {
  fail("chat template error: unsupported operand type(s) for ", op, ": '", a.type_name(), "' and '",
       b.type_name(), "'");
}

int64_t as_int(const Value& v) { return v.is_bool() ? v.b : v.i; }
bool is_intlike(const Value& v) { return v.is_int() || v.is_bool(); }

Value repeat(Evaluator& ev, const Value& seq, int64_t n) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    ev.check_size(seq.s.size() * static_cast<size_t>(std::min<int64_t>(n, INT32_MAX)), "a repeated string");
    std::string out;
    for (int64_t k = 0; k < n; ++k) out += seq.s;
    return Value::string(std::move(out));
  }
  ev.check_size(seq.arr->items.size() * static_cast<size_t>(std::min<int64_t>(n, INT32_MAX)) * 8, "a repeated list");
  std::vector<Value> out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.arr->items.begin(), seq.arr->items.end());
  return Value::array(std::move(out), seq.arr->is_tuple);
}

}  // namespace

Value Evaluator::eval_binary(const BinaryExpr& e, const std::shared_ptr<Frame>& frame) {
  if (e.op == BinaryOp::kAnd || e.op == BinaryOp::kOr) {
    Value l = eval(*e.lhs, frame);
    if ((e.op == BinaryOp::kAnd) != l.truthy()) return l;
    return eval(*e.rhs, frame);
  }
  Value a = eval(*e.lhs, frame);
  Value b = eval(*e.rhs, frame);
  if (e.op == BinaryOp::kConcat) {
    if (a.safe_error) require_defined(a);
    if (b.safe_error) require_defined(b);
    std::string s = a.str();
    std::string t = b.str();
    check_size(s.size() + t.size(), "a string");
    return Value::string(s + t);
  }
  require_defined(a);
  require_defined(b);
  const bool ints = is_intlike(a) && is_intlike(b);
  const bool nums = a.is_number() && b.is_number();
  switch (e.op) {
    case BinaryOp::kAdd: {
      if (ints) {
        int64_t r;
        IRIS_CHECK(!__builtin_add_overflow(as_int(a), as_int(b), &r)) << "chat template error: integer overflow";
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_double() + b.as_double());
      if (a.is_string() && b.is_string()) {
        check_size(a.s.size() + b.s.size(), "a string");
        return Value::string(a.s + b.s);
      }
      if (a.is_array() && b.is_array() && a.arr->is_tuple == b.arr->is_tuple) {
        check_size((a.arr->items.size() + b.arr->items.size()) * 8, "a list");
        std::vector<Value> items = a.arr->items;
        items.insert(items.end(), b.arr->items.begin(), b.arr->items.end());
        return Value::array(std::move(items), a.arr->is_tuple);
      }
      if (a.is_string())
        fail("chat template error: can only concatenate str (not \"", b.type_name(), "\") to str");
      type_error("+", a, b);
    }
    case BinaryOp::kSub: {
      if (ints) {
        int64_t r;
        IRIS_CHECK(!__builtin_sub_overflow(as_int(a), as_int(b), &r)) << "chat template error: integer overflow";
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_double() - b.as_double());
      type_error("-", a, b);
    }
    case BinaryOp::kMul: {
      if (ints) {
        int64_t r;
        IRIS_CHECK(!__builtin_mul_overflow(as_int(a), as_int(b), &r)) << "chat template error: integer overflow";
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_double() * b.as_double());
      if ((a.is_string() || a.is_array()) && is_intlike(b)) return repeat(*this, a, as_int(b));
      if ((b.is_string() || b.is_array()) && is_intlike(a)) return repeat(*this, b, as_int(a));
      type_error("*", a, b);
    }
    case BinaryOp::kDiv: {
      if (!nums) type_error("/", a, b);
      IRIS_CHECK(b.as_double() != 0.0) << "chat template error: division by zero";
      return Value::number(a.as_double() / b.as_double());
    }
    case BinaryOp::kFloorDiv:
    case BinaryOp::kMod: {
      if (e.op == BinaryOp::kMod && a.is_string()) return Value::string(py_percent_format(*this, a.s, b));
      if (!nums) type_error(e.op == BinaryOp::kMod ? "%" : "//", a, b);
      IRIS_CHECK(b.as_double() != 0.0) << "chat template error: division by zero";
      if (ints) {
        int64_t x = as_int(a), y = as_int(b);
        IRIS_CHECK(!(x == INT64_MIN && y == -1)) << "chat template error: integer overflow";
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {
          --q;
          r += y;
        }
        return Value::integer(e.op == BinaryOp::kMod ? r : q);
      }
      // CPython's float_divmod.
      double x = a.as_double(), y = b.as_double();
      double mod = std::fmod(x, y);
      double div = (x - mod) / y;
      if (mod != 0) {
        if ((y < 0) != (mod < 0)) {
          mod += y;
          div -= 1.0;
        }
      } else {
        mod = std::copysign(0.0, y);
      }
      if (e.op == BinaryOp::kMod) return Value::number(mod);
      double fl = std::floor(div);
      if (div - fl > 0.5) fl += 1.0;
      if (div == 0) fl = std::copysign(0.0, x / y);
      return Value::number(fl);
    }
    case BinaryOp::kPow: {
      if (ints && as_int(b) >= 0) {
        int64_t base = as_int(a), exp = as_int(b), r = 1;
        while (exp > 0) {
          charge();
          if (exp & 1) {
            IRIS_CHECK(!__builtin_mul_overflow(r, base, &r)) << "chat template error: integer overflow";
          }
          exp >>= 1;
          if (exp) {
            IRIS_CHECK(!__builtin_mul_overflow(base, base, &base)) << "chat template error: integer overflow";
          }
        }
        return Value::integer(r);
      }
      if (nums) return Value::number(std::pow(a.as_double(), b.as_double()));
      type_error("** or pow()", a, b);
    }
    default: break;
  }
  return Value::undefined();
}

namespace {

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Value::Kind::kUndefined: Evaluator::require_defined(container); return false;
    case Value::Kind::kString:
      IRIS_CHECK(item.is_string()) << "chat template error: 'in <string>' requires string as left operand, not "
                                   << item.type_name();
      return container.s.find(item.s) != std::string::npos;
    case Value::Kind::kArray:
      for (const auto& v : container.arr->items)
        if (values_equal(v, item)) return true;
      return false;
    case Value::Kind::kObject:
      return item.is_string() && !container.obj->is_namespace && container.obj->find(item.s);
    default: fail("chat template error: argument of type '", container.type_name(), "' is not iterable");
  }
}

}  // namespace

Value Evaluator::eval_compare(const CompareExpr& e, const std::shared_ptr<Frame>& frame) {
  Value lhs = eval(*e.first, frame);
  for (const auto& [op, rhs_expr] : e.rest) {
    Value rhs = eval(*rhs_expr, frame);
    bool r = false;
    switch (op) {
      case CompareOp::kEq: r = values_equal(lhs, rhs); break;
      case CompareOp::kNe: r = !values_equal(lhs, rhs); break;
      case CompareOp::kIn: r = contains(rhs, lhs); break;
      case CompareOp::kNotIn: r = !contains(rhs, lhs); break;
      default:
        require_defined(lhs);
        require_defined(rhs);
        try {
          if (op == CompareOp::kLt) r = values_less(lhs, rhs);
          else if (op == CompareOp::kGt) r = values_less(rhs, lhs);
          else if (op == CompareOp::kLe) r = values_less(lhs, rhs) || values_equal(lhs, rhs);
          else r = values_less(rhs, lhs) || values_equal(lhs, rhs);
        } catch (const Error& err) {
          fail("chat template error: ", err.what());
        }
    }
    if (!r) return Value::boolean(false);
    lhs = std::move(rhs);
  }
  return Value::boolean(true);
}

Value Evaluator::eval_slice(const SliceExpr& e, const std::shared_ptr<Frame>& frame) {
  Value obj = eval(*e.object, frame);
  require_defined(obj);
  auto bound = [&](const ExprPtr& x, bool* present) -> int64_t {
    *present = false;
    if (!x) return 0;
    Value v = eval(*x, frame);
    if (v.is_none()) return 0;
    IRIS_CHECK(is_intlike(v)) << "chat template error: slice indices must be integers or None";
    *present = true;
    return as_int(v);
  };
  bool has_start, has_stop, has_step;
  int64_t start = bound(e.start, &has_start);
  int64_t stop = bound(e.stop, &has_stop);
  int64_t step = bound(e.step, &has_step);
  if (!has_step) step = 1;
  IRIS_CHECK(step != 0) << "chat template error: slice step cannot be zero";
  std::vector<size_t> offs;
  int64_t n;
  if (obj.is_string()) {
    offs = utf8_offsets(obj.s);
    n = static_cast<int64_t>(offs.size()) - 1;
  } else if (obj.is_array()) {
    n = static_cast<int64_t>(obj.arr->items.size());
  } else {
    fail("chat template error: '", obj.type_name(), "' object is not subscriptable");
  }
  auto clamp = [&](int64_t v, bool present, int64_t dflt) -> int64_t {
    if (!present) return dflt;
    if (v < 0) v += n;
    if (step > 0) return std::clamp<int64_t>(v, 0, n);
    return std::clamp<int64_t>(v, -1, n - 1);
  };
  start = clamp(start, has_start, step > 0 ? 0 : n - 1);
  stop = clamp(stop, has_stop, step > 0 ? n : -1);
  std::vector<int64_t> idx;
  for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
    idx.push_back(k);
    if (__builtin_add_overflow(k, step, &k)) break;
  }
  charge(idx.size());
  if (obj.is_string()) {
    std::string out;
    for (int64_t k : idx) out.append(obj.s, offs[k], offs[k + 1] - offs[k]);
    return Value::string(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t k : idx) out.push_back(obj.arr->items[k]);
  return Value::array(std::move(out), obj.arr->is_tuple);
}

}  // namespace iris::jinja
