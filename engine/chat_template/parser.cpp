// Jinja parser: statements (for/if/set/macro/call/filter/with/generation/break/continue) and
// expressions. Each node's depth is computed as it is built and checked against the cap.
#include "engine/chat_template/parser.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include "engine/core/check.h"

namespace iris::jinja {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const ParseOptions& opts)
      : toks_(std::move(tokens)), max_depth_(opts.max_depth) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, &end);
    IRIS_CHECK(cur().type == TokenType::kEof) << at() << "unexpected tag";
    return body;
  }

 private:
  // Counts parser recursion; nesting past the cap fails instead of exhausting the stack.
  struct Guard {
    explicit Guard(Parser* p) : p(p) {
      if (++p->recursion_ > p->max_depth_)
        fail("chat template: nesting deeper than the recursion depth cap (max_depth=", p->max_depth_,
             ") near line ", p->cur().line);
    }
    ~Guard() { --p->recursion_; }
    Parser* p;
  };

  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  std::string at() const { return "chat template line " + std::to_string(cur().line) + ": "; }
  bool is_op(const char* op) const { return cur().type == TokenType::kOp && cur().value == op; }
  bool is_name(const char* name) const { return cur().type == TokenType::kName && cur().value == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  void expect_op(const char* op) {
    IRIS_CHECK(is_op(op)) << at() << "expected '" << op << "', got '" << describe() << "'";
    advance();
  }
  std::string expect_name() {
    IRIS_CHECK(cur().type == TokenType::kName) << at() << "expected a name, got '" << describe() << "'";
    std::string n = cur().value;
    advance();
    return n;
  }
  void expect_block_end() {
    IRIS_CHECK(cur().type == TokenType::kBlockEnd) << at() << "expected end of statement block, got '" << describe() << "'";
    advance();
  }
  std::string describe() const {
    switch (cur().type) {
      case TokenType::kEof: return "end of template";
      case TokenType::kBlockEnd: return "%}";
      case TokenType::kVarEnd: return "}}";
      case TokenType::kText: return "text";
      default: return cur().value;
    }
  }

  template <typename T>
  std::unique_ptr<T> make() {
    auto n = std::make_unique<T>();
    n->line = cur().line;
    return n;
  }
  // Sets node depth from its children and enforces the cap.
  template <typename N>
  void finish(N& node, std::initializer_list<int> child_depths) {
    int d = 0;
    for (int c : child_depths) d = std::max(d, c);
    node.depth = d + 1;
    if (node.depth > max_depth_)
      fail("chat template: expression or block nesting exceeds the recursion depth cap (max_depth=",
           max_depth_, ") at line ", node.line);
  }
  static int dep(const ExprPtr& e) { return e ? e->depth : 0; }
  static int dep(const Body& b) {
    int d = 0;
    for (const auto& s : b) d = std::max(d, s->depth);
    return d;
  }

  // ---- statements ---------------------------------------------------------------------

  Body parse_body(std::initializer_list<const char*> stops, std::string* stopped_at) {
    Guard g(this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::kEof) {
        IRIS_CHECK(stops.size() == 0) << at() << "unexpected end of template, expected '" << *stops.begin() << "'";
        return body;
      }
      if (t.type == TokenType::kText) {
        auto n = make<TextStmt>();
        n->text = t.value;
        body.push_back(std::move(n));
        advance();
      } else if (t.type == TokenType::kVarBegin) {
        advance();
        auto n = make<OutputStmt>();
        n->expr = parse_tuple(true, {});
        finish(*n, {dep(n->expr)});
        IRIS_CHECK(cur().type == TokenType::kVarEnd) << at() << "expected '}}', got '" << describe() << "'";
        advance();
        body.push_back(std::move(n));
      } else if (t.type == TokenType::kBlockBegin) {
        const Token& kw = peek();
        IRIS_CHECK(kw.type == TokenType::kName) << at() << "expected a statement name";
        for (const char* s : stops)
          if (kw.value == s) {
            *stopped_at = s;
            advance();  // block begin
            advance();  // keyword
            return body;
          }
        advance();
        body.push_back(parse_statement());
      } else {
        fail(at(), "unexpected '", describe(), "'");
      }
    }
  }

  StmtPtr parse_statement() {
    Guard g(this);
    std::string kw = expect_name();
    if (kw == "for") return parse_for();
    if (kw == "if") return parse_if();
    if (kw == "set") return parse_set();
    if (kw == "macro") return parse_macro();
    if (kw == "call") return parse_call_block();
    if (kw == "filter") return parse_filter_block();
    if (kw == "with") return parse_with();
    if (kw == "generation") {
      auto n = make<ScopeStmt>();
      expect_block_end();
      std::string end;
      n->body = parse_body({"endgeneration"}, &end);
      expect_block_end();
      finish(*n, {dep(n->body)});
      return n;
    }
    if (kw == "break" || kw == "continue") {
      StmtPtr n = kw == "break" ? StmtPtr(new Stmt(StmtKind::kBreak)) : StmtPtr(new Stmt(StmtKind::kContinue));
      n->line = cur().line;
      IRIS_CHECK(loop_depth_ > 0) << at() << "'" << kw << "' outside of a loop";
      expect_block_end();
      return n;
    }
    fail(at(), "unknown or unsupported tag '", kw, "'");
  }

  Target parse_target(bool allow_attr, const char* end_name) {
    Target t;
    bool parens = skip_op("(");
    t.names.push_back(expect_name());
    if (allow_attr && !parens && skip_op(".")) {
      t.attr = expect_name();
      return t;
    }
    while (skip_op(",")) {
      t.is_tuple = true;
      if (parens ? is_op(")") : (end_name ? is_name(end_name) : is_op("="))) break;
      t.names.push_back(expect_name());
    }
    if (parens) {
      expect_op(")");
      t.is_tuple = true;
    }
    return t;
  }

  StmtPtr parse_for() {
    auto n = make<ForStmt>();
    n->target = parse_target(false, "in");
    IRIS_CHECK(skip_name("in")) << at() << "expected 'in' in for loop";
    n->iter = parse_tuple(false, {"recursive"});
    if (skip_name("if")) n->filter = parse_expression();
    IRIS_CHECK(!is_name("recursive")) << at() << "recursive loops are not supported";
    expect_block_end();
    ++loop_depth_;
    std::string end;
    n->body = parse_body({"endfor", "else"}, &end);
    --loop_depth_;
    if (end == "else") {
      expect_block_end();
      n->else_body = parse_body({"endfor"}, &end);
    }
    expect_block_end();
    finish(*n, {dep(n->iter), dep(n->filter), dep(n->body), dep(n->else_body)});
    return n;
  }

  StmtPtr parse_if() {
    auto n = make<IfStmt>();
    int d = 0;
    while (true) {
      ExprPtr cond = parse_tuple(true, {});
      expect_block_end();
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, &end);
      d = std::max({d, dep(cond), dep(body)});
      n->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        n->else_body = parse_body({"endif"}, &end);
        d = std::max(d, dep(n->else_body));
      }
      expect_block_end();
      break;
    }
    finish(*n, {d});
    return n;
  }

  StmtPtr parse_set() {
    int line = cur().line;
    Target target = parse_target(true, nullptr);
    if (skip_op("=")) {
      auto n = make<SetStmt>();
      n->line = line;
      n->target = std::move(target);
      n->value = parse_tuple(true, {});
      expect_block_end();
      finish(*n, {dep(n->value)});
      return n;
    }
    auto n = make<BlockSetStmt>();
    n->line = line;
    IRIS_CHECK(!target.is_tuple) << at() << "block set needs a single name";
    n->target = std::move(target);
    if (is_op("|")) n->filter = parse_filter_chain(placeholder());
    expect_block_end();
    std::string end;
    n->body = parse_body({"endset"}, &end);
    expect_block_end();
    finish(*n, {dep(n->filter), dep(n->body)});
    return n;
  }

  std::vector<MacroParam> parse_params() {
    std::vector<MacroParam> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression();
      params.push_back(std::move(p));
    }
    advance();
    return params;
  }

  StmtPtr parse_macro() {
    auto n = make<MacroStmt>();
    n->name = expect_name();
    n->params = parse_params();
    expect_block_end();
    int saved_loop = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    n->body = parse_body({"endmacro"}, &end);
    loop_depth_ = saved_loop;
    if (cur().type == TokenType::kName) advance();  // optional `endmacro name`
    expect_block_end();
    int d = dep(n->body);
    for (const auto& p : n->params) d = std::max(d, dep(p.default_value));
    finish(*n, {d});
    return n;
  }

  StmtPtr parse_call_block() {
    auto n = make<CallBlockStmt>();
    if (is_op("(")) n->caller_params = parse_params();
    n->call = parse_expression();
    IRIS_CHECK(n->call->kind == ExprKind::kCall) << at() << "expected a call after 'call'";
    expect_block_end();
    std::string end;
    n->body = parse_body({"endcall"}, &end);
    expect_block_end();
    finish(*n, {dep(n->call), dep(n->body)});
    return n;
  }

  StmtPtr parse_filter_block() {
    auto n = make<FilterBlockStmt>();
    n->filter = parse_filter_chain(placeholder(), /*leading_pipe=*/false);
    expect_block_end();
    std::string end;
    n->body = parse_body({"endfilter"}, &end);
    expect_block_end();
    finish(*n, {dep(n->filter), dep(n->body)});
    return n;
  }

  StmtPtr parse_with() {
    auto n = make<WithStmt>();
    int d = 0;
    while (cur().type != TokenType::kBlockEnd) {
      if (!n->assignments.empty()) expect_op(",");
      Target t = parse_target(false, nullptr);
      expect_op("=");
      ExprPtr value = parse_expression();
      d = std::max(d, dep(value));
      n->assignments.emplace_back(std::move(t), std::move(value));
    }
    expect_block_end();
    std::string end;
    n->body = parse_body({"endwith"}, &end);
    expect_block_end();
    finish(*n, {d, dep(n->body)});
    return n;
  }

  ExprPtr placeholder() {
    auto p = make<NameExpr>();
    p->name = kFilterSubject;
    return p;
  }

  // ---- expressions --------------------------------------------------------------------

  bool is_tuple_end(std::initializer_list<const char*> extra_end) const {
    if (cur().type == TokenType::kVarEnd || cur().type == TokenType::kBlockEnd ||
        cur().type == TokenType::kEof || is_op(")"))
      return true;
    for (const char* e : extra_end)
      if (is_name(e)) return true;
    return false;
  }

  // Comma-separated expressions; a trailing or inner comma makes a tuple.
  ExprPtr parse_tuple(bool with_cond, std::initializer_list<const char*> extra_end, bool explicit_parens = false) {
    Guard g(this);
    int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(with_cond ? parse_expression() : parse_or());
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      IRIS_CHECK(explicit_parens) << at() << "expected an expression, got '" << describe() << "'";
    }
    auto n = std::make_unique<ListExpr>();
    n->line = line;
    n->is_tuple = true;
    int d = 0;
    for (const auto& e : items) d = std::max(d, dep(e));
    n->items = std::move(items);
    finish(*n, {d});
    return n;
  }

  ExprPtr parse_expression() {
    Guard g(this);
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      auto n = make<CondExpr>();
      advance();
      n->cond = parse_or();
      if (skip_name("else")) n->else_expr = parse_expression();
      n->then_expr = std::move(expr);
      finish(*n, {dep(n->cond), dep(n->then_expr), dep(n->else_expr)});
      expr = std::move(n);
    }
    return expr;
  }

  ExprPtr binary(BinaryOp op, ExprPtr lhs, ExprPtr rhs) {
    auto n = make<BinaryExpr>();
    n->op = op;
    finish(*n, {dep(lhs), dep(rhs)});
    n->lhs = std::move(lhs);
    n->rhs = std::move(rhs);
    return n;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (skip_name("or")) e = binary(BinaryOp::kOr, std::move(e), parse_and());
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (skip_name("and")) e = binary(BinaryOp::kAnd, std::move(e), parse_not());
    return e;
  }
  ExprPtr parse_not() {
    Guard g(this);
    if (is_name("not")) {
      auto n = make<UnaryExpr>();
      advance();
      n->op = UnaryOp::kNot;
      n->operand = parse_not();
      finish(*n, {dep(n->operand)});
      return n;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    std::unique_ptr<CompareExpr> cmp;
    while (true) {
      CompareOp op;
      if (is_op("==")) op = CompareOp::kEq;
      else if (is_op("!=")) op = CompareOp::kNe;
      else if (is_op("<")) op = CompareOp::kLt;
      else if (is_op("<=")) op = CompareOp::kLe;
      else if (is_op(">")) op = CompareOp::kGt;
      else if (is_op(">=")) op = CompareOp::kGe;
      else if (is_name("in")) op = CompareOp::kIn;
      else if (is_name("not") && peek().type == TokenType::kName && peek().value == "in") {
        advance();
        op = CompareOp::kNotIn;
      } else {
        break;
      }
      advance();
      if (!cmp) {
        cmp = make<CompareExpr>();
        cmp->first = std::move(first);
        cmp->depth = dep(cmp->first);
      }
      ExprPtr rhs = parse_math1();
      int d = std::max(cmp->depth, dep(rhs));
      cmp->rest.emplace_back(op, std::move(rhs));
      finish(*cmp, {d});
    }
    if (cmp) return cmp;
    return first;
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      BinaryOp op = is_op("+") ? BinaryOp::kAdd : BinaryOp::kSub;
      advance();
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (skip_op("~")) e = binary(BinaryOp::kConcat, std::move(e), parse_math2());
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (true) {
      BinaryOp op;
      if (is_op("*")) op = BinaryOp::kMul;
      else if (is_op("/")) op = BinaryOp::kDiv;
      else if (is_op("//")) op = BinaryOp::kFloorDiv;
      else if (is_op("%")) op = BinaryOp::kMod;
      else break;
      advance();
      e = binary(op, std::move(e), parse_pow());
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (skip_op("**")) e = binary(BinaryOp::kPow, std::move(e), parse_unary(true));
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    Guard g(this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto n = make<UnaryExpr>();
      n->op = is_op("-") ? UnaryOp::kNeg : UnaryOp::kPos;
      advance();
      n->operand = parse_unary(false);
      finish(*n, {dep(n->operand)});
      node = std::move(n);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    Guard g(this);
    const Token& t = cur();
    if (t.type == TokenType::kName) {
      auto lit = make<LiteralExpr>();
      if (t.value == "true" || t.value == "True") lit->value = Value::boolean(true);
      else if (t.value == "false" || t.value == "False") lit->value = Value::boolean(false);
      else if (t.value == "none" || t.value == "None") lit->value = Value::none();
      else {
        auto n = make<NameExpr>();
        n->name = t.value;
        advance();
        return n;
      }
      advance();
      return lit;
    }
    if (t.type == TokenType::kString) {
      auto lit = make<LiteralExpr>();
      std::string s;
      while (cur().type == TokenType::kString) {
        s += cur().value;
        advance();
      }
      lit->value = Value::string(std::move(s));
      return lit;
    }
    if (t.type == TokenType::kInt || t.type == TokenType::kFloat) {
      auto lit = make<LiteralExpr>();
      errno = 0;
      if (t.type == TokenType::kInt) {
        long long v = std::strtoll(t.value.c_str(), nullptr, 10);
        IRIS_CHECK(errno != ERANGE) << at() << "integer literal too large: " << t.value;
        lit->value = Value::integer(v);
      } else {
        lit->value = Value::number(std::strtod(t.value.c_str(), nullptr));
      }
      advance();
      return lit;
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      auto n = make<ListExpr>();
      advance();
      int d = 0;
      while (!is_op("]")) {
        if (!n->items.empty()) expect_op(",");
        if (is_op("]")) break;
        n->items.push_back(parse_expression());
        d = std::max(d, dep(n->items.back()));
      }
      advance();
      finish(*n, {d});
      return n;
    }
    if (is_op("{")) {
      auto n = make<DictExpr>();
      advance();
      int d = 0;
      while (!is_op("}")) {
        if (!n->items.empty()) expect_op(",");
        if (is_op("}")) break;
        ExprPtr k = parse_expression();
        expect_op(":");
        ExprPtr v = parse_expression();
        d = std::max({d, dep(k), dep(v)});
        n->items.emplace_back(std::move(k), std::move(v));
      }
      advance();
      finish(*n, {d});
      return n;
    }
    fail(at(), "unexpected '", describe(), "'");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        advance();
        if (cur().type == TokenType::kInt) {
          auto n = make<GetItemExpr>();
          auto key = make<LiteralExpr>();
          key->value = Value::integer(std::strtoll(cur().value.c_str(), nullptr, 10));
          advance();
          n->key = std::move(key);
          finish(*n, {dep(node)});
          n->object = std::move(node);
          node = std::move(n);
        } else {
          auto n = make<GetAttrExpr>();
          n->name = expect_name();
          finish(*n, {dep(node)});
          n->object = std::move(node);
          node = std::move(n);
        }
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object) {
    advance();  // [
    ExprPtr start, stop, step;
    bool is_slice = false;
    if (!is_op(":")) start = parse_tuple(true, {});
    if (skip_op(":")) {
      is_slice = true;
      if (!is_op("]") && !is_op(":")) stop = parse_expression();
      if (skip_op(":") && !is_op("]")) step = parse_expression();
    }
    expect_op("]");
    if (!is_slice) {
      auto n = make<GetItemExpr>();
      finish(*n, {dep(object), dep(start)});
      n->object = std::move(object);
      n->key = std::move(start);
      return n;
    }
    auto n = make<SliceExpr>();
    finish(*n, {dep(object), dep(start), dep(stop), dep(step)});
    n->object = std::move(object);
    n->start = std::move(start);
    n->stop = std::move(stop);
    n->step = std::move(step);
    return n;
  }

  // Reads `(args, name=value)` into the given vectors; returns the deepest argument.
  int parse_args(std::vector<ExprPtr>& args, std::vector<KeywordArg>& kwargs) {
    expect_op("(");
    int d = 0;
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      IRIS_CHECK(!is_op("*") && !is_op("**")) << at() << "*args/**kwargs call syntax is not supported";
      if (cur().type == TokenType::kName && peek().type == TokenType::kOp && peek().value == "=") {
        KeywordArg kw;
        kw.name = cur().value;
        advance();
        advance();
        kw.value = parse_expression();
        d = std::max(d, dep(kw.value));
        kwargs.push_back(std::move(kw));
      } else {
        IRIS_CHECK(kwargs.empty()) << at() << "positional argument follows keyword argument";
        args.push_back(parse_expression());
        d = std::max(d, dep(args.back()));
      }
    }
    advance();
    return d;
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto n = make<CallExpr>();
    int d = parse_args(n->args, n->kwargs);
    finish(*n, {d, dep(callee)});
    n->callee = std::move(callee);
    return n;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter_chain(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  // One or more `| name(args)` applied to `subject`.
  ExprPtr parse_filter_chain(ExprPtr subject, bool leading_pipe = true) {
    bool first = true;
    while (first ? (!leading_pipe || is_op("|")) : is_op("|")) {
      if (!first || leading_pipe) advance();
      first = false;
      auto n = make<FilterExpr>();
      n->name = expect_name();
      while (skip_op(".")) {
        n->name += '.';
        n->name += expect_name();
      }
      int d = 0;
      if (is_op("(")) d = parse_args(n->args, n->kwargs);
      finish(*n, {d, dep(subject)});
      n->subject = std::move(subject);
      subject = std::move(n);
    }
    return subject;
  }

  ExprPtr parse_test(ExprPtr subject) {
    advance();  // is
    auto n = std::make_unique<FilterExpr>(ExprKind::kTest);
    n->line = cur().line;
    n->negated = skip_name("not");
    n->name = expect_name();
    while (skip_op(".")) {
        n->name += '.';
        n->name += expect_name();
      }
    int d = 0;
    if (is_op("(")) {
      d = parse_args(n->args, n->kwargs);
    } else if ((cur().type == TokenType::kName || cur().type == TokenType::kString ||
                cur().type == TokenType::kInt || cur().type == TokenType::kFloat || is_op("(") ||
                is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      IRIS_CHECK(!is_name("is")) << at() << "You cannot chain multiple tests with is";
      ExprPtr arg = parse_postfix(parse_primary());
      d = dep(arg);
      n->args.push_back(std::move(arg));
    }
    finish(*n, {d, dep(subject)});
    n->subject = std::move(subject);
    return n;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int max_depth_;
  int recursion_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body parse_template(std::string_view source, const ParseOptions& opts) {
  return Parser(tokenize(source, opts.lex), opts).parse_all();
}

}  // namespace iris::jinja
