// JSON Schema → grammar. Every value rule emits compact JSON tokens separated by the `ws` rule:
// nothing, one space, or one newline followed by up to kMaxIndent spaces or tabs. Objects list
// their properties in schema order (required ones always, optional ones may be left out) and
// never add properties beyond `properties`.
#include "engine/grammar/json_schema.h"

#include <cmath>
#include <map>
#include <set>
#include <string>

#include "engine/core/check.h"
#include "engine/grammar/regex.h"
#include "engine/grammar/utf8.h"

namespace iris::grammar {

namespace {

using json = nlohmann::ordered_json;

constexpr int kMaxIndent = 20;
constexpr long long kMaxBound = 100000000000000000LL;  // 1e17: bounds beyond are refused
constexpr long long kInf = -1;                          // "no upper bound" in the range helpers

const std::set<std::string>& annotation_keywords() {
  static const std::set<std::string> k = {"title",    "description", "default",  "examples",
                                          "$schema",  "$id",         "$comment", "deprecated",
                                          "readOnly", "writeOnly",   "$defs",    "definitions"};
  return k;
}

const std::set<std::string>& supported_keywords() {
  static const std::set<std::string> k = {
      "type",      "properties", "required",  "additionalProperties", "enum",
      "const",     "items",      "prefixItems", "minItems",           "maxItems",
      "anyOf",     "oneOf",      "allOf",     "$ref",                 "minLength",
      "maxLength", "pattern",    "format",    "minimum",              "maximum",
      "exclusiveMinimum", "exclusiveMaximum"};
  return k;
}

class SchemaCompiler {
 public:
  SchemaCompiler(GrammarBuilder& b, const json& root) : b_(b), root_(root) {}

