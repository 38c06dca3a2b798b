// Developer tool: renders a Jinja template file with a JSON context file and prints the
// result, or the iris::Error message with exit code 1. Used to compare against jinja2 by hand.
#include <fstream>
#include <iostream>
#include <sstream>

#include "engine/chat_template/jinja.h"
#include "engine/core/check.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: jinja_cli TEMPLATE_FILE [CONTEXT_JSON_FILE]\n";
    return 2;
  }
  auto slurp = [](const char* path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  try {
    nlohmann::ordered_json ctx = argc > 2 ? nlohmann::ordered_json::parse(slurp(argv[2])) : nlohmann::ordered_json::object();
    std::cout << iris::jinja::Template::parse(slurp(argv[1])).render(ctx);
  } catch (const std::exception& e) {
    std::cout << "ERROR: " << e.what();
    return 1;
  }
  return 0;
}
