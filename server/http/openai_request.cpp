// Reading an OpenAI-style request body: typed field access that names the field at fault,
// the sampling fields, the output constraint, chat messages with content parts, data: URLs.
// See openai_request.h.
#include "server/http/openai_request.h"

#include <array>
#include <cmath>

#include "server/http/media_fetch.h"

namespace iris::server::http::openai {

namespace {

bool base64_decode(std::string_view in, std::string& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(a[i])] = static_cast<int8_t>(i);
    t['-'] = 62;  // base64url
    t['_'] = 63;
    return t;
  }();
  out.clear();
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char c : in) {
    if (c == '=') {
      ++pad;
      continue;
    }
    if (c == '\n' || c == '\r' || c == ' ') continue;
    if (pad) return false;  // data after padding
    const int8_t v = table[static_cast<unsigned char>(c)];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return pad <= 2;
}

}  // namespace

[[noreturn]] void bad(std::string msg) { throw BadField{std::move(msg)}; }

// --- typed field access: null or absent = unset ----------------------------------------------

const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> opt_number(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(std::string(key) + ": must be a number, got " + v->type_name());
  return v->get<double>();
}

std::optional<int64_t> opt_int(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  bad(std::string(key) + ": must be an integer, got " + (v->is_number() ? v->dump() : v->type_name()));
}

std::optional<bool> opt_bool(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(std::string(key) + ": must be a boolean, got " + v->type_name());
  return v->get<bool>();
}

std::optional<std::string> opt_string(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad(std::string(key) + ": must be a string, got " + v->type_name());
  return v->get<std::string>();
}

std::vector<int64_t> int_list(const json& v, const std::string& where) {
  if (!v.is_array()) bad(where + ": must be a list of integers, got " + v.type_name());
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number_integer())
      bad(where + "[" + std::to_string(i) + "]: must be an integer, got " + v[i].type_name());
    out.push_back(v[i].get<int64_t>());
  }
  return out;
}

// The sampling fields shared by chat and completions.
SamplingFields sampling_fields(const json& b, bool chat) {
  SamplingFields f;
  f.max_tokens = opt_int(b, "max_tokens");
  if (chat)
    if (auto m = opt_int(b, "max_completion_tokens")) f.max_tokens = m;
  f.temperature = opt_number(b, "temperature");
  f.top_p = opt_number(b, "top_p");
  f.top_k = opt_int(b, "top_k");
  f.min_p = opt_number(b, "min_p");
  f.repetition_penalty = opt_number(b, "repetition_penalty");
  if (auto seed = opt_int(b, "seed")) f.seed = static_cast<uint64_t>(*seed);
  if (const json* stop = field(b, "stop")) {
    if (stop->is_string()) {
      f.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string())
          bad("stop[" + std::to_string(i) + "]: must be a string, got " + (*stop)[i].type_name());
        f.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      bad(std::string("stop: must be a string or a list of strings, got ") + stop->type_name());
    }
  }
  if (const json* ids = field(b, "stop_token_ids")) f.stop_token_ids = int_list(*ids, "stop_token_ids");
  f.n = opt_int(b, "n");
  f.ignore_eos = opt_bool(b, "ignore_eos").value_or(false);
  f.min_tokens = opt_int(b, "min_tokens").value_or(0);
  f.presence_penalty = opt_number(b, "presence_penalty").value_or(0.0);
  f.frequency_penalty = opt_number(b, "frequency_penalty").value_or(0.0);
  f.skip_special_tokens = opt_bool(b, "skip_special_tokens");
  if (const json* lb = field(b, "logit_bias")) {
    if (!lb->is_object()) bad(std::string("logit_bias: must be an object, got ") + lb->type_name());
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      int64_t id = 0;
      size_t used = 0;
      try {
        id = std::stoll(it.key(), &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != it.key().size())
        bad("logit_bias: key '" + it.key() + "' is not a token id");
      if (!it.value().is_number()) bad("logit_bias: value for token " + it.key() + " must be a number");
      f.logit_bias.emplace_back(id, it.value().get<double>());
    }
  }
  return f;
}

