// Builtin filters (`value | name(args)`), with jinja2's argument names and defaults and
// transformers' tojson (json.dumps with ensure_ascii=False, insertion order kept). Filters
// that jinja2 implements as lazy generators (map, select, reverse...) return lists here;
// they only differ if a template prints the generator object itself.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "engine/chat_template/evaluator.h"
#include "engine/core/check.h"

namespace iris::jinja {
namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// jinja2's make_attrgetter: "a.b.0" looks up items (then attributes) part by part.
Value attribute_path(Evaluator& ev, const Value& item, const std::string& path) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    Value key = all_digits(part) && part.size() < 18 ? Value::integer(std::stoll(part)) : Value::string(part);
    cur = ev.getitem(cur, key);
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value make_list(Evaluator& ev, std::vector<Value> items) {
  ev.charge(items.size());
  return Value::array(std::move(items));
}

Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(py_lower(v.s));
  return v;
}

void sort_values(std::vector<std::pair<Value, Value>>& keyed, bool reverse) {
  try {
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
      return reverse ? values_less(y.first, x.first) : values_less(x.first, y.first);
    });
  } catch (const Error& e) {
    fail("chat template error: ", e.what());
  }
}

Value f_trim(Evaluator&, const Value& v, CallArgs& a) {
  ArgBinder b(a, "trim", {"chars"});
  return Value::string(py_strip(v.str(), b.get(0), true, true));
}

Value f_tojson(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "tojson", {"indent", "ensure_ascii", "separators", "sort_keys"});
  JsonDumpOptions o;
  Value indent = b.get_or(0, Value::none());
  if (indent.is_string()) {
    o.has_indent = true;
    o.indent = indent.s;
  } else if (indent.is_int()) {
    o.has_indent = true;
    IRIS_CHECK(indent.i <= 1024) << "chat template error: tojson indent too large";
    o.indent = std::string(indent.i > 0 ? static_cast<size_t>(indent.i) : 0, ' ');
  }
  if (o.has_indent) o.item_separator = ",";
  o.ensure_ascii = b.get_or(1, Value::boolean(false)).truthy();
  Value seps = b.get_or(2, Value::none());
  if (seps.is_array()) {
    IRIS_CHECK(seps.arr->items.size() == 2) << "chat template error: separators must be a pair";
    o.item_separator = seps.arr->items[0].str();
    o.key_separator = seps.arr->items[1].str();
  }
  o.sort_keys = b.get_or(3, Value::boolean(false)).truthy();
  Evaluator::require_defined(v);
  std::string out;
  try {
    out = dump_json(v, o);
  } catch (const Error& e) {
    fail("chat template error: ", e.what());
  }
  ev.check_size(out.size(), "a tojson string");
  return Value::string(std::move(out));
}

Value f_length(Evaluator&, const Value& v, CallArgs&) {
  switch (v.kind) {
    case Value::Kind::kUndefined: return Value::integer(0);
    case Value::Kind::kString: return Value::integer(static_cast<int64_t>(utf8_length(v.s)));
    case Value::Kind::kArray: return Value::integer(static_cast<int64_t>(v.arr->items.size()));
    case Value::Kind::kObject:
      if (!v.obj->is_namespace) return Value::integer(static_cast<int64_t>(v.obj->items.size()));
      [[fallthrough]];
    default: fail("chat template error: object of type '", v.type_name(), "' has no len()");
  }
}

Value f_items(Evaluator& ev, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::array();
  IRIS_CHECK(v.is_object() && !v.obj->is_namespace) << "chat template error: Can only get item pairs from a mapping.";
  std::vector<Value> out;
  for (const auto& [k, x] : v.obj->items) out.push_back(Value::array({Value::string(k), x}, true));
  return make_list(ev, std::move(out));
}

// select/reject/selectattr/rejectattr share jinja2's select_or_reject.
Value select_or_reject(Evaluator& ev, const Value& v, CallArgs& a, bool select, bool by_attr) {
  size_t k = 0;
  std::string attr;
  if (by_attr) {
    IRIS_CHECK(!a.pos.empty()) << "chat template error: missing attribute for selectattr/rejectattr";
    attr = a.pos[k++].str();
  }
  std::string test_name;
  CallArgs test_args;
  if (k < a.pos.size()) {
    test_name = a.pos[k++].str();
    test_args.pos.assign(a.pos.begin() + static_cast<long>(k), a.pos.end());
    test_args.kw = a.kw;
  }
  std::vector<Value> out;
  for (const Value& item : ev.iterate(v)) {
    ev.charge();
    Value subject = by_attr ? attribute_path(ev, item, attr) : item;
    bool r;
    if (test_name.empty()) {
      r = subject.truthy();
    } else {
      CallArgs copy = test_args;
      r = ev.test(test_name, subject, copy);
    }
    if (r == select) out.push_back(item);
  }
  return make_list(ev, std::move(out));
}
Value f_select(Evaluator& ev, const Value& v, CallArgs& a) { return select_or_reject(ev, v, a, true, false); }
Value f_reject(Evaluator& ev, const Value& v, CallArgs& a) { return select_or_reject(ev, v, a, false, false); }
Value f_selectattr(Evaluator& ev, const Value& v, CallArgs& a) { return select_or_reject(ev, v, a, true, true); }
Value f_rejectattr(Evaluator& ev, const Value& v, CallArgs& a) { return select_or_reject(ev, v, a, false, true); }

