// Methods callable on template values (`s.strip()`, `d.items()`, `l.index(x)`), Python's
// str helpers they share with filters, and the builtin globals (range, dict, namespace,
// joiner, cycler). Mutating list/dict methods exist but fail when called, as in jinja2's
// ImmutableSandboxedEnvironment that transformers uses.
#include <algorithm>
#include <cstdio>

#include <utf8proc.h>

#include "engine/chat_template/evaluator.h"
#include "engine/core/check.h"

namespace iris::jinja {
namespace {

bool is_py_space(uint32_t cp) {
  return cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85 ||
         cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

std::vector<uint32_t> decode(std::string_view s) {
  std::vector<uint32_t> cps;
  size_t pos = 0;
  while (pos < s.size()) cps.push_back(utf8_decode_at(s, pos));
  return cps;
}

bool is_cased_upper(uint32_t cp) {
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
  return p->category == UTF8PROC_CATEGORY_LU || p->category == UTF8PROC_CATEGORY_LT;
}
bool is_cased_lower(uint32_t cp) {
  return utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->category == UTF8PROC_CATEGORY_LL;
}
bool is_cased(uint32_t cp) { return is_cased_upper(cp) || is_cased_lower(cp); }
uint32_t to_upper(uint32_t cp) {
  return cp < 0x80 ? (cp >= 'a' && cp <= 'z' ? cp - 32 : cp)
                   : static_cast<uint32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(cp)));
}
uint32_t to_lower(uint32_t cp) {
  return cp < 0x80 ? (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp)
                   : static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}
uint32_t to_title(uint32_t cp) {
  return cp < 0x80 ? to_upper(cp) : static_cast<uint32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(cp)));
}

std::string map_chars(std::string_view s, uint32_t (*f)(uint32_t)) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = pos;
    uint32_t cp = utf8_decode_at(s, pos);
    uint32_t m = f(cp);
    if (m == cp) out.append(s.substr(start, pos - start));
    else utf8_append(out, m);
  }
  return out;
}

const std::string& need_str(const Value& v, const char* what) {
  IRIS_CHECK(v.is_string()) << "chat template error: " << what << " must be str, not " << v.type_name();
  return v.s;
}

int64_t need_int(const Value& v, const char* what) {
  if (v.is_bool()) return v.b;
  IRIS_CHECK(v.is_int()) << "chat template error: " << what << " must be an integer, not " << v.type_name();
  return v.i;
}

// Python str.format for "{}", "{0}", "{name}" and "{{"/"}}" (no format specs).
std::string str_format(const std::string& fmt, CallArgs& args) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t k = 0; k < fmt.size(); ++k) {
    char c = fmt[k];
    if (c == '{' && k + 1 < fmt.size() && fmt[k + 1] == '{') {
      out += '{';
      ++k;
    } else if (c == '}' && k + 1 < fmt.size() && fmt[k + 1] == '}') {
      out += '}';
      ++k;
    } else if (c == '{') {
      size_t end = fmt.find('}', k);
      IRIS_CHECK(end != std::string::npos) << "chat template error: single '{' encountered in format string";
      std::string field = fmt.substr(k + 1, end - k - 1);
      IRIS_CHECK(field.find_first_of(":!") == std::string::npos) << "chat template error: format specs are not supported";
      const Value* v = nullptr;
      if (field.empty()) {
        IRIS_CHECK(auto_idx < args.pos.size()) << "chat template error: format index out of range";
        v = &args.pos[auto_idx++];
      } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
        size_t idx = std::stoul(field.substr(0, 9));
        IRIS_CHECK(idx < args.pos.size()) << "chat template error: format index out of range";
        v = &args.pos[idx];
      } else {
        for (const auto& [name, val] : args.kw)
          if (name == field) v = &val;
        IRIS_CHECK(v) << "chat template error: format key '" << field << "' missing";
      }
      out += v->str();
      k = end;
    } else {
      IRIS_CHECK(c != '}') << "chat template error: single '}' encountered in format string";
      out += c;
    }
  }
  return out;
}

bool prefix_match(const std::string& s, const Value& arg, bool suffix) {
  auto one = [&](const Value& p) {
    const std::string& x = need_str(p, suffix ? "endswith arg" : "startswith arg");
    if (x.size() > s.size()) return false;
    return suffix ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
  };
  if (arg.is_array() && arg.arr->is_tuple) {
    for (const auto& p : arg.arr->items)
      if (one(p)) return true;
    return false;
  }
  return one(arg);
}

