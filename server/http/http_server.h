// An asynchronous HTTP/1.1 server (Boost.Asio + Beast's request parser): keep-alive, optional
// TLS, a request body limit, and responses that are either whole or streamed as chunks
// (Server-Sent Events). A few I/O threads serve every connection; nothing blocks them.
//
// A handler receives each parsed request with an HttpExchange, the thread-safe handle of that
// request's response: any thread (the engine's included) may respond, stream chunks or end the
// stream; the exchange counts the bytes not yet written so a producer can bound a slow reader;
// and `on_close` tells the producer when the client went away before the response was out
// (the connection keeps a read posted while a response is being produced, so a disconnect is
// seen at once even while nothing is being written).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iris::server::http {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::string path;    // target without the query
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote;  // peer address "ip:port"

  // The first header of that (lower-case) name, or nullptr.
  const std::string* header(std::string_view name) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  // A whole response. Ends the exchange.
  virtual void respond(int status, std::string content_type, std::string body, Headers headers = {}) = 0;
  // Starts a chunked response (e.g. text/event-stream); then send() chunks and end().
  virtual void start_stream(int status, std::string content_type, Headers headers = {}) = 0;
  virtual void send(std::string data) = 0;
  virtual void end() = 0;
  // Bytes handed to respond/send and not yet written to the socket.
  virtual size_t pending_bytes() const = 0;
  // Called once, on an I/O thread, if the client disconnects before the exchange ends. Set it
  // before anything can end the exchange (it is not called after the end).
  virtual void on_close(std::function<void()> fn) = 0;
  // Closes the connection now (a producer giving up on a client that does not read).
  virtual void abort_connection() = 0;
};

using Handler = std::function<void(HttpRequest request, std::shared_ptr<HttpExchange> exchange)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = any free port
  int threads = 2;
  size_t max_body_bytes = 32u << 20;
  size_t max_header_bytes = 64u << 10;
  double idle_timeout_s = 120;     // keep-alive connection with no request
  double request_timeout_s = 60;   // to receive one request's header and body
  std::string tls_cert_file, tls_key_file;  // both set = HTTPS
  std::string tls_client_ca_file;           // set = require and verify client certificates
  // Called (I/O thread) when the server itself refuses a request before any handler sees it:
  // 413 (body too large), 431 (header too large), 400 (malformed HTTP).
  std::function<void(int status)> on_refused;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts the I/O threads; throws iris::Error when it cannot listen.
  void start();
  int port() const { return port_; }
  // Stops accepting, then waits up to `grace_s` seconds for the responses under way (a request
  // handed to the handler whose last byte is not yet written) to go out; then closes the open
  // connections and joins the threads. A response the engine has already given (e.g. the 500
  // of a failed engine) is thus not cut off by the shutdown that follows it.
  void stop(double grace_s = 0);
  // Connections open now.
  int connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// "400 Bad Request" style reason phrases.
const char* reason_phrase(int status);

}  // namespace iris::server::http