Value f_map(Evaluator& ev, const Value& v, CallArgs& a) {
  std::vector<Value> out;
  const Value* attr = nullptr;
  Value dflt = Value::undefined();
  bool has_default = false;
  for (const auto& [k, x] : a.kw) {
    if (k == "attribute") attr = &x;
    else if (k == "default") {
      dflt = x;
      has_default = true;
    }
  }
  if (attr) {
    for (const Value& item : ev.iterate(v)) {
      Value r = attribute_path(ev, item, attr->str());
      out.push_back(r.is_undefined() && has_default ? dflt : r);
    }
    return make_list(ev, std::move(out));
  }
  IRIS_CHECK(!a.pos.empty()) << "chat template error: map requires a filter argument";
  std::string name = a.pos[0].str();
  CallArgs rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const Value& item : ev.iterate(v)) {
    CallArgs copy = rest;
    out.push_back(ev.filter(name, item, copy));
  }
  return make_list(ev, std::move(out));
}

Value f_join(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "join", {"d", "attribute"});
  std::string sep = b.get_or(0, Value::string("")).str();
  std::string out;
  bool first = true;
  for (const Value& item : ev.iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += b.has(1) ? attribute_path(ev, item, b.get(1)->str()).str() : item.str();
    ev.check_size(out.size(), "a joined string");
  }
  return Value::string(std::move(out));
}

Value f_upper(Evaluator&, const Value& v, CallArgs&) { return Value::string(py_upper(v.str())); }
Value f_lower(Evaluator&, const Value& v, CallArgs&) { return Value::string(py_lower(v.str())); }
Value f_capitalize(Evaluator&, const Value& v, CallArgs&) { return Value::string(py_capitalize(v.str())); }
Value f_title(Evaluator&, const Value& v, CallArgs&) { return Value::string(py_title(v.str())); }

Value f_replace(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "replace", {"old", "new", "count"});
  IRIS_CHECK(b.has(0) && b.has(1)) << "chat template error: replace needs old and new";
  Value count = b.get_or(2, Value::none());
  std::string r = py_replace(v.str(), b.get(0)->str(), b.get(1)->str(), count.is_int() ? count.i : -1);
  ev.check_size(r.size(), "a string");
  return Value::string(std::move(r));
}

Value f_default(Evaluator&, const Value& v, CallArgs& a) {
  ArgBinder b(a, "default", {"default_value", "boolean"});
  bool boolean = b.get_or(1, Value::boolean(false)).truthy();
  if (v.is_undefined() || (boolean && !v.truthy())) return b.get_or(0, Value::string(""));
  return v;
}

Value f_safe(Evaluator&, const Value& v, CallArgs&) { return v; }
Value f_string(Evaluator&, const Value& v, CallArgs&) { return Value::string(v.str()); }