Value unsafe_method(const Value& obj, const std::string& name) {
  Value u = Value::undefined("access to attribute '" + name + "' of '" + obj.type_name() + "' object is unsafe.");
  u.safe_error = true;
  return u;
}

Value string_method(Evaluator& ev, const Value& self, const std::string& name) {
  static const char* kNames[] = {"strip", "lstrip", "rstrip", "split", "splitlines", "startswith",
                                 "endswith", "upper", "lower", "title", "capitalize", "replace",
                                 "find", "rfind", "index", "count", "join", "format", "isdigit",
                                 "isalpha", "isalnum", "isspace", "islower", "isupper", "swapcase"};
  if (std::find_if(std::begin(kNames), std::end(kNames), [&](const char* n) { return name == n; }) == std::end(kNames))
    return Value::undefined();
  (void)ev;
  std::string s = self.s;
  return Value::function("str." + name, [s, name](Evaluator& ev, CallArgs& a) -> Value {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      ArgBinder b(a, name.c_str(), {"chars"});
      return Value::string(py_strip(s, b.get(0), name != "rstrip", name != "lstrip"));
    }
    if (name == "split") {
      ArgBinder b(a, "split", {"sep", "maxsplit"});
      Value r = Value::array(py_split(s, b.get(0), b.has(1) ? need_int(*b.get(1), "maxsplit") : -1));
      ev.charge(r.arr->items.size());
      return r;
    }
    if (name == "splitlines") {
      std::vector<Value> lines;
      size_t start = 0;
      for (size_t k = 0; k < s.size(); ++k)
        if (s[k] == '\n' || s[k] == '\r') {
          lines.push_back(Value::string(s.substr(start, k - start)));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
          start = k + 1;
        }
      if (start < s.size()) lines.push_back(Value::string(s.substr(start)));
      return Value::array(std::move(lines));
    }
    if (name == "startswith" || name == "endswith") {
      ArgBinder b(a, name.c_str(), {"prefix"});
      IRIS_CHECK(b.has(0)) << "chat template error: " << name << "() takes at least 1 argument";
      return Value::boolean(prefix_match(s, *b.get(0), name == "endswith"));
    }
    if (name == "upper") return Value::string(py_upper(s));
    if (name == "lower") return Value::string(py_lower(s));
    if (name == "title") return Value::string(py_title(s));
    if (name == "capitalize") return Value::string(py_capitalize(s));
    if (name == "swapcase")
      return Value::string(map_chars(s, [](uint32_t c) { return is_cased_upper(c) ? to_lower(c) : to_upper(c); }));
    if (name == "replace") {
      ArgBinder b(a, "replace", {"old", "new", "count"});
      IRIS_CHECK(b.has(0) && b.has(1)) << "chat template error: replace() takes at least 2 arguments";
      std::string r = py_replace(s, need_str(*b.get(0), "replace arg"), need_str(*b.get(1), "replace arg"),
                                 b.has(2) ? need_int(*b.get(2), "count") : -1);
      ev.check_size(r.size(), "a string");
      return Value::string(std::move(r));
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "count") {
      ArgBinder b(a, name.c_str(), {"sub"});
      IRIS_CHECK(b.has(0)) << "chat template error: " << name << "() takes at least 1 argument";
      const std::string& sub = need_str(*b.get(0), "substring");
      if (name == "count") {
        if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value::integer(n);
      }
      size_t p = name == "rfind" ? s.rfind(sub) : s.find(sub);
      IRIS_CHECK(p != std::string::npos || name != "index") << "chat template error: substring not found";
      return Value::integer(p == std::string::npos ? -1 : static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, p))));
    }
    if (name == "join") {
      ArgBinder b(a, "join", {"iterable"});
      IRIS_CHECK(b.has(0)) << "chat template error: join() takes exactly one argument";
      std::string out;
      bool first = true;
      for (const Value& v : ev.iterate(*b.get(0))) {
        if (!first) out += s;
        first = false;
        out += need_str(v, "sequence item");
        ev.check_size(out.size(), "a string");
      }
      return Value::string(std::move(out));
    }
    if (name == "format") {
      std::string r = str_format(s, a);
      ev.check_size(r.size(), "a string");
      return Value::string(std::move(r));
    }
    std::vector<uint32_t> cps = decode(s);
    auto all = [&](bool (*pred)(uint32_t)) {
      return Value::boolean(!cps.empty() && std::all_of(cps.begin(), cps.end(), pred));
    };
    if (name == "isdigit") return all([](uint32_t c) { return c >= '0' && c <= '9'; });
    if (name == "isspace") return all(is_py_space);
    if (name == "isalpha")
      return all([](uint32_t c) { return c < 0x80 ? std::isalpha(static_cast<int>(c)) != 0 : is_cased(c); });
    if (name == "isalnum")
      return all([](uint32_t c) { return c < 0x80 ? std::isalnum(static_cast<int>(c)) != 0 : is_cased(c); });
    bool any_cased = std::any_of(cps.begin(), cps.end(), is_cased);
    if (name == "islower") return Value::boolean(any_cased && std::none_of(cps.begin(), cps.end(), is_cased_upper));
    return Value::boolean(any_cased && std::none_of(cps.begin(), cps.end(), is_cased_lower));
  });
}

