// See logging.h. JSON lines come from a custom pattern flag that escapes the message, or
// splices a structured event's fields (marked by a leading U+001E) into the object.
#include "server/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "engine/core/check.h"

namespace iris::server {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
constexpr char kEventMark = '\x1e';

// %* in the JSON pattern: "msg":"..." (escaped), or a structured event's fields.
class JsonMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    std::string out;
    if (!payload.empty() && payload[0] == kEventMark) {
      // "\x1e{...}": an object whose keys go to the top level.
      const std::string_view obj = payload.substr(1);
      if (obj.size() >= 2 && obj.front() == '{' && obj.back() == '}') {
        out.assign(obj.substr(1, obj.size() - 2));
        dest.append(out.data(), out.data() + out.size());
        return;
      }
    }
    out = "\"msg\":" + nlohmann::json(std::string(payload)).dump(-1, ' ', false,
                                                                  nlohmann::json::error_handler_t::replace);
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMessage>(); }
};

}  // namespace

void configure_logging(const std::string& format, const std::string& level) {
  const spdlog::level::level_enum lv = spdlog::level::from_str(level);
  if (lv == spdlog::level::off && level != "off")
    fail("--log-level: '", level, "' (expected trace, debug, info, warn, error, critical or off)");
  spdlog::set_level(lv);
  if (format == "text") {
    g_format = LogFormat::kText;
    spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  } else if (format == "json") {
    g_format = LogFormat::kJson;
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<JsonMessage>('*').set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%f%z","level":"%l",%*})");
    spdlog::set_formatter(std::move(f));
  } else {
    fail("--log-format: '", format, "' (expected text or json)");
  }
}

LogFormat log_format() { return g_format.load(); }

void log_event(const std::string& event, const nlohmann::ordered_json& fields) {
  if (g_format.load() == LogFormat::kJson) {
    nlohmann::ordered_json j;
    j["msg"] = event;
    for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
    spdlog::info("{}{}", kEventMark, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  std::string line = event;
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    line += ' ';
    line += it.key();
    line += '=';
    line += it.value().is_string() ? it.value().get<std::string>()
                                   : it.value().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  spdlog::info("{}", line);
}

}  // namespace iris::server