// The output constraint of a request: OpenAI's response_format (json_object, json_schema),
// vLLM's structured_outputs {json | regex | choice | grammar | json_object} or its older
// guided_json / guided_regex / guided_choice / guided_grammar fields. At most one.
void structured_output(const json& b, GenerationInput& in) {
  using grammar::ConstraintKind;
  std::vector<std::pair<std::string, grammar::Constraint>> found;
  auto schema_text = [](const json& v, const std::string& where) {
    if (v.is_object() || v.is_boolean()) return v.dump();
    if (v.is_string()) return v.get<std::string>();
    bad(where + ": must be a JSON Schema object");
  };
  auto string_of = [](const json& v, const std::string& where) {
    if (!v.is_string()) bad(where + ": must be a string, got " + std::string(v.type_name()));
    return v.get<std::string>();
  };
  auto choice_text = [](const json& v, const std::string& where) {
    if (!v.is_array() || v.empty()) bad(where + ": must be a non-empty list of strings");
    for (const json& c : v)
      if (!c.is_string()) bad(where + ": must be a list of strings");
    return v.dump();
  };
  if (const json* rf = field(b, "response_format")) {
    if (!rf->is_object()) bad("response_format: must be an object");
    const std::string type = opt_string(*rf, "type").value_or("");
    if (type == "json_object") {
      found.push_back({"response_format", {ConstraintKind::kJsonObject, ""}});
    } else if (type == "json_schema") {
      const json* js = field(*rf, "json_schema");
      if (!js || !js->is_object()) bad("response_format.json_schema: required object {name, schema, strict}");
      const json* schema = field(*js, "schema");
      if (!schema) bad("response_format.json_schema.schema: required");
      found.push_back({"response_format.json_schema.schema",
                       {ConstraintKind::kJsonSchema, schema_text(*schema, "response_format.json_schema.schema")}});
    } else if (type != "text") {
      bad("response_format.type: '" + type + "' (expected text, json_object or json_schema)");
    }
  }
  if (const json* so = field(b, "structured_outputs")) {
    if (!so->is_object()) bad("structured_outputs: must be an object");
    if (const json* v = field(*so, "json"))
      found.push_back({"structured_outputs.json", {ConstraintKind::kJsonSchema, schema_text(*v, "structured_outputs.json")}});
    if (const json* v = field(*so, "regex"))
      found.push_back({"structured_outputs.regex", {ConstraintKind::kRegex, string_of(*v, "structured_outputs.regex")}});
    if (const json* v = field(*so, "choice"))
      found.push_back({"structured_outputs.choice", {ConstraintKind::kChoice, choice_text(*v, "structured_outputs.choice")}});
    if (const json* v = field(*so, "grammar"))
      found.push_back({"structured_outputs.grammar", {ConstraintKind::kGbnf, string_of(*v, "structured_outputs.grammar")}});
    if (opt_bool(*so, "json_object").value_or(false))
      found.push_back({"structured_outputs.json_object", {ConstraintKind::kJsonObject, ""}});
  }
  if (const json* v = field(b, "guided_json"))
    found.push_back({"guided_json", {ConstraintKind::kJsonSchema, schema_text(*v, "guided_json")}});
  if (const json* v = field(b, "guided_regex"))
    found.push_back({"guided_regex", {ConstraintKind::kRegex, string_of(*v, "guided_regex")}});
  if (const json* v = field(b, "guided_choice"))
    found.push_back({"guided_choice", {ConstraintKind::kChoice, choice_text(*v, "guided_choice")}});
  if (const json* v = field(b, "guided_grammar"))
    found.push_back({"guided_grammar", {ConstraintKind::kGbnf, string_of(*v, "guided_grammar")}});
  if (found.size() > 1)
    bad(found[1].first + ": only one output constraint per request (also given: " + found[0].first + ")");
  if (found.empty()) return;
  in.constraint_field = found[0].first;
  in.constraint = std::move(found[0].second);
}

