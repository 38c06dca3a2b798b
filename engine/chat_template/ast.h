// Syntax tree of a parsed Jinja template. Every node records its source line and its depth
// (1 + deepest child), so the parser can refuse trees deeper than the recursion cap before
// anything walks them recursively (evaluation and destruction alike).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat_template/value.h"

namespace iris::jinja {

enum class ExprKind {
  kLiteral, kName, kList, kDict, kUnary, kBinary, kCompare, kCond, kGetAttr, kGetItem, kSlice,
  kCall, kFilter, kTest
};

struct Expr {
  explicit Expr(ExprKind k) : kind(k) {}
  virtual ~Expr() = default;
  ExprKind kind;
  int line = 0;
  int depth = 1;
};
using ExprPtr = std::unique_ptr<Expr>;

struct KeywordArg {
  std::string name;
  ExprPtr value;
};

struct LiteralExpr : Expr {
  LiteralExpr() : Expr(ExprKind::kLiteral) {}
  Value value;
};
struct NameExpr : Expr {
  NameExpr() : Expr(ExprKind::kName) {}
  std::string name;
};
struct ListExpr : Expr {
  ListExpr() : Expr(ExprKind::kList) {}
  std::vector<ExprPtr> items;
  bool is_tuple = false;
};
struct DictExpr : Expr {
  DictExpr() : Expr(ExprKind::kDict) {}
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};
enum class UnaryOp { kNot, kNeg, kPos };
struct UnaryExpr : Expr {
  UnaryExpr() : Expr(ExprKind::kUnary) {}
  UnaryOp op = UnaryOp::kNot;
  ExprPtr operand;
};
enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat, kAnd, kOr };
struct BinaryExpr : Expr {
  BinaryExpr() : Expr(ExprKind::kBinary) {}
  BinaryOp op = BinaryOp::kAdd;
  ExprPtr lhs, rhs;
};
enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };
struct CompareExpr : Expr {
  CompareExpr() : Expr(ExprKind::kCompare) {}
  ExprPtr first;
  std::vector<std::pair<CompareOp, ExprPtr>> rest;
};
struct CondExpr : Expr {
  CondExpr() : Expr(ExprKind::kCond) {}
  ExprPtr cond, then_expr, else_expr;  // else_expr may be null (yields undefined)
};
struct GetAttrExpr : Expr {
  GetAttrExpr() : Expr(ExprKind::kGetAttr) {}
  ExprPtr object;
  std::string name;
};
struct GetItemExpr : Expr {
  GetItemExpr() : Expr(ExprKind::kGetItem) {}
  ExprPtr object, key;
};
struct SliceExpr : Expr {
  SliceExpr() : Expr(ExprKind::kSlice) {}
  ExprPtr object, start, stop, step;  // each bound may be null
};
struct CallExpr : Expr {
  CallExpr() : Expr(ExprKind::kCall) {}
  ExprPtr callee;
  std::vector<ExprPtr> args;
  std::vector<KeywordArg> kwargs;
};
// `subject | name(args)`; also `subject is [not] name(args)` for tests.
struct FilterExpr : Expr {
  explicit FilterExpr(ExprKind k = ExprKind::kFilter) : Expr(k) {}
  ExprPtr subject;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<KeywordArg> kwargs;
  bool negated = false;  // tests only
};

enum class StmtKind {
  kText, kOutput, kIf, kFor, kSet, kBlockSet, kMacro, kCallBlock, kFilterBlock, kWith, kBreak,
  kContinue, kScope
};

struct Stmt {
  explicit Stmt(StmtKind k) : kind(k) {}
  virtual ~Stmt() = default;
  StmtKind kind;
  int line = 0;
  int depth = 1;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Left-hand side of set/for: a name, `ns.attr`, or a tuple of names.
struct Target {
  std::vector<std::string> names;  // one entry for a plain name
  std::string attr;                // non-empty for `name.attr`
  bool is_tuple = false;
};

struct TextStmt : Stmt {
  TextStmt() : Stmt(StmtKind::kText) {}
  std::string text;
};
struct OutputStmt : Stmt {
  OutputStmt() : Stmt(StmtKind::kOutput) {}
  ExprPtr expr;
};
struct IfStmt : Stmt {
  IfStmt() : Stmt(StmtKind::kIf) {}
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body else_body;
};
struct ForStmt : Stmt {
  ForStmt() : Stmt(StmtKind::kFor) {}
  Target target;
  ExprPtr iter, filter;
  Body body, else_body;
};
struct SetStmt : Stmt {
  SetStmt() : Stmt(StmtKind::kSet) {}
  Target target;
  ExprPtr value;
};
// `{% set x | filters %}body{% endset %}`; `filter` wraps a placeholder name when present.
struct BlockSetStmt : Stmt {
  BlockSetStmt() : Stmt(StmtKind::kBlockSet) {}
  Target target;
  ExprPtr filter;
  Body body;
};
struct MacroParam {
  std::string name;
  ExprPtr default_value;  // may be null
};
struct MacroStmt : Stmt {
  MacroStmt() : Stmt(StmtKind::kMacro) {}
  std::string name;
  std::vector<MacroParam> params;
  Body body;
};
struct CallBlockStmt : Stmt {
  CallBlockStmt() : Stmt(StmtKind::kCallBlock) {}
  std::vector<MacroParam> caller_params;
  ExprPtr call;
  Body body;
};
struct FilterBlockStmt : Stmt {
  FilterBlockStmt() : Stmt(StmtKind::kFilterBlock) {}
  ExprPtr filter;  // filter chain applied to the placeholder name
  Body body;
};
struct WithStmt : Stmt {
  WithStmt() : Stmt(StmtKind::kWith) {}
  std::vector<std::pair<Target, ExprPtr>> assignments;
  Body body;
};
// `{% generation %}` and other bodies rendered in the enclosing scope.
struct ScopeStmt : Stmt {
  ScopeStmt() : Stmt(StmtKind::kScope) {}
  Body body;
};

// The name that filter blocks and filtered block sets bind their rendered body to.
inline constexpr const char* kFilterSubject = "\x01filter_subject";

}  // namespace iris::jinja
