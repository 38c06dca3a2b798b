// Fetching a media URL (http or https) for a request, from hosts the operator allowed, with a
// size cap and a deadline. Blocking: run it on a worker thread, never on an I/O thread.
#pragma once

#include <cstddef>
#include <string>

namespace iris::server::http {

// The host of an http(s) URL, lower-cased, without port or credentials ("" when malformed).
std::string url_host(const std::string& url);

// GETs `url` (following no redirects). On success fills `data` and `mime_type` (the response's
// Content-Type) and returns true; otherwise `error` says why.
bool fetch_media(const std::string& url, size_t max_bytes, double timeout_s, std::string& data,
                 std::string& mime_type, std::string& error);

}  // namespace iris::server::http
