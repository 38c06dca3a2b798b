// See media_fetch.h. A Beast client over a tcp_stream whose expiry bounds the whole fetch.
#include "server/http/media_fetch.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>

#include <cctype>
#include <chrono>

namespace iris::server::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

struct Url {
  bool tls = false;
  std::string host, port, target;
};

bool parse_url(const std::string& url, Url& u) {
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    rest = url.substr(8);
  } else {
    return false;
  }
  const size_t slash = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, slash);
  u.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (const size_t hash = u.target.find('#'); hash != std::string::npos) u.target.resize(hash);
  if (u.target.empty() || u.target[0] != '/') u.target = "/" + u.target;
  if (const size_t at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  u.port = u.tls ? "443" : "80";
  if (!authority.empty() && authority[0] == '[') {  // [v6]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) return false;
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') u.port = authority.substr(close + 2);
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) u.port = authority.substr(colon + 1);
  }
  for (char& c : u.host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return !u.host.empty() && !u.port.empty();
}

template <class Stream>
bool get(Stream& stream, beast::tcp_stream& tcp_layer, const Url& u, size_t max_bytes, double timeout_s,
         std::string& data, std::string& mime, std::string& error) {
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, u.target, 11};
  req.set(bhttp::field::host, u.host);
  req.set(bhttp::field::user_agent, "iris");
  tcp_layer.expires_after(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1e3)));
  bhttp::write(stream, req);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(max_bytes);
  beast::error_code ec;
  bhttp::read(stream, buffer, parser, ec);
  if (ec == bhttp::error::body_limit) {
    error = "image at the URL is larger than " + std::to_string(max_bytes) + " bytes";
    return false;
  }
  if (ec) {
    error = "fetching the URL failed: " + ec.message();
    return false;
  }
  auto res = parser.release();
  if (res.result_int() != 200) {
    error = "fetching the URL gave HTTP " + std::to_string(res.result_int());
    return false;
  }
  data = std::move(res.body());
  mime = std::string(res[bhttp::field::content_type]);
  if (const size_t semi = mime.find(';'); semi != std::string::npos) mime.resize(semi);
  return true;
}

}  // namespace

std::string url_host(const std::string& url) {
  Url u;
  return parse_url(url, u) ? u.host : std::string();
}

bool fetch_media(const std::string& url, size_t max_bytes, double timeout_s, std::string& data,
                 std::string& mime_type, std::string& error) {
  Url u;
  if (!parse_url(url, u)) {
    error = "malformed URL";
    return false;
  }
  try {
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    const auto deadline = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1e3));
    const auto endpoints = resolver.resolve(u.host, u.port);
    if (!u.tls) {
      beast::tcp_stream stream(ioc);
      stream.expires_after(deadline);
      stream.connect(endpoints);
      return get(stream, stream, u, max_bytes, timeout_s, data, mime_type, error);
    }
    net::ssl::context ctx(net::ssl::context::tls_client);
    ctx.set_default_verify_paths();
    ctx.set_verify_mode(net::ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    if (!SSL_set_tlsext_host_name(stream.native_handle(), u.host.c_str())) {
      error = "TLS: cannot set the server name";
      return false;
    }
    stream.set_verify_callback(net::ssl::host_name_verification(u.host));
    beast::get_lowest_layer(stream).expires_after(deadline);
    beast::get_lowest_layer(stream).connect(endpoints);
    stream.handshake(net::ssl::stream_base::client);
    return get(stream, beast::get_lowest_layer(stream), u, max_bytes, timeout_s, data, mime_type, error);
  } catch (const boost::system::system_error& e) {
    error = std::string("fetching the URL failed: ") + e.what();
    return false;
  }
}

}  // namespace iris::server::http
