// Tensor: a non-owning, contiguous, row-major view of memory on some backend's device, and
// Buffer: an allocation that owns the memory a Tensor views. Model code passes Tensors to
// Ops; whoever allocated the Buffer (a backend, the model runner's workspace) keeps it alive.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "engine/core/check.h"
#include "engine/core/dtype.h"

namespace iris {

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> dims{};
  int ndim = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) {
    IRIS_CHECK(d.size() <= kMaxDims) << "at most " << kMaxDims << " dims";
    for (int64_t v : d) dims[ndim++] = v;
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (ndim != o.ndim) return false;
    for (int i = 0; i < ndim; ++i)
      if (dims[i] != o.dims[i]) return false;
    return true;
  }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  }
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;

  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i]; }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool defined() const { return data != nullptr; }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // Rows [begin, begin + n) of the leading dimension, as a view.
  Tensor rows(int64_t begin, int64_t n) const {
    IRIS_CHECK(shape.ndim >= 1 && begin >= 0 && begin + n <= shape[0])
        << "rows(" << begin << ", " << n << ") of " << shape.str();
    Tensor t = *this;
    t.shape.dims[0] = n;
    const size_t row_bytes = shape[0] ? bytes() / static_cast<size_t>(shape[0]) : 0;
    t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * row_bytes;
    return t;
  }
  // Same memory, another shape with the same number of elements.
  Tensor view(Shape s) const {
    IRIS_CHECK(s.numel() == numel()) << "view " << s.str() << " of " << shape.str();
    Tensor t = *this;
    t.shape = s;
    return t;
  }
};

// Owns device (or host) memory; `tensor` views all of it.
struct Buffer {
  std::shared_ptr<void> memory;
  Tensor tensor;
};

}  // namespace iris