void tool_fields(const nlohmann::ordered_json& ordered, GenerationInput& in) {
  if (auto it = ordered.find("tools"); it != ordered.end()) in.tools = *it;
  if (auto it = ordered.find("tool_choice"); it != ordered.end()) in.tool_choice = *it;
  if (auto it = ordered.find("parallel_tool_calls"); it != ordered.end() && !it->is_null()) {
    if (!it->is_boolean()) bad(std::string("parallel_tool_calls: must be a boolean, got ") + it->type_name());
    in.parallel_tool_calls = it->get<bool>();
  }
}

// --- base64 and data: URLs -------------------------------------------------------------------


// A data: URL's bytes and mime type.
ImageInput data_url_image(const std::string& url, const std::string& where) {
  const size_t comma = url.find(',');
  if (comma == std::string::npos) bad(where + ": malformed data: URL (no ',')");
  const std::string meta = url.substr(5, comma - 5);  // after "data:"
  if (meta.size() < 7 || meta.compare(meta.size() - 7, 7, ";base64") != 0)
    bad(where + ": data: URLs must be base64-encoded (data:image/png;base64,...)");
  ImageInput img;
  img.mime_type = meta.substr(0, meta.size() - 7);
  img.where = where;
  if (!base64_decode(std::string_view(url).substr(comma + 1), img.data))
    bad(where + ": the data: URL is not valid base64");
  return img;
}

// Qwen2.5-VL's per-item resized-area range: "min_pixels" / "max_pixels" on the content part, as
// Qwen's own message format places them.
void pixel_range(const json& part, const std::string& where, ImageInput& out) {
  for (const char* key : {"min_pixels", "max_pixels"}) {
    const json* v = field(part, key);
    if (!v) continue;
    if (!v->is_number_integer() || v->get<int64_t>() <= 0)
      bad(where + "." + key + ": must be a positive integer");
    (std::string(key) == "min_pixels" ? out.min_pixels : out.max_pixels) = v->get<int64_t>();
  }
  out.pixels_where = where;
}

