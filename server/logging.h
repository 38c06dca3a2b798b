// Log output of the `iris` binary: spdlog with a text or JSON-lines format and a level. In
// JSON mode every line is one object {"time", "level", "msg"}; a structured event (see
// log_event) puts its fields at the top level of that object instead of in "msg".
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace iris::server {

enum class LogFormat { kText, kJson };

// Sets the default logger's pattern and level. Throws iris::Error naming a bad value.
void configure_logging(const std::string& format, const std::string& level);
LogFormat log_format();

// Logs one structured event at info level: in JSON mode `fields` become top-level keys
// (with "msg": event); in text mode one line "event k=v k=v ...".
void log_event(const std::string& event, const nlohmann::ordered_json& fields);

}  // namespace iris::server