Value dict_method(const Value& self, const std::string& name) {
  auto obj = self.obj;
  if (name == "items" || name == "keys" || name == "values") {
    return Value::function("dict." + name, [obj, name](Evaluator& ev, CallArgs& a) {
      ArgBinder b(a, name.c_str(), {});
      std::vector<Value> out;
      for (const auto& [k, v] : obj->items) {
        if (name == "items") out.push_back(Value::array({Value::string(k), v}, true));
        else if (name == "keys") out.push_back(Value::string(k));
        else out.push_back(v);
      }
      ev.charge(out.size());
      return Value::array(std::move(out));
    });
  }
  if (name == "get") {
    return Value::function("dict.get", [obj](Evaluator&, CallArgs& a) {
      ArgBinder b(a, "get", {"key", "default"});
      IRIS_CHECK(b.has(0)) << "chat template error: get expected at least 1 argument";
      const Value& key = *b.get(0);
      if (key.is_string())
        if (const Value* v = obj->find(key.s)) return *v;
      return b.get_or(1, Value::none());
    });
  }
  if (name == "copy") {
    return Value::function("dict.copy", [obj](Evaluator&, CallArgs&) {
      Value v = Value::object();
      v.obj->items = obj->items;
      return v;
    });
  }
  static const char* kUnsafe[] = {"pop", "popitem", "setdefault", "update", "clear"};
  for (const char* u : kUnsafe)
    if (name == u) return unsafe_method(self, name);
  return Value::undefined();
}

Value list_method(const Value& self, const std::string& name) {
  auto arr = self.arr;
  if (name == "index" || name == "count") {
    return Value::function("list." + name, [arr, name](Evaluator&, CallArgs& a) {
      ArgBinder b(a, name.c_str(), {"value"});
      IRIS_CHECK(b.has(0)) << "chat template error: " << name << "() takes exactly one argument";
      int64_t n = 0;
      for (size_t k = 0; k < arr->items.size(); ++k)
        if (values_equal(arr->items[k], *b.get(0))) {
          if (name == "index") return Value::integer(static_cast<int64_t>(k));
          ++n;
        }
      IRIS_CHECK(name == "count") << "chat template error: value is not in list";
      return Value::integer(n);
    });
  }
  if (name == "copy" && !arr->is_tuple) {
    return Value::function("list.copy", [arr](Evaluator&, CallArgs&) { return Value::array(arr->items); });
  }
  static const char* kUnsafe[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};
  if (!arr->is_tuple)
    for (const char* u : kUnsafe)
      if (name == u) return unsafe_method(self, name);
  return Value::undefined();
}

}  // namespace

Value find_method(Evaluator& ev, const Value& obj, const std::string& name) {
  if (obj.is_string()) return string_method(ev, obj, name);
  if (obj.is_object() && !obj.obj->is_namespace) return dict_method(obj, name);
  if (obj.is_array()) return list_method(obj, name);
  return Value::undefined();
}

