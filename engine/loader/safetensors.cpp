// Parsing and validation of the safetensors format: 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the data section. Offsets are relative to the data section.
#include "engine/loader/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/core/check.h"

namespace iris {
namespace {

using json = nlohmann::json;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

SafetensorInfo parse_entry(const std::string& path, const std::string& name, const json& e,
                           uint64_t data_size) {
  auto bad = [&](const std::string& why) -> Error {
    return Error(path + ": tensor '" + name + "': " + why);
  };
  if (!e.is_object()) throw bad("header entry is not an object");
  SafetensorInfo t;
  t.name = name;
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) throw bad("missing dtype");
  auto parsed = parse_safetensors_dtype(dt->get<std::string>());
  if (!parsed) throw bad("unknown dtype '" + dt->get<std::string>() + "'");
  t.dtype = *parsed;

  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) throw bad("missing shape");
  if (sh->size() > 8) throw bad("shape has " + std::to_string(sh->size()) + " dims");
  // numel may not overflow: every dim is bounded and the product checked against the bytes.
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
      throw bad("shape entry is not a non-negative integer");
    const uint64_t v = d.get<uint64_t>();
    if (v > (1ull << 40)) throw bad("shape dimension " + std::to_string(v) + " is absurd");
    t.shape.push_back(static_cast<int64_t>(v));
    if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v)
      throw bad("shape overflows");
    numel *= v;
  }

  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    throw bad("data_offsets must be two non-negative integers");
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.begin > t.end) throw bad("data_offsets begin > end");
  if (t.end > data_size)
    throw bad("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
              ") past the end of the data section (" + std::to_string(data_size) + " bytes)");
  const uint64_t elem = dtype_size(t.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / elem || numel * elem != t.end - t.begin)
    throw bad("shape and dtype need " + std::to_string(numel) + " x " + std::to_string(elem) +
              " bytes but data_offsets span " + std::to_string(t.end - t.begin));
  return t;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(err));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, ": truncated file (", size, " bytes; a safetensors file starts with an 8-byte "
         "header length)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) fail(path, ": mmap failed: ", std::strerror(map_err));

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(map);

  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > kMaxHeaderBytes)
    fail(path, ": header length ", header_len, " is absurd (limit ", kMaxHeaderBytes, ")");
  if (header_len > size - 8)
    fail(path, ": header length ", header_len, " runs past the end of the file (", size,
         " bytes): truncated file?");
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(path, ": header is not a JSON object");
  f->data_ = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    f->tensors_.push_back(parse_entry(path, it.key(), it.value(), data_size));
  }
  // Overlapping tensors would alias memory: reject them (empty tensors overlap nothing).
  std::vector<const SafetensorInfo*> order;
  for (const auto& t : f->tensors_)
    if (t.end > t.begin) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const SafetensorInfo* a, const SafetensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->begin < order[i - 1]->end)
      fail(path, ": tensors '", order[i - 1]->name, "' and '", order[i]->name,
           "' have overlapping data_offsets");
  }
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_.emplace(f->tensors_[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const SafetensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace iris
