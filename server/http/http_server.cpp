// The HTTP/1.1 server: an acceptor, one Connection per socket (on its own strand), Beast's
// parser for requests and a plain byte queue for responses. See http_server.h.
#include "server/http/http_server.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <cctype>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "engine/core/check.h"

namespace iris::server::http {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

namespace {

std::string head(int status, const std::string& content_type, const Headers& headers,
                 bool keep_alive) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  h += "Server: iris\r\n";
  if (!content_type.empty()) h += "Content-Type: " + content_type + "\r\n";
  for (const auto& [k, v] : headers) h += k + ": " + v + "\r\n";
  if (!keep_alive) h += "Connection: close\r\n";
  return h;
}

std::string chunk(const std::string& data) {
  char size[32];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string c = size;
  c += data;
  c += "\r\n";
  return c;
}

class Exchange;

// What an Exchange needs of its connection, whatever the stream type.
class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  // Runs fn on the connection's strand.
  virtual void post(std::function<void()> fn) = 0;
  // On the strand: queue bytes of `ex`'s response; `last` ends the exchange.
  virtual void queue(std::shared_ptr<Exchange> ex, std::string data, bool last) = 0;
  virtual void close_now() = 0;
};

class Exchange final : public HttpExchange, public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<ConnectionBase> conn, bool keep_alive)
      : conn_(std::move(conn)), keep_alive_(keep_alive) {}

  void respond(int status, std::string content_type, std::string body, Headers headers) override {
    std::string data;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_ || started_) return;
      ended_ = true;
      data = head(status, content_type, headers, keep_alive_);
      data += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
      data += body;
    }
    send_raw(std::move(data), /*last=*/true);
  }

  void start_stream(int status, std::string content_type, Headers headers) override {
    std::string data;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_ || started_) return;
      started_ = true;
      headers.emplace_back("Cache-Control", "no-cache");
      headers.emplace_back("X-Accel-Buffering", "no");
      headers.emplace_back("Transfer-Encoding", "chunked");
      data = head(status, content_type, headers, keep_alive_) + "\r\n";
    }
    send_raw(std::move(data), false);
  }

  void send(std::string data) override {
    if (data.empty()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_ || !started_) return;
    }
    send_raw(chunk(data), false);
  }

  void end() override {
    bool started = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_) return;
      started = started_;
      if (started) ended_ = true;
    }
    if (!started) {
      // Ended without a response: say so rather than leave the client waiting.
      respond(500, "application/json",
              R"({"error":{"message":"no response","type":"internal_error","param":null,"code":"internal"}})", {});
      return;
    }
    send_raw("0\r\n\r\n", true);
  }

  size_t pending_bytes() const override { return pending_.load(); }

  void on_close(std::function<void()> fn) override {
    bool call = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ && !ended_) call = true;
      else on_close_ = std::move(fn);
    }
    if (call && fn) fn();
  }

  void abort_connection() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
    }
    auto conn = conn_;
    conn->post([conn] { conn->close_now(); });
  }

  // The connection saw the client leave (strand).
  void notify_closed() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      if (!ended_) fn = std::move(on_close_);
      on_close_ = nullptr;
    }
    if (fn) fn();
  }

  void written(size_t n) { pending_.fetch_sub(n); }
  bool keep_alive() const { return keep_alive_; }

 private:
  void send_raw(std::string data, bool last) {
    pending_.fetch_add(data.size());
    auto conn = conn_;
    auto self = shared_from_this();
    conn->post([conn, self, data = std::move(data), last]() mutable {
      conn->queue(self, std::move(data), last);
    });
  }

  std::shared_ptr<ConnectionBase> conn_;
  const bool keep_alive_;
  std::atomic<size_t> pending_{0};
  mutable std::mutex mu_;
  bool ended_ = false, started_ = false, closed_ = false;
  std::function<void()> on_close_;
};