  Symbol compile(const json& s, const std::string& path) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail("JSON Schema at ", where(path), " is `false`: no value is valid");
      return any_value();
    }
    if (!s.is_object()) fail("JSON Schema at ", where(path), " must be an object or a boolean");
    for (const auto& [k, v] : s.items()) {
      if (annotation_keywords().count(k) || supported_keywords().count(k)) continue;
      fail("JSON Schema keyword '", k, "' is not supported (at ", where(path), ")");
    }
    auto only = [&](const char* kw) {
      for (const auto& [k, v] : s.items())
        if (k != kw && !annotation_keywords().count(k))
          fail("JSON Schema keyword '", k, "' alongside '", kw, "' is not supported (at ",
               where(path), ")");
    };
    if (s.contains("$ref")) {
      only("$ref");
      return ref(s["$ref"], path);
    }
    if (s.contains("const")) {
      only("const");
      return b_.rule_of({b_.literal(s["const"].dump())});
    }
    if (s.contains("enum")) {
      const json& e = s["enum"];
      if (!e.is_array() || e.empty()) fail("'enum' at ", where(path), " must be a non-empty array");
      std::vector<Sequence> alts;
      for (const json& v : e)
        if (matches_type(s, v)) alts.push_back(b_.literal(v.dump()));
      if (alts.empty()) fail("no 'enum' value at ", where(path), " has the schema's 'type'");
      return b_.rule_of(std::move(alts));
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw)) continue;
      only(kw);
      const json& list = s[kw];
      if (!list.is_array() || list.empty())
        fail("'", kw, "' at ", where(path), " must be a non-empty array");
      std::vector<Sequence> alts;
      for (size_t i = 0; i < list.size(); ++i)
        alts.push_back({compile(list[i], path + "/" + kw + "/" + std::to_string(i))});
      return b_.rule_of(std::move(alts));
    }
    if (s.contains("allOf")) {
      only("allOf");
      const json& list = s["allOf"];
      if (!list.is_array() || list.size() != 1)
        fail("'allOf' at ", where(path), " is supported with exactly one schema only");
      return compile(list[0], path + "/allOf/0");
    }
    // Types: as given, or inferred from the keywords present.
    std::vector<std::string> types;
    if (s.contains("type")) {
      const json& t = s["type"];
      if (t.is_string()) types.push_back(t.get<std::string>());
      else if (t.is_array())
        for (const json& x : t) {
          if (!x.is_string()) fail("'type' at ", where(path), " must be a string or strings");
          types.push_back(x.get<std::string>());
        }
      else fail("'type' at ", where(path), " must be a string or an array of strings");
      if (types.empty()) fail("'type' at ", where(path), " is empty");
    } else {
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
        types.push_back("object");
      if (s.contains("items") || s.contains("prefixItems") || s.contains("minItems") ||
          s.contains("maxItems"))
        types.push_back("array");
      if (s.contains("minLength") || s.contains("maxLength") || s.contains("pattern") ||
          s.contains("format"))
        types.push_back("string");
      if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
          s.contains("exclusiveMaximum"))
        types.push_back("number");
      if (types.empty()) return any_value();
    }
    std::vector<Sequence> alts;
    for (const std::string& t : types) {
      if (t == "object") alts.push_back({object(s, path)});
      else if (t == "array") alts.push_back({array(s, path)});
      else if (t == "string") alts.push_back({string(s, path)});
      else if (t == "integer") alts.push_back({integer(s, path)});
      else if (t == "number") alts.push_back({number(s, path)});
      else if (t == "boolean") alts.push_back(Sequence{b_.rule_of({b_.literal("true"), b_.literal("false")})});
      else if (t == "null") alts.push_back(b_.literal("null"));
      else fail("unknown JSON Schema type '", t, "' (at ", where(path), ")");
    }
    if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
    return b_.rule_of(std::move(alts));
  }

  Symbol any_value() {
    return b_.shared("json_value", [&] {
      // Forward references: json_object/json_array refer back to json_value.
      return std::vector<Sequence>{{any_object()}, {any_array()}, {any_string()},
                                   {any_number()}, b_.literal("true"), b_.literal("false"),
                                   b_.literal("null")};
    });
  }

  Symbol any_object() {
    return b_.shared("json_object", [&] {
      const Symbol member = b_.rule_of({{any_string(), ws(), b_.byte(':'), ws(), any_value()}});
      return std::vector<Sequence>{object_body(member)};
    });
  }

 private:
  static std::string where(const std::string& path) { return path.empty() ? "/" : path; }

  static bool matches_type(const json& s, const json& v) {
    if (!s.contains("type") || !s["type"].is_string()) return true;
    const std::string t = s["type"];
    if (t == "string") return v.is_string();
    if (t == "integer") return v.is_number_integer() || v.is_number_unsigned();
    if (t == "number") return v.is_number();
    if (t == "boolean") return v.is_boolean();
    if (t == "null") return v.is_null();
    if (t == "object") return v.is_object();
    if (t == "array") return v.is_array();
    return true;
  }

  Symbol ws() {
    return b_.shared("ws", [&] {
      ByteSet indent;
      indent.set(' ');
      indent.set('\t');
      return std::vector<Sequence>{
          {}, b_.literal(" "), {b_.byte('\n'), b_.repeat({b_.byte_class(indent)}, 0, kMaxIndent)}};
    });
  }

  // "{" ws (member (ws "," ws member)* ws)? "}"
  Sequence object_body(Symbol member) {
    const Symbol more = b_.star({ws(), b_.byte(','), ws(), member});
    const Symbol body = b_.optional({member, more, ws()});
    return {b_.byte('{'), ws(), body, b_.byte('}')};
  }

  Symbol any_array() {
    return b_.shared("json_array", [&] {
      const Symbol more = b_.star({ws(), b_.byte(','), ws(), any_value()});
      const Symbol body = b_.optional({any_value(), more, ws()});
      return std::vector<Sequence>{{b_.byte('['), ws(), body, b_.byte(']')}};
    });
  }

  Symbol string_char() {
    return b_.shared("json_char", [&] {
      CodepointSet any;
      any.add(0, kMaxCodepoint);
      // \uXXXX for any code point but a surrogate (a pair would count as two characters here
      // and one for a validator, which would break minLength).
      ByteSet hex, hex_no_d, d, low;
      for (const char* c = "0123456789abcdefABCDEF"; *c; ++c) hex.set(static_cast<uint8_t>(*c));
      hex_no_d = hex;
      hex_no_d.reset('d');
      hex_no_d.reset('D');
      d.set('d');
      d.set('D');
      for (char c = '0'; c <= '7'; ++c) low.set(static_cast<uint8_t>(c));
      const Symbol h = b_.byte_class(hex);
      const Symbol u1 = b_.rule_of({{b_.byte_class(hex_no_d), h, h, h}, {b_.byte_class(d), b_.byte_class(low), h, h}});
      return std::vector<Sequence>{{json_string_char(b_, any)},
                                   {b_.byte('\\'), b_.byte('u'), u1},
                                   b_.literal("\\/")};
    });
  }

  Symbol any_string() {
    return b_.shared("json_string", [&] {
      return std::vector<Sequence>{{b_.byte('"'), b_.star({string_char()}), b_.byte('"')}};
    });
  }

  Symbol any_number() {
    return b_.shared("json_number", [&] {
      return std::vector<Sequence>{{compile_regex(
          b_, "-?(0|[1-9][0-9]{0,18})(\\.[0-9]{1,16})?([eE][+-]?[0-9]{1,3})?")}};
    });
  }

  Symbol ref(const json& r, const std::string& path) {
    if (!r.is_string()) fail("'$ref' at ", where(path), " must be a string");
    const std::string target = r.get<std::string>();
    auto it = refs_.find(target);
    if (it != refs_.end()) return Symbol{true, it->second};
    if (target.empty() || target[0] != '#')
      fail("'$ref' '", target, "' at ", where(path), " is not supported: only local references (#...)");
    const json* node = nullptr;
    try {
      node = &root_.at(json::json_pointer(target.substr(1)));
    } catch (const json::exception&) {
      fail("'$ref' '", target, "' at ", where(path), " does not resolve within the schema");
    }
    const int32_t rule = b_.add_rule("ref " + target);
    refs_[target] = rule;
    const Symbol body = compile(*node, target.substr(1));
    b_.add_alternative(rule, {body});
    return Symbol{true, rule};
  }

  static long long int_of(const json& v, const char* kw, const std::string& path, bool round_up) {
    if (!v.is_number()) fail("'", kw, "' at ", where(path), " must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > static_cast<double>(kMaxBound))
      fail("'", kw, "' at ", where(path), " must be within ±1e17");
    if (v.is_number_integer()) return v.get<long long>();
    return static_cast<long long>(round_up ? std::ceil(d) : std::floor(d));
  }

  // Bounds as [lo, hi] with "none" flags; for integers exclusive bounds become inclusive.
  struct Bounds {
    bool has_lo = false, has_hi = false;
    long long lo = 0, hi = 0;
    bool lo_exclusive = false, hi_exclusive = false;  // numbers only
  };
  Bounds bounds(const json& s, const std::string& path, bool integer) {
    Bounds bd;
    auto check_int = [&](const char* kw) {
      const json& v = s[kw];
      if (!integer && v.is_number_float() && std::floor(v.get<double>()) != v.get<double>())
        fail("'", kw, "' at ", where(path), " for a number must be a whole number (",
             v.dump(), " is not supported)");
    };
    if (s.contains("minimum")) {
      check_int("minimum");
      bd.has_lo = true;
      bd.lo = int_of(s["minimum"], "minimum", path, true);
    }
    if (s.contains("exclusiveMinimum")) {
      check_int("exclusiveMinimum");
      long long v = int_of(s["exclusiveMinimum"], "exclusiveMinimum", path, false);
      if (integer) ++v;
      if (!bd.has_lo || v > bd.lo || (v == bd.lo && !integer)) {
        bd.lo = v;
        bd.lo_exclusive = !integer;
      }
      bd.has_lo = true;
    }
    if (s.contains("maximum")) {
      check_int("maximum");
      bd.has_hi = true;
      bd.hi = int_of(s["maximum"], "maximum", path, false);
    }
    if (s.contains("exclusiveMaximum")) {
      check_int("exclusiveMaximum");
      long long v = int_of(s["exclusiveMaximum"], "exclusiveMaximum", path, true);
      if (integer) --v;
      if (!bd.has_hi || v < bd.hi || (v == bd.hi && !integer)) {
        bd.hi = v;
        bd.hi_exclusive = !integer;
      }
      bd.has_hi = true;
    }
    if (bd.has_lo && bd.has_hi &&
        (bd.lo > bd.hi || (bd.lo == bd.hi && (bd.lo_exclusive || bd.hi_exclusive))))
      fail("the bounds at ", where(path), " admit no value");
    return bd;
  }

  // Fixed-width digit strings from lo to hi (same length, leading zeros allowed).
  std::vector<Sequence> digits_range(const std::string& lo, const std::string& hi) {
    if (lo.empty()) return {{}};
    if (lo == hi) return {b_.literal(lo)};
    const Symbol any = digit_class('0', '9');
    const size_t n = lo.size();
    if (lo.find_first_not_of('0', 1) == std::string::npos &&
        hi.find_first_not_of('9', 1) == std::string::npos) {
      Sequence s{digit_class(lo[0], hi[0])};
      for (size_t k = 1; k < n; ++k) s.push_back(any);
      return {s};
    }
    std::vector<Sequence> out;
    auto with_head = [&](Symbol head, const std::vector<Sequence>& rest) {
      Sequence s{head};
      if (rest.size() == 1) s.insert(s.end(), rest[0].begin(), rest[0].end());
      else s.push_back(b_.rule_of(rest));
      out.push_back(std::move(s));
    };
    if (lo[0] == hi[0]) {
      with_head(b_.byte(static_cast<uint8_t>(lo[0])), digits_range(lo.substr(1), hi.substr(1)));
      return out;
    }
    with_head(b_.byte(static_cast<uint8_t>(lo[0])), digits_range(lo.substr(1), std::string(n - 1, '9')));
    if (lo[0] + 1 <= hi[0] - 1) {
      Sequence s{digit_class(static_cast<char>(lo[0] + 1), static_cast<char>(hi[0] - 1))};
      for (size_t k = 1; k < n; ++k) s.push_back(any);
      out.push_back(std::move(s));
    }
    with_head(b_.byte(static_cast<uint8_t>(hi[0])), digits_range(std::string(n - 1, '0'), hi.substr(1)));
    return out;
  }

  Symbol digit_class(char lo, char hi) {
    ByteSet s;
    for (char c = lo; c <= hi; ++c) s.set(static_cast<uint8_t>(c));
    return b_.byte_class(s);
  }

  // Decimal integers without sign or leading zeros in [lo, hi] (hi = kInf: unbounded, at
  // most 18 digits).
  std::vector<Sequence> uint_range(long long lo, long long hi) {
    std::vector<Sequence> out;
    const std::string slo = std::to_string(lo);
    const size_t max_len = hi == kInf ? 18 : std::to_string(hi).size();
    for (size_t len = slo.size(); len <= max_len; ++len) {
      // The smallest and largest numbers of `len` digits (len <= 18 fits in 64 bits).
      long long first = len == 1 ? 0 : 1, last_of_len = 9;
      for (size_t k = 1; k < len; ++k) first *= 10, last_of_len = last_of_len * 10 + 9;
      const long long a = std::max(lo, first);
      if (hi != kInf && a > hi) break;
      if (hi == kInf && len > slo.size()) {
        Sequence s{digit_class('1', '9')};
        for (size_t k = 1; k < len; ++k) s.push_back(digit_class('0', '9'));
        out.push_back(std::move(s));
        continue;
      }
      const long long z = hi == kInf ? last_of_len : std::min(hi, last_of_len);
      std::string sa = std::to_string(a);
      std::string sz = std::to_string(z);
      for (Sequence& s : digits_range(sa, sz)) out.push_back(std::move(s));
    }
    return out;
  }

  Symbol integer(const json& s, const std::string& path) {
    const Bounds bd = bounds(s, path, true);
    if (!bd.has_lo && !bd.has_hi)
      return b_.shared("json_integer", [&] { return std::vector<Sequence>{{compile_regex(b_, "-?(0|[1-9][0-9]{0,18})")}}; });
    std::vector<Sequence> alts;
    // Non-negative part: [max(lo, 0), hi].
    if (!bd.has_hi || bd.hi >= 0)
      for (Sequence& q : uint_range(bd.has_lo ? std::max(bd.lo, 0LL) : 0, bd.has_hi ? bd.hi : kInf))
        alts.push_back(std::move(q));
    // Negative part: "-" then |x| in [max(1, -hi), -lo].
    if (!bd.has_lo || bd.lo < 0) {
      const long long a = bd.has_hi && bd.hi < 0 ? -bd.hi : 1;
      const long long z = bd.has_lo ? -bd.lo : kInf;
      const Symbol mag = b_.rule_of(uint_range(a, z));
      alts.push_back({b_.byte('-'), mag});
    }
    return b_.rule_of(std::move(alts));
  }

  // Non-negative decimals x = k[.f] with a ≤ x ≤ b (b = kInf: none), where a and b are whole;
  // `a_ex`/`b_ex` make the bound exclusive.
  std::vector<Sequence> udecimal_range(long long a, bool a_ex, long long b, bool b_ex) {
    std::vector<Sequence> out;
    const Symbol frac = b_.optional({b_.byte('.'), b_.repeat({digit_class('0', '9')}, 1, 16)});
    const Symbol zero_frac = b_.optional({b_.byte('.'), b_.repeat({b_.byte('0')}, 1, 16)});
    // Some digit after the point is not zero.
    const Symbol nonzero_frac = b_.rule_of({{b_.byte('.'), b_.repeat({b_.byte('0')}, 0, 15),
                                             digit_class('1', '9'),
                                             b_.repeat({digit_class('0', '9')}, 0, 14)}});
    // k in [a, b-1] with any fraction (k = a only with a nonzero fraction when a is exclusive).
    long long klo = a_ex ? a + 1 : a;
    if (a_ex && (b == kInf || a < b)) {
      Sequence s = b_.literal(std::to_string(a));
      s.push_back(nonzero_frac);
      out.push_back(std::move(s));
    }
    const long long khi = b == kInf ? kInf : b - 1;
    if (khi == kInf || klo <= khi)
      for (Sequence& q : uint_range(klo, khi)) {
        Sequence s{b_.rule_of({q}), frac};
        out.push_back(std::move(s));
      }
    // k = b with a zero fraction, unless b is exclusive.
    if (b != kInf && !b_ex && b >= a && !(b == a && a_ex)) {
      Sequence s = b_.literal(std::to_string(b));
      s.push_back(zero_frac);
      out.push_back(std::move(s));
    }
    return out;
  }

  Symbol number(const json& s, const std::string& path) {
    const Bounds bd = bounds(s, path, false);
    if (!bd.has_lo && !bd.has_hi) return any_number();
    // Without exponents. x ≥ 0: [max(lo,0), hi]; x < 0: "-" |x| with |x| in (0, -lo], ≥ -hi.
    std::vector<Sequence> alts;
    if (!bd.has_hi || bd.hi > 0 || (bd.hi == 0 && !bd.hi_exclusive)) {
      const bool lo_pos = bd.has_lo && bd.lo >= 0;
      for (Sequence& q : udecimal_range(lo_pos ? bd.lo : 0, lo_pos && bd.lo_exclusive,
                                        bd.has_hi ? bd.hi : kInf, bd.hi_exclusive))
        alts.push_back(std::move(q));
    }
    if (!bd.has_lo || bd.lo < 0) {
      const bool hi_neg = bd.has_hi && bd.hi <= 0;
      // |x| in [a, z]: a from hi (exclusive if hi was), excluding zero itself.
      const long long a = hi_neg ? -bd.hi : 0;
      const bool a_ex = hi_neg ? (bd.hi_exclusive || a == 0) : true;
      const long long z = bd.has_lo ? -bd.lo : kInf;
      std::vector<Sequence> mag = udecimal_range(a, a_ex, z, bd.lo_exclusive);
      if (!mag.empty()) alts.push_back({b_.byte('-'), b_.rule_of(std::move(mag))});
    }
    if (alts.empty()) fail("the bounds at ", where(path), " admit no value");
    return b_.rule_of(std::move(alts));
  }

  static int count_of(const json& s, const char* kw, const std::string& path) {
    const json& v = s[kw];
    if (!v.is_number_integer() && !v.is_number_unsigned())
      fail("'", kw, "' at ", where(path), " must be a non-negative integer");
    const long long x = v.get<long long>();
    if (x < 0 || x > 100000) fail("'", kw, "' at ", where(path), " must be in [0, 100000]");
    return static_cast<int>(x);
  }

  Symbol string(const json& s, const std::string& path) {
    const bool has_len = s.contains("minLength") || s.contains("maxLength");
    const int min = s.contains("minLength") ? count_of(s, "minLength", path) : 0;
    const int max = s.contains("maxLength") ? count_of(s, "maxLength", path) : -1;
    if (max >= 0 && max < min) fail("'maxLength' < 'minLength' at ", where(path));
    if (s.contains("format")) {
      if (has_len || s.contains("pattern"))
        fail("'format' together with 'pattern', 'minLength' or 'maxLength' is not supported (at ",
             where(path), ")");
      const json& f = s["format"];
      if (!f.is_string()) fail("'format' at ", where(path), " must be a string");
      return quoted(format(f.get<std::string>(), path));
    }
    if (s.contains("pattern")) {
      if (has_len)
        fail("'pattern' together with 'minLength' or 'maxLength' is not supported (at ",
             where(path), ")");
      const json& p = s["pattern"];
      if (!p.is_string()) fail("'pattern' at ", where(path), " must be a string");
      return quoted(compile_schema_pattern(b_, p.get<std::string>()));
    }
    if (!has_len) return any_string();
    return quoted(b_.repeat({string_char()}, min, max));
  }

  Symbol quoted(Symbol body) { return b_.rule_of({{b_.byte('"'), body, b_.byte('"')}}); }

  Symbol format(const std::string& f, const std::string& path) {
    static const char* kDate =
        "[0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|"
        "02-(0[1-9]|1[0-9]|2[0-8]))";
    static const char* kTime =
        "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
    if (f == "date") return compile_regex(b_, kDate, true);
    if (f == "time") return compile_regex(b_, kTime, true);
    if (f == "date-time") return compile_regex(b_, std::string(kDate) + "T" + kTime, true);
    if (f == "uuid")
      return compile_regex(b_,
                           "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                           true);
    if (f == "email")
      return compile_regex(b_, "[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63}){1,4}",
                           true);
    fail("JSON Schema format '", f, "' is not supported (at ", where(path),
         "); supported: date, time, date-time, uuid, email");
  }

  Symbol object(const json& s, const std::string& path) {
    const json empty = json::object();
    const json& props = s.contains("properties") ? s["properties"] : empty;
    if (!props.is_object()) fail("'properties' at ", where(path), " must be an object");
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail("'required' at ", where(path), " must be an array");
      for (const json& r : s["required"]) {
        if (!r.is_string()) fail("'required' at ", where(path), " must list strings");
        required.insert(r.get<std::string>());
      }
    }
    const json* extra = nullptr;  // additionalProperties as a schema (or true)
    bool extra_allowed = true;
    if (s.contains("additionalProperties")) {
      const json& a = s["additionalProperties"];
      if (a.is_boolean()) extra_allowed = a.get<bool>();
      else if (a.is_object()) extra = &a;
      else fail("'additionalProperties' at ", where(path), " must be a boolean or a schema");
    }
    struct Prop {
      std::string key;
      Symbol value;
      bool required;
    };
    std::vector<Prop> list;
    for (const auto& [k, v] : props.items())
      list.push_back(Prop{k, compile(v, path + "/properties/" + k), required.count(k) > 0});
    for (const std::string& r : required) {
      if (props.contains(r)) continue;
      if (!extra_allowed)
        fail("required property '", r, "' at ", where(path),
             " is not in 'properties' and additionalProperties is false");
      list.push_back(Prop{r, extra ? compile(*extra, path + "/additionalProperties") : any_value(), true});
    }
    if (list.empty()) {
      // A map: any keys (additionalProperties' schema for values), or the empty object.
      if (!extra_allowed) return b_.rule_of({{b_.byte('{'), ws(), b_.byte('}')}});
      const Symbol value = extra ? compile(*extra, path + "/additionalProperties") : any_value();
      const Symbol member = b_.rule_of({{any_string(), ws(), b_.byte(':'), ws(), value}});
      return b_.rule_of({object_body(member)});
    }
    // first[i]: properties i.. when none has been written yet; rest[i]: after one has.
    const size_t n = list.size();
    std::vector<int32_t> first(n + 1), rest(n + 1);
    for (size_t i = 0; i <= n; ++i) {
      first[i] = b_.add_rule("");
      rest[i] = b_.add_rule("");
    }
    b_.add_alternative(first[n], {});
    b_.add_alternative(rest[n], {});
    for (size_t i = n; i-- > 0;) {
      Sequence member = b_.literal(json(list[i].key).dump());
      member.push_back(ws());
      member.push_back(b_.byte(':'));
      member.push_back(ws());
      member.push_back(list[i].value);
      const Symbol m = b_.rule_of({member});
      b_.add_alternative(first[i], {m, Symbol{true, rest[i + 1]}});
      b_.add_alternative(rest[i], {ws(), b_.byte(','), ws(), m, Symbol{true, rest[i + 1]}});
      if (!list[i].required) {
        b_.add_alternative(first[i], {Symbol{true, first[i + 1]}});
        b_.add_alternative(rest[i], {Symbol{true, rest[i + 1]}});
      }
    }
    return b_.rule_of({{b_.byte('{'), ws(), Symbol{true, first[0]}, ws(), b_.byte('}')}});
  }

  Symbol array(const json& s, const std::string& path) {
    std::vector<Symbol> prefix;
    std::optional<Symbol> items;
    bool items_given = false;
    if (s.contains("prefixItems")) {
      const json& p = s["prefixItems"];
      if (!p.is_array()) fail("'prefixItems' at ", where(path), " must be an array");
      for (size_t i = 0; i < p.size(); ++i)
        prefix.push_back(compile(p[i], path + "/prefixItems/" + std::to_string(i)));
    }
    if (s.contains("items")) {
      items_given = true;
      const json& it = s["items"];
      if (it.is_array()) {  // draft-04 tuple form
        if (!prefix.empty()) fail("'items' as an array together with 'prefixItems' at ", where(path));
        for (size_t i = 0; i < it.size(); ++i)
          prefix.push_back(compile(it[i], path + "/items/" + std::to_string(i)));
      } else if (!(it.is_boolean() && !it.get<bool>())) {
        items = compile(it, path + "/items");
      }
    }
    // Without `items`, a tuple stops after its prefix; a plain array takes any values.
    if (!items_given && prefix.empty()) items = any_value();
    const int k = static_cast<int>(prefix.size());
    const int min = s.contains("minItems") ? count_of(s, "minItems", path) : 0;
    int max = s.contains("maxItems") ? count_of(s, "maxItems", path) : -1;
    if (!items) max = max < 0 ? k : std::min(max, k);
    if (max >= 0 && min > max) fail("the array at ", where(path), " cannot have between ", min, " and ", max, " items");
    auto elem = [&](int i) { return i < k ? prefix[i] : *items; };
    const Symbol comma = b_.shared("ws_comma_ws", [&] { return std::vector<Sequence>{{ws(), b_.byte(','), ws()}}; });
    if (max == 0) return b_.rule_of({{b_.byte('['), ws(), b_.byte(']')}});
    // tail(i): items i.. after i items were written.
    const int top = max < 0 ? std::max(k, std::max(min, 1)) : max;
    Symbol tail = max < 0 ? b_.star({comma, *items}) : b_.rule_of({{}});
    for (int i = top - 1; i >= 1; --i) {
      std::vector<Sequence> alts{{comma, elem(i), tail}};
      if (i >= min) alts.push_back({});
      tail = b_.rule_of(std::move(alts));
    }
    std::vector<Sequence> body{{elem(0), tail, ws()}};
    if (min == 0) body.push_back({});
    return b_.rule_of({{b_.byte('['), ws(), b_.rule_of(std::move(body)), b_.byte(']')}});
  }

  GrammarBuilder& b_;
  const json& root_;
  std::map<std::string, int32_t> refs_;
};

}  // namespace

int32_t compile_json_schema(GrammarBuilder& b, const nlohmann::ordered_json& schema) {
  SchemaCompiler c(b, schema);
  const Symbol s = c.compile(schema, "");
  return b.rule_of({{s}}, "root").id;
}

int32_t compile_any_json_object(GrammarBuilder& b) {
  const json schema = json::object();
  SchemaCompiler c(b, schema);
  return b.rule_of({{c.any_object()}}, "root").id;
}

}  // namespace iris::grammar
