#include "io.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>

#include "checks.h"
#include "huge_pages.h"
#include "ids.h"
#include "index.h"

namespace avq {

namespace {

const char kMagic[8] = {'A', 'V', 'Q', 'I', 'N', 'D', 'E', 'X'};
constexpr uint32_t kEndian = 0x01020304u;
constexpr size_t kAlign = 64;

inline size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

struct CrcTable {
  uint32_t t[256];
  CrcTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
  }
};

std::string errno_text() {
  return std::string(std::strerror(errno));
}

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  static const CrcTable table;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::shared_ptr<Mapping> Mapping::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IOError("cannot open '" + path + "': " + errno_text());
  struct stat st;
  if (fstat(fd, &st) != 0) {
    std::string e = errno_text();
    ::close(fd);
    throw IOError("cannot stat '" + path + "': " + e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IOError("'" + path + "' is not a regular file");
  }
  std::shared_ptr<Mapping> m(new Mapping());
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::string e = errno_text();
      ::close(fd);
      throw IOError("cannot map '" + path + "': " + e);
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

Mapping::~Mapping() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 18 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Removes the temporary files that earlier saves to `path` left behind when their process died
// (kill -9, power loss): names "<file>.tmp-<pid>-<n>" of our own pattern whose pid is not a live
// process. Files of live processes (a save under way elsewhere), of this process, of other
// paths or of any other naming are left alone. Best effort: errors are ignored.
void remove_stale_temp_files(const std::string& dir, const std::string& base) {
  DIR* dp = ::opendir(dir.c_str());
  if (!dp) return;
  const std::string prefix = base + ".tmp-";
  const pid_t self = ::getpid();
  std::vector<std::string> stale;
  while (struct dirent* e = ::readdir(dp)) {
    const std::string name = e->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const size_t dash = rest.find('-');
    if (dash == std::string::npos) continue;
    const std::string pid_s = rest.substr(0, dash), n_s = rest.substr(dash + 1);
    if (!all_digits(pid_s) || !all_digits(n_s)) continue;
    const long long pid = std::stoll(pid_s);
    if (pid <= 0 || pid == self || pid > std::numeric_limits<pid_t>::max()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    stale.push_back(name);
  }
  ::closedir(dp);
  for (const std::string& name : stale) ::unlink((dir + "/" + name).c_str());
}

// Makes a rename in `dir` durable. Filesystems that cannot sync a directory say EINVAL.
void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw IOError("cannot open directory '" + dir + "' to sync it: " + errno_text());
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    std::string e = errno_text();
    ::close(fd);
    throw IOError("cannot sync directory '" + dir + "': " + e);
  }
  ::close(fd);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  static std::atomic<unsigned> counter{0};
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  remove_stale_temp_files(dir, base);
  std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw IOError("cannot create '" + tmp + "': " + errno_text());
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + off, std::min<size_t>(bytes.size() - off, size_t(1) << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      std::string e = errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw IOError("cannot write '" + tmp + "': " + e);
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string e = errno_text();
    ::unlink(tmp.c_str());
    throw IOError("cannot flush '" + tmp + "': " + e);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string e = errno_text();
    ::unlink(tmp.c_str());
    throw IOError("cannot rename '" + tmp + "' to '" + path + "': " + e);
  }
  fsync_directory(dir);
}

void ContainerWriter::add(const char* tag, Pieces pieces) {
  Section s;
  std::memcpy(s.tag, tag, 4);
  s.pieces = std::move(pieces);
  sections_.push_back(std::move(s));
}

void ContainerWriter::add_owned(const char* tag, std::string payload) {
  owned_.push_back(std::move(payload));
  Section s;
  std::memcpy(s.tag, tag, 4);
  s.owned = owned_.size() - 1;
  sections_.push_back(std::move(s));
}

std::string ContainerWriter::to_string() const {
  size_t total = kAlign;
  std::vector<size_t> lens;
  for (const Section& s : sections_) {
    size_t len = 0;
    if (s.owned != SIZE_MAX)
      len = owned_[s.owned].size();
    else
      for (const auto& p : s.pieces) len += p.second;
    lens.push_back(len);
    total += kAlign + align_up(len);
  }
  std::string out(total, '\0');
  char* base = &out[0];
  std::memcpy(base, kMagic, 8);
  uint32_t u32;
  uint64_t u64;
  u32 = kFormatVersion;
  std::memcpy(base + 8, &u32, 4);
  u32 = kEndian;
  std::memcpy(base + 12, &u32, 4);
  std::memcpy(base + 16, &kind_, 4);
  u32 = static_cast<uint32_t>(sections_.size());
  std::memcpy(base + 20, &u32, 4);
  u64 = total;
  std::memcpy(base + 24, &u64, 8);
  u32 = crc32(base, 32);
  std::memcpy(base + 32, &u32, 4);
  size_t off = kAlign;
  for (size_t i = 0; i < sections_.size(); ++i) {
    const Section& s = sections_[i];
    char* h = base + off;
    char* payload = h + kAlign;
    size_t w = 0;
    if (s.owned != SIZE_MAX) {
      std::memcpy(payload, owned_[s.owned].data(), lens[i]);
    } else {
      for (const auto& p : s.pieces) {
        if (p.second) std::memcpy(payload + w, p.first, p.second);
        w += p.second;
      }
    }
    std::memcpy(h, s.tag, 4);
    u64 = lens[i];
    std::memcpy(h + 8, &u64, 8);
    u32 = crc32(payload, lens[i]);
    std::memcpy(h + 16, &u32, 4);
    off += kAlign + align_up(lens[i]);
  }
  return out;
}

ContainerReader::ContainerReader(const uint8_t* data, size_t size, const std::vector<std::string>& unchecked) {
  if (size < kAlign || data == nullptr)
    throw InvalidArgument("not an avq-plugin index: the data is too short (" + std::to_string(size) + " bytes)");
  if (std::memcmp(data, kMagic, 8) != 0) throw InvalidArgument("not an avq-plugin index: bad magic bytes");
  uint32_t version, endian, nsec, hcrc;
  uint64_t total;
  std::memcpy(&version, data + 8, 4);
  std::memcpy(&endian, data + 12, 4);
  std::memcpy(&kind_, data + 16, 4);
  std::memcpy(&nsec, data + 20, 4);
  std::memcpy(&total, data + 24, 8);
  std::memcpy(&hcrc, data + 32, 4);
  if (endian != kEndian) throw InvalidArgument("index file has a foreign byte order or a corrupted header");
  if (hcrc != crc32(data, 32)) throw InvalidArgument("corrupted index file: header checksum mismatch");
  if (version > kFormatVersion)
    throw InvalidArgument("index file format version " + std::to_string(version) +
                          " is newer than this avq-plugin supports (" + std::to_string(kFormatVersion) +
                          "); upgrade avq-plugin");
  if (version == 0) throw InvalidArgument("corrupted index file: format version 0");
  version_ = version;
  if (total != size)
    throw InvalidArgument("truncated or corrupted index file: header says " + std::to_string(total) + " bytes, got " +
                          std::to_string(size));
  size_t off = kAlign;
  for (uint32_t i = 0; i < nsec; ++i) {
    if (size - off < kAlign || off > size)
      throw InvalidArgument("truncated index file: section " + std::to_string(i) + " header is missing");
    const uint8_t* h = data + off;
    std::string tag(reinterpret_cast<const char*>(h), 4);
    uint64_t len;
    uint32_t crc;
    std::memcpy(&len, h + 8, 8);
    std::memcpy(&crc, h + 16, 4);
    size_t avail = size - off - kAlign;
    if (len > avail || align_up(len) > avail)
      throw InvalidArgument("truncated or corrupted index file: section '" + tag + "' claims " + std::to_string(len) +
                            " bytes, " + std::to_string(avail) + " remain");
    const uint8_t* payload = h + kAlign;
    bool check = true;
    for (const std::string& u : unchecked)
      if (u == tag) check = false;
    if (check && crc32(payload, len) != crc)
      throw InvalidArgument("corrupted index file: checksum mismatch in section '" + tag + "'");
    sections_.push_back({tag, SectionView{payload, static_cast<size_t>(len)}});
    off += kAlign + align_up(len);
  }
  if (off != size) throw InvalidArgument("corrupted index file: trailing bytes after the last section");
}

bool ContainerReader::has(const char* tag) const {
  for (const auto& s : sections_)
    if (s.first == std::string(tag, 4)) return true;
  return false;
}

SectionView ContainerReader::get(const char* tag) const {
  for (const auto& s : sections_)
    if (s.first == std::string(tag, 4)) return s.second;
  throw InvalidArgument(std::string("corrupted index file: section '") + std::string(tag, 4) + "' is missing");
}

// ---------------------------------------------------------------------------------- AVQ index

std::string Index::serialize() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ContainerWriter w(kKindAVQ);
  ByteWriter pw;
  pw.put<uint32_t>(static_cast<uint32_t>(p_.metric));
  pw.put<uint32_t>(p_.d);
  pw.put<uint32_t>(p_.num_leaves);
  pw.put<uint32_t>(p_.dims_per_block);
  pw.put<double>(p_.threshold);
  pw.put<double>(p_.eta);
  pw.put<uint32_t>(p_.eta_scann ? 1 : 0);
  pw.put<uint32_t>(p_.avq_iterations);
  pw.put<uint32_t>(p_.kmeans_iterations);
  pw.put<uint32_t>(p_.pq_kmeans_iterations);
  pw.put<uint64_t>(p_.training_sample_size);
  pw.put<uint64_t>(p_.seed);
  pw.put<uint32_t>(static_cast<uint32_t>(p_.reorder));
  pw.put<uint32_t>(trained_ ? 1 : 0);
  pw.put<uint64_t>(nleaves_);
  pw.put<uint64_t>(ntotal_);
  pw.put<int64_t>(next_id_);
  pw.put<double>(threshold_used_);
  pw.put<uint32_t>(p_.default_leaves_to_search);
  pw.put<uint32_t>(p_.default_reorder_k);
  pw.put<uint32_t>(p_.l2_decoded_norms ? 1 : 0);
  w.add_owned("PARM", pw.take());
  if (trained_) {
    ByteWriter sw;
    sw.put<double>(stats_.eta_min);
    sw.put<double>(stats_.eta_max);
    sw.put<double>(stats_.eta_mean);
    sw.put<double>(stats_.threshold);
    sw.put<uint64_t>(stats_.sample_size);
    sw.put<uint64_t>(stats_.loss.size());
    for (double v : stats_.loss) sw.put<double>(v);
    w.add_owned("STAT", sw.take());
    w.add("PCEN", {{probe_centers_.data(), probe_centers_.size() * sizeof(float)}});
    w.add("RCEN", {{resid_centers_.data(), resid_centers_.size() * sizeof(float)}});
    w.add("CBOK", {{codebooks_.data(), codebooks_.size() * sizeof(float)}});
    w.add("SCAL", {{int8_scale_.data(), int8_scale_.size() * sizeof(float)}});
    ByteWriter lw;
    for (const Leaf& l : leaves_) lw.put<uint64_t>(l.n);
    w.add_owned("LSIZ", lw.take());
    ContainerWriter::Pieces ids, codes, vecs, bias;
    const size_t d = p_.d, gb = group_bytes();
    // Reorder rows are written leaf by leaf, without the arena's holes.
    size_t row_bytes = 0;
    const uint8_t* store = nullptr;
    const char* section = nullptr;
    switch (p_.reorder) {
      case ReorderMode::kFloat32:
        row_bytes = d * sizeof(float), store = reinterpret_cast<const uint8_t*>(rvec_p_), section = "RVEC";
        break;
      case ReorderMode::kInt8:
        row_bytes = d, store = reinterpret_cast<const uint8_t*>(rvec8_p_), section = "RV8_";
        break;
      case ReorderMode::kFloat16:
        row_bytes = f16_row_width() * sizeof(uint16_t), store = reinterpret_cast<const uint8_t*>(rvec16_p_);
        section = "RV16";
        break;
      case ReorderMode::kNone:
        break;
    }
    for (const Leaf& l : leaves_) {
      ids.push_back({l.ids_p, l.n * sizeof(int64_t)});
      codes.push_back({l.codes_p, ((l.n + 31) / 32) * gb});
      if (section) vecs.push_back({store + l.row_off * row_bytes, l.n * row_bytes});
      if (p_.metric == Metric::kL2) bias.push_back({l.bias_p, l.n * sizeof(float)});
    }
    w.add("IDS_", ids);
    w.add("CODE", codes);
    if (section) w.add(section, vecs);
    if (p_.metric == Metric::kL2) w.add("BIAS", bias);
  }
  if (p_.default_leaf_margin >= 0) {  // optional section: absent when there is no stored margin
    ByteWriter mw;
    mw.put<uint32_t>(1);  // section version
    mw.put<double>(p_.default_leaf_margin);
    w.add_owned("MRGN", mw.take());
  }
  if (spill_) {
    std::vector<const uint8_t*> spill_codes;
    for (const Leaf& l : leaves_) spill_codes.push_back(l.spill_p);
    w.add_owned("SOAR", spill_->serialize(spill_codes, group_bytes(), p_.metric == Metric::kL2));
  }
  return w.to_string();
}