struct Shared {
  HttpServerOptions options;
  Handler handler;
  std::atomic<int> connections{0};
  std::atomic<int> exchanges{0};  // requests whose response is not yet fully written

  // Every connection started, so that stop() can close those still open: each keeps the
  // io_context alive (its socket must die first) while the io_context's pending operations
  // keep the connection alive, a cycle only closing its socket breaks.
  void add(std::weak_ptr<ConnectionBase> conn) {
    std::lock_guard<std::mutex> lock(live_mu);
    if (live.size() >= 2 * live_after_prune + 64) {
      std::erase_if(live, [](const std::weak_ptr<ConnectionBase>& w) { return w.expired(); });
      live_after_prune = live.size();
    }
    live.push_back(std::move(conn));
  }
  std::vector<std::shared_ptr<ConnectionBase>> take_open() {
    std::lock_guard<std::mutex> lock(live_mu);
    std::vector<std::shared_ptr<ConnectionBase>> open;
    for (const auto& w : live)
      if (auto c = w.lock()) open.push_back(std::move(c));
    live.clear();
    live_after_prune = 0;
    return open;
  }

 private:
  std::mutex live_mu;
  std::vector<std::weak_ptr<ConnectionBase>> live;
  size_t live_after_prune = 0;
};

template <class Stream>
class Connection final : public ConnectionBase,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  Connection(std::shared_ptr<net::io_context> ioc, std::shared_ptr<Shared> shared, Stream stream,
             std::string remote)
      : ioc_(std::move(ioc)), shared_(std::move(shared)), stream_(std::move(stream)),
        timer_(stream_.get_executor()), remote_(std::move(remote)) {
    shared_->connections.fetch_add(1);
  }
  ~Connection() override { shared_->connections.fetch_sub(1); }

  void start() {
    auto self = this->shared_from_this();
    shared_->add(self);
    if constexpr (std::is_same_v<Stream, ssl::stream<tcp::socket>>) {
      arm_timer(shared_->options.request_timeout_s);
      stream_.async_handshake(ssl::stream_base::server, [self](beast::error_code ec) {
        if (ec) return self->close_now();
        self->do_read();
      });
    } else {
      do_read();
    }
  }

  void post(std::function<void()> fn) override { net::post(stream_.get_executor(), std::move(fn)); }

  void queue(std::shared_ptr<Exchange> ex, std::string data, bool last) override {
    if (closed_) {
      ex->written(data.size());
      return;
    }
    out_.push_back(Out{std::move(ex), std::move(data), last});
    if (!writing_) write_next();
  }

  void close_now() override {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    beast::error_code ec;
    socket().shutdown(tcp::socket::shutdown_both, ec);
    socket().close(ec);
    for (Out& o : out_) o.ex->written(o.data.size());
    out_.clear();
    if (current_) {
      auto ex = std::move(current_);
      shared_->exchanges.fetch_sub(1);
      ex->notify_closed();
    }
  }

 private:
  struct Out {
    std::shared_ptr<Exchange> ex;
    std::string data;
    bool last = false;
  };

  tcp::socket& socket() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) return stream_;
    else return stream_.next_layer();
  }

  void arm_timer(double seconds) {
    timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1e3)));
    auto self = this->shared_from_this();
    timer_.async_wait([self](beast::error_code ec) {
      if (!ec) self->close_now();
    });
  }

  void do_read() {
    if (closed_ || reading_ || closing_) return;
    parser_.emplace();
    parser_->body_limit(shared_->options.max_body_bytes);
    parser_->header_limit(static_cast<uint32_t>(shared_->options.max_header_bytes));
    reading_ = true;
    arm_timer(buffer_.size() > 0 ? shared_->options.request_timeout_s : shared_->options.idle_timeout_s);
    auto self = this->shared_from_this();
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    timer_.cancel();
    if (closed_) return;
    if (ec) {
      if (ec == bhttp::error::body_limit)
        return fail_request(413, "request body over the limit of " +
                                     std::to_string(shared_->options.max_body_bytes) +
                                     " bytes (--max-request-bytes)", "too_large");
      if (ec == bhttp::error::header_limit)
        return fail_request(431, "request header over the limit", "too_large");
      if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
          ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message)
        return fail_request(400, std::string("malformed HTTP request: ") + ec.message(), "invalid_argument");
      return close_now();
    }
    bhttp::request<bhttp::string_body> req = parser_->release();
    parser_.reset();
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.path = r.target.substr(0, r.target.find('?'));
    for (const auto& f : req) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    r.body = std::move(req.body());
    r.remote = remote_;
    current_ = std::make_shared<Exchange>(this->shared_from_this(), req.keep_alive());
    shared_->exchanges.fetch_add(1);
    watch();
    shared_->handler(std::move(r), current_);
  }

  // A response the connection itself gives (the request never reached a handler); closes.
  void fail_request(int status, const std::string& message, const char* code) {
    if (shared_->options.on_refused) shared_->options.on_refused(status);
    std::string body = R"({"error":{"message":")";
    for (char c : message) {
      if (c == '"' || c == '\\') body += '\\';
      body += c;
    }
    body += R"(","type":"invalid_request_error","param":null,"code":")";
    body += code;
    body += "\"}}";
    current_ = std::make_shared<Exchange>(this->shared_from_this(), /*keep_alive=*/false);
    shared_->exchanges.fetch_add(1);
    current_->respond(status, "application/json", std::move(body), {});
  }

  // While a response is produced, keep one read posted so a disconnect is seen at once; bytes
  // that arrive (a pipelined request) stay in the buffer for the next parse.
  void watch() {
    if (reading_ || closed_ || !current_) return;
    if (buffer_.size() >= 64 * 1024) return;
    reading_ = true;
    auto self = this->shared_from_this();
    stream_.async_read_some(buffer_.prepare(4096), [self](beast::error_code ec, size_t n) {
      self->reading_ = false;
      if (self->closed_) return;
      if (ec) return self->close_now();
      self->buffer_.commit(n);
      if (self->closing_) self->drain();
      else if (self->current_) self->watch();
      else self->do_read();
    });
  }

  void drain() {
    if (closed_) return;
    reading_ = true;
    auto self = this->shared_from_this();
    socket().async_read_some(net::buffer(scratch_), [self](beast::error_code ec, size_t) {
      self->reading_ = false;
      if (ec || self->closed_) return self->close_now();
      self->drain();
    });
  }

  void write_next() {
    while (!out_.empty() && out_.front().data.empty()) {
      Out o = std::move(out_.front());
      out_.pop_front();
      if (o.last) exchange_done(o.ex);
      if (closed_) return;
    }
    if (out_.empty()) return;
    writing_ = true;
    auto self = this->shared_from_this();
    net::async_write(stream_, net::buffer(out_.front().data), [self](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (self->closed_) return;
      Out o = std::move(self->out_.front());
      self->out_.pop_front();
      o.ex->written(o.data.size());
      if (ec) return self->close_now();
      if (o.last) self->exchange_done(o.ex);
      if (!self->closed_) self->write_next();
    });
  }

  void exchange_done(const std::shared_ptr<Exchange>& ex) {
    if (current_ == ex) {
      current_.reset();
      shared_->exchanges.fetch_sub(1);
    }
    if (!ex->keep_alive()) {
      beast::error_code ec;
      socket().shutdown(tcp::socket::shutdown_send, ec);
      // Lingering close: read and discard what the client still sends (e.g. the rest of a
      // body over the limit) for a moment, so it can read the response instead of being
      // reset mid-write; then close.
      closing_ = true;
      arm_timer(2.0);
      if (!reading_) drain();
      return;
    }
    if (!reading_) do_read();
    else arm_timer(shared_->options.idle_timeout_s);
  }

  std::shared_ptr<net::io_context> ioc_;  // outlives the socket below
  std::shared_ptr<Shared> shared_;
  Stream stream_;
  net::steady_timer timer_;
  std::string remote_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::deque<Out> out_;
  std::shared_ptr<Exchange> current_;
  bool reading_ = false, writing_ = false, closed_ = false;
  bool closing_ = false;  // the last response is out; only draining what the client still sends
  std::array<char, 16384> scratch_;
};

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<net::io_context> ioc = std::make_shared<net::io_context>();
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  std::optional<tcp::acceptor> acceptor;
  std::optional<ssl::context> tls;
  std::vector<std::thread> threads;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;

  void accept() {
    acceptor->async_accept(net::make_strand(*ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        beast::error_code e2;
        const auto ep = socket.remote_endpoint(e2);
        std::string remote = e2 ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
        socket.set_option(tcp::no_delay(true), e2);
        if (tls) {
          std::make_shared<Connection<ssl::stream<tcp::socket>>>(
              ioc, shared, ssl::stream<tcp::socket>(std::move(socket), *tls), std::move(remote))
              ->start();
        } else {
          std::make_shared<Connection<tcp::socket>>(ioc, shared, std::move(socket), std::move(remote))
              ->start();
        }
      } else {
        spdlog::warn("http: accept failed: {}", ec.message());
      }
      accept();
    });
  }
};