std::string py_strip(std::string_view s, const Value* chars, bool left, bool right) {
  std::vector<uint32_t> set;
  bool ws = !chars || chars->is_none();
  if (!ws) set = decode(need_str(*chars, "strip arg"));
  auto strip_cp = [&](uint32_t cp) {
    return ws ? is_py_space(cp) : std::find(set.begin(), set.end(), cp) != set.end();
  };
  std::vector<size_t> offs = utf8_offsets(s);
  size_t n = offs.size() - 1, b = 0, e = n;
  auto cp_at = [&](size_t k) {
    size_t p = offs[k];
    return utf8_decode_at(s, p);
  };
  if (left)
    while (b < e && strip_cp(cp_at(b))) ++b;
  if (right)
    while (e > b && strip_cp(cp_at(e - 1))) --e;
  return std::string(s.substr(offs[b], offs[e] - offs[b]));
}

std::string py_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = pos;
    uint32_t cp = utf8_decode_at(s, pos);
    if (cp == 0xdf) {
      out += "SS";  // the one full (multi-character) case mapping common in real text
      continue;
    }
    uint32_t m = to_upper(cp);
    if (m == cp) out.append(s.substr(start, pos - start));
    else utf8_append(out, m);
  }
  return out;
}
std::string py_lower(std::string_view s) { return map_chars(s, to_lower); }

std::string py_title(std::string_view s) {
  std::string out;
  bool prev_cased = false;
  size_t pos = 0;
  while (pos < s.size()) {
    uint32_t cp = utf8_decode_at(s, pos);
    utf8_append(out, prev_cased ? to_lower(cp) : to_title(cp));
    prev_cased = is_cased(cp);
  }
  return out;
}

std::string py_capitalize(std::string_view s) {
  std::string out;
  size_t pos = 0;
  bool first = true;
  while (pos < s.size()) {
    uint32_t cp = utf8_decode_at(s, pos);
    utf8_append(out, first ? to_title(cp) : to_lower(cp));
    first = false;
  }
  return out;
}

