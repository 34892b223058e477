// The single-file container used by every index type, and memory mapping.
//
// File layout (all integers little-endian; the endianness marker rejects foreign files):
//   [0, 64)   file header: magic "AVQINDEX" (8 bytes), u32 format version, u32 endian marker
//             0x01020304, u32 kind (1 = AVQIndex, 2 = ExactIndex), u32 section count,
//             u64 total file size, u32 CRC-32 of bytes [0, 32), zero padding.
//   then for each section, at a 64-byte aligned offset: a 64-byte section header
//             (4-byte tag, u32 flags = 0, u64 payload length, u32 CRC-32 of the payload,
//             zero padding) followed by the payload, zero-padded to a multiple of 64 bytes.
// Payloads therefore start 64-byte aligned, so large arrays can be used in place from a
// memory-mapped file. Unknown tags are skipped (forward compatible within a format version).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace avq {

// Version 2 (0.2.0): PARM holds concrete values only (no 0 = "decided later" defaults, no
// threshold mode) and always ends with the l2 norm flag. Version 1 files still load.
constexpr uint32_t kFormatVersion = 2;
constexpr uint32_t kKindAVQ = 1;
constexpr uint32_t kKindExact = 2;

// Operating-system level I/O failure (becomes OSError in Python).
struct IOError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

// A read-only private mapping of a whole file.
class Mapping {
 public:
  static std::shared_ptr<Mapping> open(const std::string& path);
  ~Mapping();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  Mapping() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
void write_file_atomic(const std::string& path, const std::string& bytes);

class ContainerWriter {
 public:
  explicit ContainerWriter(uint32_t kind) : kind_(kind) {}
  using Pieces = std::vector<std::pair<const void*, size_t>>;
  // The pieces are concatenated into one payload; they must stay alive until to_string().
  void add(const char* tag, Pieces pieces);
  void add_owned(const char* tag, std::string payload);
  std::string to_string() const;

 private:
  struct Section {
    char tag[4];
    Pieces pieces;
    size_t owned = SIZE_MAX;  // index into owned_ when the payload is owned
  };
  uint32_t kind_;
  std::vector<Section> sections_;
  std::vector<std::string> owned_;
};

struct SectionView {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

class ContainerReader {
 public:
  // Validates the header, every section bound and every CRC except those of the tags in
  // `unchecked` (large arrays of a memory-mapped load). Throws InvalidArgument with a message
  // naming the problem.
  ContainerReader(const uint8_t* data, size_t size, const std::vector<std::string>& unchecked = {});
  uint32_t kind() const { return kind_; }
  uint32_t version() const { return version_; }  // 1 .. kFormatVersion
  bool has(const char* tag) const;
  SectionView get(const char* tag) const;  // throws InvalidArgument when missing

 private:
  uint32_t kind_ = 0;
  uint32_t version_ = 0;
  std::vector<std::pair<std::string, SectionView>> sections_;
};

// Little helpers for small fixed-layout payloads.
class ByteWriter {
 public:
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s_.append(b, sizeof(T));
  }
  std::string take() { return std::move(s_); }

 private:
  std::string s_;
};

class ByteReader {
 public:
  ByteReader(SectionView v, const char* what) : p_(v.data), n_(v.size), what_(what) {}
  template <class T>
  T get() {
    if (n_ - off_ < sizeof(T) || off_ > n_)
      throw InvalidArgument(std::string("corrupted file: section ") + what_ + " is too short");
    T v;
    std::memcpy(&v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return v;
  }
  size_t remaining() const { return n_ - off_; }

 private:
  const uint8_t* p_;
  size_t n_, off_ = 0;
  const char* what_;
};

// Expects a section of exactly `count` elements of T; returns a pointer to them.
template <class T>
const T* expect_array(const ContainerReader& r, const char* tag, size_t count) {
  SectionView v = r.get(tag);
  if (count > SIZE_MAX / sizeof(T) || v.size != count * sizeof(T))
    throw InvalidArgument(std::string("corrupted file: section ") + tag + " has " + std::to_string(v.size) +
                          " bytes, which does not match the header");
  return reinterpret_cast<const T*>(v.data);
}

}  // namespace avq
