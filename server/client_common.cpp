// Channel construction for the client subcommands.
#include "server/client_common.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "engine/core/check.h"

namespace iris::cli {

void ClientOptions::add_to(CLI::App& app) {
  app.add_option("--address", address, "host:port of iris serve")->capture_default_str();
  app.add_option("--api-key", api_key, "API key (default: $IRIS_API_KEY)");
  app.add_flag("--tls", tls, "connect with TLS, verifying against the system's roots");
  app.add_option("--tls-ca", tls_ca, "PEM roots to verify the server with (implies --tls)");
  app.add_option("--tls-server-name", tls_server_name,
                 "name to check the server certificate against (default: the host)");
}

std::shared_ptr<grpc::Channel> ClientOptions::channel() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (!tls_server_name.empty()) args.SetSslTargetNameOverride(tls_server_name);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls || !tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!tls_ca.empty()) {
      std::ifstream in(tls_ca, std::ios::binary);
      if (!in) fail("--tls-ca ", tls_ca, ": cannot open");
      std::stringstream ss;
      ss << in.rdbuf();
      ssl.pem_root_certs = ss.str();
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(address, creds, args);
}

void ClientOptions::authorize(grpc::ClientContext& ctx) const {
  std::string key = api_key;
  if (key.empty())
    if (const char* env = std::getenv("IRIS_API_KEY")) key = env;
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
}

}  // namespace iris::cli
