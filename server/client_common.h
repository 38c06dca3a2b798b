// What every client-side subcommand (`iris client`, `iris bench serve`) shares: the channel
// to a running `iris serve` (plain or TLS) and the API key on each call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

namespace iris::cli {

struct ClientOptions {
  std::string address = "127.0.0.1:50051";
  std::string api_key;      // or $IRIS_API_KEY
  bool tls = false;         // TLS with the system's roots (or --tls-ca)
  std::string tls_ca;       // PEM roots to verify the server with (implies TLS)
  std::string tls_server_name;  // override the name checked against the certificate

  void add_to(CLI::App& app);
  std::shared_ptr<grpc::Channel> channel() const;
  // Adds `authorization: Bearer …` when a key is set.
  void authorize(grpc::ClientContext& ctx) const;
};

}  // namespace iris::cli
