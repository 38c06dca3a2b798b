// A request's outcome in protocol-neutral terms. The gRPC front door maps a Code to a gRPC
// status code, the HTTP front door to an HTTP status and OpenAI's error type.
#pragma once

#include <string>
#include <utility>

namespace iris::server {

enum class Code {
  kOk,
  kInvalidArgument,     // gRPC INVALID_ARGUMENT, HTTP 400
  kNotFound,            // NOT_FOUND, 404 (unknown model)
  kUnauthenticated,     // UNAUTHENTICATED, 401
  kResourceExhausted,   // RESOURCE_EXHAUSTED, 429 (waiting queue full)
  kTooLarge,            // RESOURCE_EXHAUSTED, 413 (request body over the limit)
  kUnavailable,         // UNAVAILABLE, 503 (draining)
  kFailedPrecondition,  // FAILED_PRECONDITION, 400 (the model cannot do this)
  kCancelled,           // CANCELLED, 499 (the client went away)
  kInternal,            // INTERNAL, 500 (engine failure)
};

struct Status {
  Code code = Code::kOk;
  std::string message;
  // The request field at fault, when there is one (OpenAI's error.param).
  std::string param;

  Status() = default;
  Status(Code c, std::string msg, std::string p = {})
      : code(c), message(std::move(msg)), param(std::move(p)) {}
  bool ok() const { return code == Code::kOk; }
  static Status OK() { return Status(); }
};

// An invalid field: the message starts with the field's name ("top_p: must be in (0, 1]").
inline Status invalid(std::string msg) {
  std::string param;
  if (const size_t colon = msg.find(':'); colon != std::string::npos && colon < 80) {
    param = msg.substr(0, colon);
    if (param.find(' ') != std::string::npos) param.clear();
  }
  return Status(Code::kInvalidArgument, std::move(msg), std::move(param));
}

// A short name for logs and metrics: "ok", "invalid_argument", ...
inline const char* code_name(Code c) {
  switch (c) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kNotFound: return "not_found";
    case Code::kUnauthenticated: return "unauthenticated";
    case Code::kResourceExhausted: return "queue_full";
    case Code::kTooLarge: return "too_large";
    case Code::kUnavailable: return "draining";
    case Code::kFailedPrecondition: return "failed_precondition";
    case Code::kCancelled: return "cancelled";
    case Code::kInternal: return "internal";
  }
  return "?";
}

}  // namespace iris::server
