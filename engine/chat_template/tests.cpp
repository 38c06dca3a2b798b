// Builtin tests (`value is name(args)`), matching jinja2's definitions: Python's bool counts
// as a number but not as an integer, Undefined is iterable and a sequence, and comparison
// tests use Python ordering.
#include "engine/chat_template/evaluator.h"
#include "engine/core/check.h"

namespace iris::jinja {
namespace {

const Value& arg0(CallArgs& a, const char* test) {
  IRIS_CHECK(!a.pos.empty() || !a.kw.empty()) << "chat template error: test '" << test << "' needs an argument";
  return a.pos.empty() ? a.kw[0].second : a.pos[0];
}

bool less(const Value& x, const Value& y) {
  Evaluator::require_defined(x);
  Evaluator::require_defined(y);
  try {
    return values_less(x, y);
  } catch (const Error& e) {
    fail("chat template error: ", e.what());
  }
}

bool t_defined(Evaluator&, const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(Evaluator&, const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(Evaluator&, const Value& v, CallArgs&) { return v.is_none(); }
bool t_string(Evaluator&, const Value& v, CallArgs&) { return v.is_string(); }
bool t_number(Evaluator&, const Value& v, CallArgs&) { return v.is_number(); }
bool t_integer(Evaluator&, const Value& v, CallArgs&) { return v.is_int(); }
bool t_float(Evaluator&, const Value& v, CallArgs&) { return v.is_float(); }
bool t_mapping(Evaluator&, const Value& v, CallArgs&) { return v.is_object() && !v.obj->is_namespace; }
bool t_iterable(Evaluator&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_array() || (v.is_object() && !v.obj->is_namespace);
}
bool t_sequence(Evaluator& ev, const Value& v, CallArgs& a) { return t_iterable(ev, v, a); }
bool t_boolean(Evaluator&, const Value& v, CallArgs&) { return v.is_bool(); }
bool t_true(Evaluator&, const Value& v, CallArgs&) { return v.is_bool() && v.b; }
bool t_false(Evaluator&, const Value& v, CallArgs&) { return v.is_bool() && !v.b; }
bool t_callable(Evaluator&, const Value& v, CallArgs&) { return v.is_function(); }
bool t_escaped(Evaluator&, const Value&, CallArgs&) { return false; }

int64_t need_int(const Value& v, const char* test) {
  Evaluator::require_defined(v);
  if (v.is_bool()) return v.b;
  if (v.is_float() && v.f == static_cast<double>(static_cast<int64_t>(v.f))) return static_cast<int64_t>(v.f);
  IRIS_CHECK(v.is_int()) << "chat template error: test '" << test << "' needs an integer, got " << v.type_name();
  return v.i;
}
bool t_even(Evaluator&, const Value& v, CallArgs&) { return need_int(v, "even") % 2 == 0; }
bool t_odd(Evaluator&, const Value& v, CallArgs&) { return need_int(v, "odd") % 2 != 0; }
bool t_divisibleby(Evaluator&, const Value& v, CallArgs& a) {
  int64_t d = need_int(arg0(a, "divisibleby"), "divisibleby");
  IRIS_CHECK(d != 0) << "chat template error: integer division or modulo by zero";
  if (d == -1) return true;
  return need_int(v, "divisibleby") % d == 0;
}
bool t_eq(Evaluator&, const Value& v, CallArgs& a) { return values_equal(v, arg0(a, "eq")); }
bool t_ne(Evaluator&, const Value& v, CallArgs& a) { return !values_equal(v, arg0(a, "ne")); }
bool t_lt(Evaluator&, const Value& v, CallArgs& a) { return less(v, arg0(a, "lt")); }
bool t_gt(Evaluator&, const Value& v, CallArgs& a) { return less(arg0(a, "gt"), v); }
bool t_le(Evaluator&, const Value& v, CallArgs& a) {
  const Value& o = arg0(a, "le");
  return less(v, o) || values_equal(v, o);
}
bool t_ge(Evaluator&, const Value& v, CallArgs& a) {
  const Value& o = arg0(a, "ge");
  return less(o, v) || values_equal(v, o);
}
bool t_in(Evaluator&, const Value& v, CallArgs& a) {
  const Value& seq = arg0(a, "in");
  if (seq.is_string()) {
    IRIS_CHECK(v.is_string()) << "chat template error: 'in <string>' requires string as left operand";
    return seq.s.find(v.s) != std::string::npos;
  }
  if (seq.is_array()) {
    for (const auto& x : seq.arr->items)
      if (values_equal(x, v)) return true;
    return false;
  }
  if (seq.is_object()) return v.is_string() && seq.obj->find(v.s);
  if (seq.is_undefined()) return false;
  fail("chat template error: argument of type '", seq.type_name(), "' is not iterable");
}
bool t_lower(Evaluator&, const Value& v, CallArgs&) {
  if (!v.is_string()) return false;
  std::string l = py_lower(v.s);
  return l == v.s && py_upper(v.s) != v.s;
}
bool t_upper(Evaluator&, const Value& v, CallArgs&) {
  if (!v.is_string()) return false;
  std::string u = py_upper(v.s);
  return u == v.s && py_lower(v.s) != v.s;
}
bool t_sameas(Evaluator&, const Value& v, CallArgs& a) {
  const Value& o = arg0(a, "sameas");
  if (v.kind != o.kind) return false;
  switch (v.kind) {
    case Value::Kind::kNone:
    case Value::Kind::kUndefined: return true;
    case Value::Kind::kBool: return v.b == o.b;
    case Value::Kind::kInt: return v.i == o.i && v.i >= -5 && v.i <= 256;  // CPython small ints
    case Value::Kind::kArray: return v.arr == o.arr;
    case Value::Kind::kObject: return v.obj == o.obj;
    case Value::Kind::kFunction: return v.fn == o.fn;
    default: return false;
  }
}
bool t_filter(Evaluator&, const Value& v, CallArgs&) { return v.is_string() && find_filter(v.s); }
bool t_test(Evaluator&, const Value& v, CallArgs&) { return v.is_string() && find_test(v.s); }

struct NamedTest {
  const char* name;
  TestFn fn;
};

constexpr NamedTest kTests[] = {
    {"defined", t_defined},   {"undefined", t_undefined}, {"none", t_none},
    {"string", t_string},     {"number", t_number},       {"integer", t_integer},
    {"float", t_float},       {"mapping", t_mapping},     {"iterable", t_iterable},
    {"sequence", t_sequence}, {"boolean", t_boolean},     {"true", t_true},
    {"false", t_false},       {"even", t_even},           {"odd", t_odd},
    {"divisibleby", t_divisibleby}, {"eq", t_eq},         {"equalto", t_eq},
    {"==", t_eq},             {"ne", t_ne},               {"!=", t_ne},
    {"lt", t_lt},             {"lessthan", t_lt},         {"<", t_lt},
    {"gt", t_gt},             {"greaterthan", t_gt},      {">", t_gt},
    {"le", t_le},             {"<=", t_le},               {"ge", t_ge},
    {">=", t_ge},             {"in", t_in},               {"callable", t_callable},
    {"lower", t_lower},       {"upper", t_upper},         {"sameas", t_sameas},
    {"escaped", t_escaped},   {"filter", t_filter},       {"test", t_test},
};

}  // namespace

TestFn find_test(std::string_view name) {
  for (const auto& t : kTests)
    if (name == t.name) return t.fn;
  return nullptr;
}

}  // namespace iris::jinja