HttpServer::HttpServer(HttpServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->shared->options = std::move(options);
  impl_->shared->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  const HttpServerOptions& o = impl_->shared->options;
  if (!o.tls_cert_file.empty() || !o.tls_key_file.empty()) {
    if (o.tls_cert_file.empty() || o.tls_key_file.empty()) fail("HTTPS needs both --tls-cert and --tls-key");
    impl_->tls.emplace(ssl::context::tls_server);
    try {
      impl_->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                              ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      impl_->tls->use_certificate_chain_file(o.tls_cert_file);
      impl_->tls->use_private_key_file(o.tls_key_file, ssl::context::pem);
      if (!o.tls_client_ca_file.empty()) {
        impl_->tls->load_verify_file(o.tls_client_ca_file);
        impl_->tls->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    } catch (const boost::system::system_error& e) {
      fail("HTTPS certificate setup: ", e.what());
    }
  }
  beast::error_code ec;
  const auto address = net::ip::make_address(o.host == "localhost" ? "127.0.0.1" : o.host, ec);
  if (ec) fail("--host ", o.host, ": ", ec.message());
  impl_->acceptor.emplace(*impl_->ioc);
  const tcp::endpoint ep(address, static_cast<unsigned short>(o.port));
  impl_->acceptor->open(ep.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(ep, ec);
  if (!ec) impl_->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) fail("HTTP: cannot listen on ", o.host, ":", o.port, ": ", ec.message());
  port_ = impl_->acceptor->local_endpoint().port();
  impl_->work.emplace(impl_->ioc->get_executor());
  impl_->accept();
  for (int i = 0; i < std::max(1, o.threads); ++i)
    impl_->threads.emplace_back([ioc = impl_->ioc] { ioc->run(); });
}

void HttpServer::stop(double grace_s) {
  if (!impl_ || impl_->threads.empty()) return;
  net::post(*impl_->ioc, [this] {
    beast::error_code ec;
    if (impl_->acceptor) impl_->acceptor->close(ec);
  });
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(std::max(0.0, grace_s) * 1e3));
  while (impl_->shared->exchanges.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->work.reset();
  impl_->ioc->stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  // No thread runs the strands now: close what is still open (idle keep-alive connections,
  // their reads pending) and run the aborted operations' handlers, which release their
  // connections and with them the io_context.
  beast::error_code ec;
  if (impl_->acceptor) impl_->acceptor->close(ec);  // in case the posted close never ran
  for (const auto& conn : impl_->shared->take_open()) conn->close_now();
  impl_->ioc->restart();
  impl_->ioc->run_for(std::chrono::seconds(5));
}

int HttpServer::connections() const { return impl_->shared->connections.load(); }

}  // namespace iris::server::http
