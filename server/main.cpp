// Entry point of the `iris` binary: dispatches to subcommands. Every error is reported on
// stderr with a non-zero exit code; nothing throws out of main.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <vector>

#include "engine/core/check.h"
#include "server/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Iris: an inference server for large language and vision-language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "iris 0.1.0");
  std::vector<iris::cli::Command> commands;
  commands.push_back(iris::cli::add_generate(app));
  commands.push_back(iris::cli::add_bench(app));
  commands.push_back(iris::cli::add_serve(app));
  commands.push_back(iris::cli::add_client(app));
  for (auto& c : iris::cli::add_text_commands(app)) commands.push_back(std::move(c));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const iris::Error& e) {
    std::fprintf(stderr, "iris: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "iris: internal error: %s\n", e.what());
    return 2;
  }
  return 1;
}