std::string py_replace(std::string_view s, std::string_view from, std::string_view to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` before every code point and at the end.
    int64_t done = 0;
    auto insert = [&] {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
    };
    insert();
    size_t pos = 0;
    while (pos < s.size()) {
      size_t start = pos;
      utf8_decode_at(s, pos);
      out.append(s.substr(start, pos - start));
      insert();
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s.substr(pos));
  return out;
}

std::vector<Value> py_split(std::string_view s, const Value* sep, int64_t maxsplit) {
  std::vector<Value> out;
  if (!sep || sep->is_none()) {
    std::vector<size_t> offs = utf8_offsets(s);
    size_t n = offs.size() - 1, k = 0;
    auto space_at = [&](size_t i) {
      size_t p = offs[i];
      return is_py_space(utf8_decode_at(s, p));
    };
    while (true) {
      while (k < n && space_at(k)) ++k;
      if (k >= n) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        size_t e = n;
        while (e > k && space_at(e - 1)) --e;
        out.push_back(Value::string(std::string(s.substr(offs[k], offs[e] - offs[k]))));
        break;
      }
      size_t start = k;
      while (k < n && !space_at(k)) ++k;
      out.push_back(Value::string(std::string(s.substr(offs[start], offs[k] - offs[start]))));
    }
    return out;
  }
  const std::string& d = need_str(*sep, "separator");
  IRIS_CHECK(!d.empty()) << "chat template error: empty separator";
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    size_t hit = s.find(d, pos);
    if (hit == std::string_view::npos) break;
    out.push_back(Value::string(std::string(s.substr(pos, hit - pos))));
    pos = hit + d.size();
  }
  out.push_back(Value::string(std::string(s.substr(pos))));
  return out;
}

std::string py_percent_format(Evaluator& ev, std::string_view fmt, const Value& args) {
  std::vector<Value> items;
  if (args.is_array() && args.arr->is_tuple) items = args.arr->items;
  else items.push_back(args);
  size_t next = 0;
  std::string out;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%') {
      out += fmt[k];
      continue;
    }
    size_t start = k++;
    while (k < fmt.size() && std::string_view("-+ 0#").find(fmt[k]) != std::string_view::npos) ++k;
    while (k < fmt.size() && ((fmt[k] >= '0' && fmt[k] <= '9') || fmt[k] == '.')) ++k;
    IRIS_CHECK(k < fmt.size()) << "chat template error: incomplete format";
    char conv = fmt[k];
    if (conv == '%') {
      out += '%';
      continue;
    }
    IRIS_CHECK(next < items.size()) << "chat template error: not enough arguments for format string";
    const Value& v = items[next++];
    std::string spec(fmt.substr(start, k - start));
    IRIS_CHECK(spec.size() < 16) << "chat template error: format spec too long";
    char buf[512];
    if (conv == 's' || conv == 'r') {
      std::string str = conv == 's' ? v.str() : v.repr();
      std::snprintf(buf, sizeof(buf), (spec + "s").c_str(), "");
      if (spec.size() > 1) {
        // width/precision on strings: let printf pad a copy when it is small enough
        IRIS_CHECK(str.size() < 256) << "chat template error: padded string too long";
        std::snprintf(buf, sizeof(buf), (spec + "s").c_str(), str.c_str());
        out += buf;
      } else {
        out += str;
      }
    } else if (conv == 'd' || conv == 'i' || conv == 'x' || conv == 'X' || conv == 'o') {
      IRIS_CHECK(v.is_number()) << "chat template error: %" << conv << " format: a number is required";
      long long n = v.is_float() ? static_cast<long long>(v.f) : (v.is_bool() ? v.b : v.i);
      std::snprintf(buf, sizeof(buf), (spec + "ll" + (conv == 'i' ? 'd' : conv)).c_str(), n);
      out += buf;
    } else if (conv == 'f' || conv == 'F' || conv == 'e' || conv == 'E' || conv == 'g' || conv == 'G') {
      IRIS_CHECK(v.is_number()) << "chat template error: %" << conv << " format: a number is required";
      std::snprintf(buf, sizeof(buf), (spec + conv).c_str(), v.as_double());
      out += buf;
    } else {
      fail("chat template error: unsupported format character '", conv, "'");
    }
    ev.check_size(out.size(), "a string");
  }
  IRIS_CHECK(next >= items.size() || !(args.is_array() && args.arr->is_tuple))
      << "chat template error: not all arguments converted during string formatting";
  return out;
}

void add_builtin_globals(Frame& g) {
  g.set("range", Value::function("range", [](Evaluator& ev, CallArgs& a) {
    IRIS_CHECK(a.kw.empty() && !a.pos.empty() && a.pos.size() <= 3)
        << "chat template error: range expected 1 to 3 integer arguments";
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = need_int(a.pos[0], "range argument");
    } else {
      start = need_int(a.pos[0], "range argument");
      stop = need_int(a.pos[1], "range argument");
      if (a.pos.size() == 3) step = need_int(a.pos[2], "range argument");
    }
    IRIS_CHECK(step != 0) << "chat template error: range() arg 3 must not be zero";
    // jinja2's sandbox refuses ranges over MAX_RANGE (100000) items.
    long double count = step > 0 ? (static_cast<long double>(stop) - start + step - 1) / step
                                 : (static_cast<long double>(start) - stop - step - 1) / -step;
    IRIS_CHECK(count <= 100000) << "chat template error: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).";
    std::vector<Value> out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
      out.push_back(Value::integer(k));
      if (__builtin_add_overflow(k, step, &k)) break;
    }
    ev.charge(out.size());
    return Value::array(std::move(out));
  }));
  g.set("dict", Value::function("dict", [](Evaluator&, CallArgs& a) {
    Value d = Value::object();
    for (const auto& p : a.pos) {
      IRIS_CHECK(p.is_object()) << "chat template error: dict() positional argument must be a dict";
      for (const auto& [k, v] : p.obj->items) d.obj->set(k, v);
    }
    for (const auto& [k, v] : a.kw) d.obj->set(k, v);
    return d;
  }));
  g.set("namespace", Value::function("namespace", [](Evaluator& ev, CallArgs& a) {
    Value ns = ev.make_namespace();
    for (const auto& p : a.pos) {
      IRIS_CHECK(p.is_object()) << "chat template error: namespace() positional argument must be a dict";
      for (const auto& [k, v] : p.obj->items) ns.obj->set(k, v);
    }
    for (const auto& [k, v] : a.kw) ns.obj->set(k, v);
    return ns;
  }));
  g.set("joiner", Value::function("joiner", [](Evaluator&, CallArgs& a) {
    ArgBinder b(a, "joiner", {"sep"});
    std::string sep = b.get_or(0, Value::string(", ")).str();
    auto used = std::make_shared<bool>(false);
    return Value::function("joiner", [sep, used](Evaluator&, CallArgs&) {
      if (!*used) {
        *used = true;
        return Value::string("");
      }
      return Value::string(sep);
    });
  }));
}

}  // namespace iris::jinja