bool parse_python_int(std::string s, int64_t base, int64_t* out) {
  s = py_strip(s, nullptr, true, true);
  std::string digits;
  for (size_t k = 0; k < s.size(); ++k)
    if (s[k] != '_' || (k > 0 && k + 1 < s.size())) digits += s[k];
  if (digits.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long r = std::strtoll(digits.c_str(), &end, static_cast<int>(base));
  if (errno != 0 || *end != '\0' || std::isspace(static_cast<unsigned char>(digits[0]))) return false;
  *out = r;
  return true;
}

bool parse_python_float(const std::string& raw, double* out) {
  std::string s = py_strip(raw, nullptr, true, true);
  if (s.empty()) return false;
  if (s.find_first_of("xXpP") != std::string::npos) return false;  // no hex floats in Python
  char* end = nullptr;
  double r = std::strtod(s.c_str(), &end);
  if (*end != '\0') return false;
  *out = r;
  return true;
}

Value f_int(Evaluator&, const Value& v, CallArgs& a) {
  ArgBinder b(a, "int", {"default", "base"});
  Value dflt = b.get_or(0, Value::integer(0));
  int64_t base = b.get_or(1, Value::integer(10)).i;
  if (v.is_int()) return v;
  if (v.is_bool()) return Value::integer(v.b);
  if (v.is_float()) {
    if (!std::isfinite(v.f) || std::fabs(v.f) >= 9.2e18) return dflt;
    return Value::integer(static_cast<int64_t>(v.f));
  }
  if (v.is_string()) {
    int64_t r;
    if (base >= 2 && base <= 36 && parse_python_int(v.s, base, &r)) return Value::integer(r);
    double d;
    if (parse_python_float(v.s, &d) && std::isfinite(d) && std::fabs(d) < 9.2e18)
      return Value::integer(static_cast<int64_t>(d));
  }
  return dflt;
}

Value f_float(Evaluator&, const Value& v, CallArgs& a) {
  ArgBinder b(a, "float", {"default"});
  if (v.is_number()) return Value::number(v.as_double());
  double d;
  if (v.is_string() && parse_python_float(v.s, &d)) return Value::number(d);
  return b.get_or(0, Value::number(0.0));
}

Value f_list(Evaluator& ev, const Value& v, CallArgs&) { return make_list(ev, ev.iterate(v)); }

Value f_first(Evaluator& ev, const Value& v, CallArgs&) {
  std::vector<Value> items = ev.iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Evaluator& ev, const Value& v, CallArgs&) {
  std::vector<Value> items = ev.iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_unique(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "unique", {"case_sensitive", "attribute"});
  bool cs = b.get_or(0, Value::boolean(false)).truthy();
  std::vector<Value> out, seen;
  for (const Value& item : ev.iterate(v)) {
    ev.charge(seen.size() / 16 + 1);
    Value key = sort_key(b.has(1) ? attribute_path(ev, item, b.get(1)->str()) : item, cs);
    bool dup = std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return values_equal(s, key); });
    if (dup) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return make_list(ev, std::move(out));
}

Value f_reverse(Evaluator& ev, const Value& v, CallArgs&) {
  if (v.is_string()) {
    std::vector<size_t> offs = utf8_offsets(v.s);
    std::string out;
    for (size_t k = offs.size() - 1; k > 0; --k) out.append(v.s, offs[k - 1], offs[k] - offs[k - 1]);
    return Value::string(std::move(out));
  }
  std::vector<Value> items = ev.iterate(v);
  std::reverse(items.begin(), items.end());
  return make_list(ev, std::move(items));
}

Value f_sort(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "sort", {"reverse", "case_sensitive", "attribute"});
  bool reverse = b.get_or(0, Value::boolean(false)).truthy();
  bool cs = b.get_or(1, Value::boolean(false)).truthy();
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : ev.iterate(v)) {
    Value key = sort_key(b.has(2) ? attribute_path(ev, item, b.get(2)->str()) : item, cs);
    keyed.emplace_back(std::move(key), std::move(item));
  }
  ev.charge(keyed.size() * 4);
  sort_values(keyed, reverse);
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::array(std::move(out));
}

Value f_dictsort(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "dictsort", {"case_sensitive", "by", "reverse"});
  IRIS_CHECK(v.is_object() && !v.obj->is_namespace) << "chat template error: dictsort needs a dict";
  bool cs = b.get_or(0, Value::boolean(false)).truthy();
  std::string by = b.get_or(1, Value::string("key")).str();
  IRIS_CHECK(by == "key" || by == "value") << "chat template error: You can only sort by either 'key' or 'value'";
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& [k, x] : v.obj->items)
    keyed.emplace_back(sort_key(by == "key" ? Value::string(k) : x, cs), Value::array({Value::string(k), x}, true));
  ev.charge(keyed.size() * 4);
  sort_values(keyed, b.get_or(2, Value::boolean(false)).truthy());
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::array(std::move(out));
}

std::vector<std::string> splitlines(const std::string& s) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t k = 0; k < s.size(); ++k) {
    char c = s[k];
    if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '\x1c' || c == '\x1d' || c == '\x1e') {
      lines.push_back(s.substr(start, k - start));
      if (c == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
      start = k + 1;
    }
  }
  if (start < s.size()) lines.push_back(s.substr(start));
  return lines;
}