namespace {
void check_finite(const float* p, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) throw InvalidArgument(std::string("corrupted index file: non-finite value in ") + what);
}
// Coordinates (centres, codebooks) obey the data's rule: finite and |v| <= limits::kMaxAbsValue.
void check_coordinates(const float* p, size_t n, const char* what) {
  check_finite(p, n, what);
  for (size_t i = 0; i < n; ++i)
    if (!(std::fabs(p[i]) <= limits::kMaxAbsValue))
      throw InvalidArgument(std::string("corrupted index file: value out of range in ") + what);
}
}  // namespace

std::unique_ptr<Index> Index::deserialize(const uint8_t* data, size_t size, std::shared_ptr<Mapping> mapping) {
  std::vector<std::string> unchecked;
  if (mapping) unchecked = {"CODE", "RVEC", "RV8_"};
  ContainerReader r(data, size, unchecked);
  if (r.kind() != kKindAVQ)
    throw InvalidArgument(r.kind() == kKindExact ? "this file holds an ExactIndex, not an AVQIndex"
                                                 : "corrupted index file: unknown index kind");
  ByteReader pr(r.get("PARM"), "PARM");
  IndexParams p;
  uint32_t metric = pr.get<uint32_t>();
  if (metric > 2) throw InvalidArgument("corrupted index file: unknown metric");
  p.metric = static_cast<Metric>(metric);
  p.d = pr.get<uint32_t>();
  p.num_leaves = pr.get<uint32_t>();
  p.dims_per_block = pr.get<uint32_t>();
  p.threshold = pr.get<double>();
  p.eta = pr.get<double>();
  p.eta_scann = pr.get<uint32_t>() != 0;
  p.avq_iterations = pr.get<uint32_t>();
  p.kmeans_iterations = pr.get<uint32_t>();
  p.pq_kmeans_iterations = pr.get<uint32_t>();
  p.training_sample_size = pr.get<uint64_t>();
  p.seed = pr.get<uint64_t>();
  uint32_t reorder = pr.get<uint32_t>();
  if (!valid_reorder(reorder)) throw InvalidArgument("corrupted index file: unknown reorder mode");
  p.reorder = static_cast<ReorderMode>(reorder);
  bool trained = pr.get<uint32_t>() != 0;
  uint64_t L = pr.get<uint64_t>();
  uint64_t ntotal = pr.get<uint64_t>();
  int64_t next_id = pr.get<int64_t>();
  double threshold_used = pr.get<double>();
  p.default_leaves_to_search = pr.get<uint32_t>();
  p.default_reorder_k = pr.get<uint32_t>();
  // Version 1 stored how the Python layer specified T (0 a number, 1 "auto", 2 none); version 2
  // stores the concrete threshold only.
  if (r.version() == 1 && pr.get<uint32_t>() > 2) throw InvalidArgument("corrupted index file: invalid threshold mode");
  // The l2 norm flag: optional at the end of a version-1 PARM, always present from version 2.
  if (r.version() >= 2 || pr.remaining() >= sizeof(uint32_t)) {
    uint32_t flag = pr.get<uint32_t>();
    if (flag > 1) throw InvalidArgument("corrupted index file: invalid l2 norm mode");
    p.l2_decoded_norms = flag != 0;
  }
  if (p.d == 0 || p.d > limits::kMaxDim || p.dims_per_block < 1 || p.dims_per_block > limits::kMaxDimsPerBlock)
    throw InvalidArgument("corrupted index file: invalid dimension or dims_per_block");
  if (!(std::isnan(threshold_used) || (std::isfinite(threshold_used) && threshold_used >= 0)))
    throw InvalidArgument("corrupted index file: invalid threshold");
  if (r.version() >= 2 && trained && (p.num_leaves == 0 || p.default_leaves_to_search == 0 || p.default_reorder_k == 0))
    throw InvalidArgument("corrupted index file: a version-2 file must store num_leaves and the search budget");
  if (trained && p.num_leaves != L) {
    if (r.version() >= 2 || L == 0 || L > limits::kMaxLeaves)
      throw InvalidArgument("corrupted index file: invalid number of leaves");
    p.num_leaves = static_cast<uint32_t>(L);  // version 1: 0 meant "about sqrt(n)"
  }
  if (r.has("SOAR")) {  // optional section (soar.h): absent in files without spilling
    const SectionView sv = r.get("SOAR");
    p.spill = SpillMode::kSoar;
    p.soar_lambda = SpillStore::read_lambda(sv.data, sv.size);
  }
  if (r.has("MRGN")) {  // optional section: the stored default leaf_margin (absent: none)
    ByteReader mr(r.get("MRGN"), "MRGN");
    if (mr.get<uint32_t>() != 1) throw InvalidArgument("corrupted index file: unknown MRGN section version");
    p.default_leaf_margin = mr.get<double>();
    if (!(p.default_leaf_margin >= 0)) throw InvalidArgument("corrupted index file: invalid stored leaf_margin");
  }
  std::unique_ptr<Index> idx;
  try {
    idx.reset(new Index(p));  // the constructor's rule for every parameter
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("corrupted index file: ") + e.what());
  }
  idx->threshold_used_ = threshold_used;
  if (!trained) return idx;
  idx->eta_fn_ = std::make_shared<EtaFunction>(threshold_used, p.eta, p.eta_scann, static_cast<int>(p.d));
  const size_t d = p.d;
  if (L == 0 || L > limits::kMaxLeaves || L > size / (d * sizeof(float)))
    throw InvalidArgument("corrupted index file: invalid number of leaves");
  if (ntotal > size / sizeof(int64_t)) throw InvalidArgument("corrupted index file: invalid vector count");

  ByteReader sr(r.get("STAT"), "STAT");
  idx->stats_.eta_min = sr.get<double>();
  idx->stats_.eta_max = sr.get<double>();
  idx->stats_.eta_mean = sr.get<double>();
  idx->stats_.threshold = sr.get<double>();
  idx->stats_.sample_size = sr.get<uint64_t>();
  uint64_t nloss = sr.get<uint64_t>();
  if (nloss > sr.remaining() / sizeof(double)) throw InvalidArgument("corrupted index file: section STAT is too short");
  for (uint64_t i = 0; i < nloss; ++i) idx->stats_.loss.push_back(sr.get<double>());
  {
    const TrainStats& st = idx->stats_;
    bool ok = std::isfinite(st.eta_min) && std::isfinite(st.eta_max) && std::isfinite(st.eta_mean) &&
              (std::isnan(st.threshold) || (std::isfinite(st.threshold) && st.threshold >= 0));
    for (double v : st.loss) ok = ok && std::isfinite(v);
    if (!ok) throw InvalidArgument("corrupted index file: non-finite value in STAT");
  }

  const float* pc = expect_array<float>(r, "PCEN", L * d);
  const float* rc = expect_array<float>(r, "RCEN", L * d);
  const float* cb = expect_array<float>(r, "CBOK", 16 * d);
  const float* sc = expect_array<float>(r, "SCAL", d);
  check_coordinates(pc, L * d, "PCEN");
  check_coordinates(rc, L * d, "RCEN");
  check_coordinates(cb, 16 * d, "CBOK");
  idx->probe_centers_.assign(pc, pc + L * d);
  idx->build_probe_table();
  idx->resid_centers_.assign(rc, rc + L * d);
  idx->codebooks_.assign(cb, cb + 16 * d);
  idx->build_codebooks_t();
  idx->int8_scale_.assign(sc, sc + d);
  // An int8 row decodes to code * scale with |code| <= 127: the decoded coordinates obey the data's
  // range (a small slack for the rounding of the scale written by training).
  for (float s : idx->int8_scale_)
    if (!(s > 0 && 127.0 * s <= limits::kMaxAbsValue * (1 + 1e-6)))
      throw InvalidArgument("corrupted index file: invalid int8 scale");
  const uint64_t* sizes = expect_array<uint64_t>(r, "LSIZ", L);
  uint64_t sum = 0, ngroups = 0;
  for (uint64_t l = 0; l < L; ++l) {
    if (sizes[l] > ntotal || sizes[l] > 0xFFFFFFFFull) throw InvalidArgument("corrupted index file: invalid leaf size");
    sum += sizes[l];
    ngroups += (sizes[l] + 31) / 32;
  }
  if (sum != ntotal) throw InvalidArgument("corrupted index file: leaf sizes do not add up to the vector count");
  const size_t gb = idx->group_bytes();
  if (ngroups > size / gb) throw InvalidArgument("corrupted index file: invalid code section size");
  const int64_t* ids = expect_array<int64_t>(r, "IDS_", ntotal);
  const uint8_t* codes = expect_array<uint8_t>(r, "CODE", ngroups * gb);
  const float* vecs = nullptr;
  const int8_t* vecs8 = nullptr;
  const uint16_t* vecs16 = nullptr;
  const float* bias = nullptr;
  const size_t hw = idx->f16_row_width();
  if (p.reorder != ReorderMode::kNone && ntotal > size / hw)
    throw InvalidArgument("corrupted index file: invalid vector count");
  if (p.reorder == ReorderMode::kFloat32) vecs = expect_array<float>(r, "RVEC", ntotal * d);
  if (p.reorder == ReorderMode::kInt8) vecs8 = expect_array<int8_t>(r, "RV8_", ntotal * d);
  if (p.reorder == ReorderMode::kFloat16) vecs16 = expect_array<uint16_t>(r, "RV16", ntotal * hw);
  if (p.metric == Metric::kL2) bias = expect_array<float>(r, "BIAS", ntotal);
  // The rules of add() for what the file holds. The large sections of a memory-mapped load
  // (CODE, RVEC, RV8_, RV16) are used in place unread: like their checksums, their values are not
  // checked then (docs/reliability.md, "Memory-mapped files").
  check_stored_ids(ids, ntotal, next_id);
  if (bias) {
    check_finite(bias, ntotal, "BIAS");  // -0.5 ||x||^2: never positive
    for (uint64_t i = 0; i < ntotal; ++i)
      if (bias[i] > 0) throw InvalidArgument("corrupted index file: positive value in BIAS");
  }
  if (vecs8 && !mapping)
    for (uint64_t i = 0; i < ntotal * d; ++i)
      if (vecs8[i] == -128) throw InvalidArgument("corrupted index file: int8 value out of range in RV8_");
  if (vecs16 && !mapping)
    for (uint64_t i = 0; i < ntotal; ++i) {
      const uint16_t* h = vecs16 + i * hw;
      for (size_t j = 0; j < d; ++j)
        if ((h[j] & 0x7C00u) == 0x7C00u)
          throw InvalidArgument("corrupted index file: float16 value not finite in RV16");
      float s;
      std::memcpy(&s, h + d, sizeof(float));
      int e = 0;
      if (!(std::isfinite(s) && s > 0.f && std::frexp(s, &e) == 0.5f && e - 1 >= -126))
        throw InvalidArgument("corrupted index file: invalid row scale in RV16");
    }
  if (vecs && !mapping) {
    try {
      check_vectors(vecs, ntotal, d, p.metric, "RVEC row");
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(std::string("corrupted index file: ") + e.what());
    }
  }

  idx->nleaves_ = L;
  idx->leaves_.assign(L, Leaf());
  size_t off = 0, goff = 0;
  for (uint64_t l = 0; l < L; ++l) {
    Leaf& leaf = idx->leaves_[l];
    leaf.n = static_cast<uint32_t>(sizes[l]);
    size_t ng = (leaf.n + 31) / 32;
    leaf.row_off = off;
    leaf.row_cap = leaf.n;
    if (mapping) {
      leaf.codes_p = codes + goff * gb;
      leaf.ids_p = ids + off;
      leaf.bias_p = bias ? bias + off : nullptr;
      leaf.scan_p = leaf.bias_p;
    } else {
      leaf.codes.assign(codes + goff * gb, ng, nullptr, 0, gb);
      leaf.ids.assign(ids + off, ids + off + leaf.n);
      if (bias) leaf.bias.assign(bias + off, bias + off + leaf.n);
      idx->sync_views(leaf);
    }
    if (idx->scan_decoded_separately()) idx->fill_scan_bias(l);  // not stored: from the codes
    off += leaf.n;
    goff += ng;
  }
  idx->arena_rows_ = (vecs || vecs8 || vecs16) ? ntotal : 0;
  if (mapping) {
    idx->rvec_p_ = vecs;
    idx->rvec8_p_ = vecs8;
    idx->rvec16_p_ = vecs16;
  } else {
    if (vecs16) {
      reserve_huge(idx->rvec16_, ntotal * hw);
      idx->rvec16_.assign(vecs16, vecs16 + ntotal * hw);
    }
    if (vecs) {
      reserve_huge(idx->rvec_, ntotal * d);
      idx->rvec_.assign(vecs, vecs + ntotal * d);
    }
    if (vecs8) {
      reserve_huge(idx->rvec8_, ntotal * d);
      idx->rvec8_.assign(vecs8, vecs8 + ntotal * d);
    }
    idx->sync_store_views();
  }
  idx->ntotal_ = ntotal;
  idx->next_id_ = next_id;
  idx->trained_ = true;
  idx->mapping_ = mapping;
  if (idx->spill_) {
    const SectionView sv = r.get("SOAR");
    idx->spill_load(sv.data, sv.size);
  }
  return idx;
}

}  // namespace avq