// Chat messages → the request layer's messages; image URLs that must be fetched are listed.
std::vector<ChatInputMessage> chat_messages(const json& body, const nlohmann::ordered_json& ordered,
                                            const std::vector<std::string>& allowed,
                                            std::vector<std::pair<size_t, std::string>>& remote,
                                            std::vector<std::pair<size_t, size_t>>& remote_at) {
  const json* msgs = field(body, "messages");
  if (!msgs) bad("messages: required");
  if (!msgs->is_array()) bad(std::string("messages: must be a list, got ") + msgs->type_name());
  std::vector<ChatInputMessage> out;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(where + ": must be an object, got " + m.type_name());
    ChatInputMessage cm;
    const json* role = field(m, "role");
    if (!role || !role->is_string()) bad(where + ".role: required string");
    cm.role = role->get<std::string>();
    const nlohmann::ordered_json& om = ordered["messages"][i];
    for (auto it = om.begin(); it != om.end(); ++it)
      if (it.key() != "role" && it.key() != "content") cm.extra[it.key()] = it.value();
    const json* content = field(m, "content");
    if (!content) {
      // An assistant message with only tool_calls has null content.
      if (cm.role != "assistant" && cm.role != "tool") bad(where + ".content: required");
      cm.content_null = true;
    } else if (content->is_string()) {
      cm.parts.push_back(ChatInputPart{ChatInputPart::Kind::kText, content->get<std::string>(), {}});
    } else if (content->is_array()) {
      cm.content_is_list = true;
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string pw = where + ".content[" + std::to_string(j) + "]";
        if (!part.is_object()) bad(pw + ": must be an object, got " + part.type_name());
        const json* type = field(part, "type");
        if (!type || !type->is_string()) bad(pw + ".type: required string");
        const std::string t = type->get<std::string>();
        if (t == "text") {
          const json* text = field(part, "text");
          if (!text || !text->is_string()) bad(pw + ".text: required string");
          cm.parts.push_back(ChatInputPart{ChatInputPart::Kind::kText, text->get<std::string>(), {}});
        } else if (t == "image_url") {
          const json* iu = field(part, "image_url");
          std::string url;
          if (iu && iu->is_string()) url = iu->get<std::string>();
          else if (iu && iu->is_object() && field(*iu, "url") && (*iu)["url"].is_string())
            url = (*iu)["url"].get<std::string>();
          else bad(pw + ".image_url: required {\"url\": ...}");
          const std::string uw = pw + ".image_url.url";
          ChatInputPart p;
          p.kind = ChatInputPart::Kind::kImage;
          if (url.rfind("data:", 0) == 0) {
            p.image = data_url_image(url, uw);
          } else if (url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0) {
            const std::string host = url_host(url);
            bool ok = false;
            for (const std::string& d : allowed) ok = ok || host == d;
            if (!ok)
              bad(uw + ": host '" + host + "' is not in --allowed-media-domains" +
                  (allowed.empty() ? " (none configured: send a data: URL)" : ""));
            p.image.where = uw;
            remote.emplace_back(0, url);
            remote_at.emplace_back(out.size(), cm.parts.size());
          } else {
            bad(uw + ": unsupported URL scheme (use data: or an allowed http(s) host)");
          }
          pixel_range(part, pw, p.image);
          cm.parts.push_back(std::move(p));
        } else if (t == "video_url") {
          // A video as its frames: {"url": [data: URL of each JPEG/PNG frame, ...], "fps": N},
          // or as a file: {"url": "data:video/mp4;base64,..."} (also webm, x-matroska, avi).
          const json* vu = field(part, "video_url");
          const std::string vw = pw + ".video_url";
          if (!vu || !vu->is_object())
            bad(vw + ": required {\"url\": \"data:video/mp4;base64,...\"} or "
                     "{\"url\": [frame data: URLs], \"fps\": N}");
          const json* url = field(*vu, "url");
          if (url && url->is_string()) {
            const std::string u = url->get<std::string>();
            if (u.rfind("data:", 0) != 0)
              bad(vw + ".url: must be a data: URL of a video file (data:video/mp4;base64,...)");
            if (field(*vu, "fps"))
              bad(vw + ".fps: applies to a list of frames; a video file's own frame rate is used");
            ChatInputPart p;
            p.kind = ChatInputPart::Kind::kVideo;
            p.image = data_url_image(u, vw + ".url");
            static const char* const kVideoTypes[] = {"video/mp4", "video/webm", "video/x-matroska",
                                                      "video/matroska", "video/avi", "video/x-msvideo",
                                                      "video/quicktime"};
            bool known = false;
            for (const char* t : kVideoTypes) known = known || p.image.mime_type == t;
            if (!known)
              bad(vw + ".url: '" + p.image.mime_type +
                  "' is not a video file type this server reads (video/mp4, video/webm, "
                  "video/x-matroska, video/x-msvideo, video/quicktime)");
            p.image.mime_type.clear();  // the container is recognized from the bytes
            p.image.video = true;
            p.image.video_file = true;
            pixel_range(part, pw, p.image);
            cm.parts.push_back(std::move(p));
            continue;
          }
          if (!url || !url->is_array()) bad(vw + ".url: required list of frame data: URLs");
          ChatInputPart p;
          p.kind = ChatInputPart::Kind::kVideo;
          p.image.video = true;
          p.image.where = vw + ".url";
          p.image.fps_where = vw + ".fps";
          const json* fps = field(*vu, "fps");
          if (!fps || !fps->is_number()) bad(vw + ".fps: required number (frames per second)");
          p.image.video_fps = fps->get<double>();
          for (size_t f = 0; f < url->size(); ++f) {
            const std::string fw = vw + ".url[" + std::to_string(f) + "]";
            const json& u = (*url)[f];
            if (!u.is_string() || u.get<std::string>().rfind("data:", 0) != 0)
              bad(fw + ": must be a data: URL of a JPEG or PNG frame");
            p.image.frames.push_back(data_url_image(u.get<std::string>(), fw));
          }
          pixel_range(part, pw, p.image);
          cm.parts.push_back(std::move(p));
        } else {
          bad(pw + ".type: unsupported content part type '" + t +
              "' (expected text, image_url or video_url)");
        }
      }
    } else {
      bad(where + ".content: must be a string or a list of parts, got " + content->type_name());
    }
    out.push_back(std::move(cm));
  }
  return out;
}

}  // namespace iris::server::http::openai