Value f_indent(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "indent", {"width", "first", "blank"});
  Value width = b.get_or(0, Value::integer(4));
  std::string ind = width.is_string() ? width.s : std::string(std::clamp<int64_t>(width.i, 0, 1024), ' ');
  bool first = b.get_or(1, Value::boolean(false)).truthy();
  bool blank = b.get_or(2, Value::boolean(false)).truthy();
  std::vector<std::string> lines = splitlines(v.str() + "\n");
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else if (!lines.empty()) {
    rv = lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : ind) + lines[k];
  }
  if (first) rv = ind + rv;
  ev.check_size(rv.size(), "an indented string");
  return Value::string(std::move(rv));
}

Value f_center(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "center", {"width"});
  std::string s = v.str();
  int64_t width = b.get_or(0, Value::integer(80)).i;
  int64_t len = static_cast<int64_t>(utf8_length(s));
  if (width <= len) return Value::string(s);
  ev.check_size(static_cast<size_t>(width), "a centered string");
  int64_t pad = width - len;
  int64_t left = pad / 2 + (pad & width & 1);
  return Value::string(std::string(left, ' ') + s + std::string(pad - left, ' '));
}

Value f_wordcount(Evaluator&, const Value& v, CallArgs&) {
  std::string s = v.str();
  int64_t n = 0;
  bool in_word = false;
  for (unsigned char c : s) {
    bool w = std::isalnum(c) || c == '_' || c >= 0x80;
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

Value f_round(Evaluator&, const Value& v, CallArgs& a) {
  ArgBinder b(a, "round", {"precision", "method"});
  int64_t precision = std::clamp<int64_t>(b.get_or(0, Value::integer(0)).i, -300, 300);
  std::string method = b.get_or(1, Value::string("common")).str();
  double x = v.as_double();
  double p = std::pow(10.0, static_cast<double>(precision));
  if (method == "ceil") return Value::number(std::ceil(x * p) / p);
  if (method == "floor") return Value::number(std::floor(x * p) / p);
  IRIS_CHECK(method == "common") << "chat template error: method must be common, ceil or floor";
  if (!std::isfinite(x)) return Value::number(x);
  if (precision >= 0 && precision <= 20) {
    // Python's round() is correctly rounded half-to-even on the exact binary value, as printf is.
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(precision), x);
    return Value::number(std::strtod(buf, nullptr));
  }
  return Value::number(std::nearbyint(x * p) / p);
}

Value f_abs(Evaluator&, const Value& v, CallArgs&) {
  if (v.is_int()) {
    IRIS_CHECK(v.i != INT64_MIN) << "chat template error: integer overflow";
    return Value::integer(v.i < 0 ? -v.i : v.i);
  }
  if (v.is_bool()) return Value::integer(v.b);
  if (v.is_float()) return Value::number(std::fabs(v.f));
  fail("chat template error: bad operand type for abs(): '", v.type_name(), "'");
}

Value f_escape(Evaluator& ev, const Value& v, CallArgs&) {
  std::string out;
  for (char c : v.str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  ev.check_size(out.size(), "an escaped string");
  return Value::string(std::move(out));
}

Value f_batch(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "batch", {"linecount", "fill_with"});
  IRIS_CHECK(b.has(0)) << "chat template error: batch needs a line count";
  int64_t n = b.get(0)->is_int() ? b.get(0)->i : 0;
  IRIS_CHECK(n > 0) << "chat template error: batch line count must be positive";
  std::vector<Value> out, cur;
  for (Value& item : ev.iterate(v)) {
    cur.push_back(std::move(item));
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::array(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (b.has(1))
      while (static_cast<int64_t>(cur.size()) < n) {
        ev.charge();
        cur.push_back(*b.get(1));
      }
    out.push_back(Value::array(std::move(cur)));
  }
  return make_list(ev, std::move(out));
}

Value f_sum(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "sum", {"attribute", "start"});
  Value total = b.get_or(1, Value::integer(0));
  for (const Value& item : ev.iterate(v)) {
    Value x = b.has(0) ? attribute_path(ev, item, b.get(0)->str()) : item;
    IRIS_CHECK(total.is_number() && x.is_number()) << "chat template error: sum needs numbers";
    if (!total.is_float() && !x.is_float()) {
      int64_t r;
      IRIS_CHECK(!__builtin_add_overflow(total.is_bool() ? total.b : total.i, x.is_bool() ? x.b : x.i, &r))
          << "chat template error: integer overflow";
      total = Value::integer(r);
    } else {
      total = Value::number(total.as_double() + x.as_double());
    }
  }
  return total;
}

Value min_max(Evaluator& ev, const Value& v, CallArgs& a, bool want_max) {
  ArgBinder b(a, want_max ? "max" : "min", {"case_sensitive", "attribute"});
  bool cs = b.get_or(0, Value::boolean(false)).truthy();
  std::vector<Value> items = ev.iterate(v);
  if (items.empty()) return Value::undefined(std::string("No aggregated item, sequence was empty."));
  const Value* best = &items[0];
  Value best_key = sort_key(b.has(1) ? attribute_path(ev, items[0], b.get(1)->str()) : items[0], cs);
  for (size_t k = 1; k < items.size(); ++k) {
    Value key = sort_key(b.has(1) ? attribute_path(ev, items[k], b.get(1)->str()) : items[k], cs);
    bool better;
    try {
      better = want_max ? values_less(best_key, key) : values_less(key, best_key);
    } catch (const Error& e) {
      fail("chat template error: ", e.what());
    }
    if (better) {
      best = &items[k];
      best_key = key;
    }
  }
  return *best;
}
Value f_min(Evaluator& ev, const Value& v, CallArgs& a) { return min_max(ev, v, a, false); }
Value f_max(Evaluator& ev, const Value& v, CallArgs& a) { return min_max(ev, v, a, true); }

Value f_attr(Evaluator& ev, const Value& v, CallArgs& a) {
  ArgBinder b(a, "attr", {"name"});
  IRIS_CHECK(b.has(0)) << "chat template error: attr needs a name";
  std::string name = b.get(0)->str();
  if (v.is_object() && v.obj->is_namespace) return ev.getattr(v, name);
  Value m = find_method(ev, v, name);
  return m.is_undefined() && !m.safe_error ? Value::undefined("object has no attribute '" + name + "'") : m;
}

Value f_format(Evaluator& ev, const Value& v, CallArgs& a) {
  IRIS_CHECK(a.kw.empty() || a.pos.empty()) << "chat template error: can't handle positional and keyword arguments at the same time";
  Value args = Value::array(a.pos, true);
  return Value::string(py_percent_format(ev, v.str(), args));
}

Value f_pprint(Evaluator&, const Value& v, CallArgs&) { return Value::string(v.repr()); }

Value f_truncate(Evaluator&, const Value& v, CallArgs& a) {
  ArgBinder b(a, "truncate", {"length", "killwords", "end", "leeway"});
  std::string s = v.str();
  int64_t length = b.get_or(0, Value::integer(255)).i;
  bool killwords = b.get_or(1, Value::boolean(false)).truthy();
  std::string end = b.get_or(2, Value::string("...")).str();
  int64_t leeway = b.get_or(3, Value::integer(5)).i;
  std::vector<size_t> offs = utf8_offsets(s);
  int64_t n = static_cast<int64_t>(offs.size()) - 1;
  int64_t end_len = static_cast<int64_t>(utf8_length(end));
  IRIS_CHECK(length >= end_len) << "chat template error: expected length >= " << end_len;
  if (n <= length + leeway) return Value::string(s);
  int64_t cut = std::max<int64_t>(0, length - end_len);
  std::string head = s.substr(0, offs[cut]);
  if (killwords) return Value::string(head + end);
  size_t sp = head.rfind(' ');
  return Value::string((sp == std::string::npos ? head.substr(0, 0) : head.substr(0, sp)) + end);
}

struct NamedFilter {
  const char* name;
  FilterFn fn;
};

constexpr NamedFilter kFilters[] = {
    {"trim", f_trim},         {"tojson", f_tojson},       {"length", f_length},
    {"count", f_length},      {"items", f_items},         {"select", f_select},
    {"reject", f_reject},     {"selectattr", f_selectattr}, {"rejectattr", f_rejectattr},
    {"map", f_map},           {"join", f_join},           {"upper", f_upper},
    {"lower", f_lower},       {"capitalize", f_capitalize}, {"title", f_title},
    {"replace", f_replace},   {"default", f_default},     {"d", f_default},
    {"safe", f_safe},         {"string", f_string},       {"int", f_int},
    {"float", f_float},       {"list", f_list},           {"first", f_first},
    {"last", f_last},         {"unique", f_unique},       {"reverse", f_reverse},
    {"sort", f_sort},         {"dictsort", f_dictsort},   {"indent", f_indent},
    {"center", f_center},     {"wordcount", f_wordcount}, {"round", f_round},
    {"abs", f_abs},           {"escape", f_escape},       {"e", f_escape},
    {"forceescape", f_escape}, {"batch", f_batch},        {"sum", f_sum},
    {"min", f_min},           {"max", f_max},             {"attr", f_attr},
    {"format", f_format},     {"pprint", f_pprint},       {"truncate", f_truncate},
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& f : kFilters)
    if (name == f.name) return f.fn;
  return nullptr;
}

}  // namespace iris::jinja
