// Subcommands of the `iris` binary. Each registers its options on a CLI11 subcommand and
// returns the process exit code from its run function.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace iris::cli {

using Runner = std::function<int()>;

// A registered subcommand and what runs it once argv has been parsed.
struct Command {
  CLI::App* app = nullptr;
  Runner run;
};

Command add_generate(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_serve(CLI::App& app);
Command add_client(CLI::App& app);
// Registers `bench serve` under `bench`; the runner returns -1 when it was not chosen.
std::function<int()> add_bench_serve(CLI::App& bench);
std::vector<Command> add_text_commands(CLI::App& app);

}  // namespace iris::cli
