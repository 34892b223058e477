#include "exact_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

#include "checks.h"
#include "ids.h"
#include "io.h"
#include "kernels/kernels.h"

namespace avq {

ExactIndex::ExactIndex(Metric metric, uint32_t d) : metric_(metric), d_(d) {
  if (d == 0) throw InvalidArgument("d must be positive");
  if (d > limits::kMaxDim) throw InvalidArgument("d must be <= " + std::to_string(limits::kMaxDim));
  if (static_cast<uint32_t>(metric) > 2) throw InvalidArgument("unknown metric");
}

size_t ExactIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return ids_.size();
}

std::vector<int64_t> ExactIndex::all_ids() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return ids_;
}

size_t ExactIndex::memory_usage() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return sizeof(*this) + vecs_.capacity() * sizeof(float) + ids_.capacity() * sizeof(int64_t) +
         pos_.bucket_count() * sizeof(void*) + pos_.size() * 32;
}

void ExactIndex::add(const float* x, size_t n, const int64_t* ids) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  const std::vector<int64_t> nid = new_ids_for_add(ids, n, next_id_, [&](int64_t id) { return pos_.count(id) != 0; });
  const size_t d = d_;
  check_vectors(x, n, d, metric_, "X row");
  vecs_.reserve(vecs_.size() + n * d);
  for (size_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    if (metric_ == Metric::kCosine) {
      double s = 0;
      for (size_t j = 0; j < d; ++j) s += double(xi[j]) * xi[j];
      double nrm = std::sqrt(s);
      for (size_t j = 0; j < d; ++j) vecs_.push_back(static_cast<float>(xi[j] / nrm));
    } else {
      vecs_.insert(vecs_.end(), xi, xi + d);
    }
    pos_[nid[i]] = ids_.size();
    ids_.push_back(nid[i]);
    next_id_ = next_id_after(next_id_, nid[i]);
  }
}

size_t ExactIndex::remove(const int64_t* ids, size_t n) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  size_t removed = 0;
  for (size_t t = 0; t < n; ++t) {
    auto it = pos_.find(ids[t]);
    if (it == pos_.end()) continue;
    size_t p = it->second, last = ids_.size() - 1;
    if (p != last) {
      std::memcpy(&vecs_[p * d_], &vecs_[last * d_], d_ * sizeof(float));
      ids_[p] = ids_[last];
      pos_[ids_[p]] = p;
    }
    ids_.pop_back();
    vecs_.resize(last * d_);
    pos_.erase(it);
    ++removed;
  }
  return removed;
}

void ExactIndex::reset() {
  std::unique_lock<std::shared_mutex> lock(mu_);
  std::vector<float>().swap(vecs_);
  std::vector<int64_t>().swap(ids_);
  std::unordered_map<int64_t, size_t>().swap(pos_);
  next_id_ = 0;
}

void ExactIndex::search(const float* q, size_t nq, size_t k, int nthreads, float* D, int64_t* I) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (k == 0) throw InvalidArgument("k must be positive");
  const size_t n = ids_.size(), d = d_;
  check_vectors(q, nq, d, metric_, "query");
  const bool l2 = metric_ == Metric::kL2;
  parallel_for(nq, nthreads, 1, [&](size_t b, size_t e) {
    const kernels::KernelTable& kt = kernels::active();
    std::vector<float> qv(d), sc(n);
    std::vector<uint32_t> order(n);
    for (size_t i = b; i < e; ++i) {
      float* Di = D + i * k;
      int64_t* Ii = I + i * k;
      const float* qi = q + i * d;
      if (metric_ == Metric::kCosine) {
        double s = 0;
        for (size_t j = 0; j < d; ++j) s += double(qi[j]) * qi[j];
        double nrm = std::sqrt(s);  // > 0: checked above
        for (size_t j = 0; j < d; ++j) qv[j] = static_cast<float>(qi[j] / nrm);
      } else {
        std::memcpy(qv.data(), qi, d * sizeof(float));
      }
      if (l2)
        kt.l2sqr_batch(qv.data(), vecs_.data(), n, d, sc.data());
      else
        kt.dot_batch(qv.data(), vecs_.data(), n, d, sc.data());
      std::iota(order.begin(), order.end(), 0u);
      size_t keep = std::min(k, n);
      auto cmp = [&](uint32_t a, uint32_t c) {
        if (sc[a] != sc[c]) return l2 ? sc[a] < sc[c] : sc[a] > sc[c];
        return ids_[a] < ids_[c];
      };
      std::partial_sort(order.begin(), order.begin() + keep, order.end(), cmp);
      for (size_t j = 0; j < k; ++j) {
        if (j < keep) {
          Di[j] = sc[order[j]];
          Ii[j] = ids_[order[j]];
        } else {
          Di[j] = l2 ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::max();
          Ii[j] = -1;
        }
      }
    }
  });
}

std::string ExactIndex::serialize() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ContainerWriter w(kKindExact);
  ByteWriter pw;
  pw.put<uint32_t>(static_cast<uint32_t>(metric_));
  pw.put<uint32_t>(d_);
  pw.put<uint64_t>(ids_.size());
  pw.put<int64_t>(next_id_);
  w.add_owned("PARM", pw.take());
  w.add("IDS_", {{ids_.data(), ids_.size() * sizeof(int64_t)}});
  w.add("VECS", {{vecs_.data(), vecs_.size() * sizeof(float)}});
  return w.to_string();
}

std::unique_ptr<ExactIndex> ExactIndex::deserialize(const uint8_t* data, size_t size) {
  ContainerReader r(data, size);
  if (r.kind() != kKindExact)
    throw InvalidArgument(r.kind() == kKindAVQ ? "this file holds an AVQIndex, not an ExactIndex"
                                               : "corrupted index file: unknown index kind");
  ByteReader pr(r.get("PARM"), "PARM");
  uint32_t metric = pr.get<uint32_t>();
  uint32_t d = pr.get<uint32_t>();
  uint64_t n = pr.get<uint64_t>();
  int64_t next_id = pr.get<int64_t>();
  if (metric > 2 || d == 0 || d > limits::kMaxDim) throw InvalidArgument("corrupted index file: invalid parameters");
  if (n > size / d) throw InvalidArgument("corrupted index file: invalid vector count");
  std::unique_ptr<ExactIndex> idx(new ExactIndex(static_cast<Metric>(metric), d));
  const int64_t* ids = expect_array<int64_t>(r, "IDS_", n);
  const float* vecs = expect_array<float>(r, "VECS", n * d);
  // The rules of add(), applied to what the file holds.
  check_stored_ids(ids, n, next_id);
  try {
    check_vectors(vecs, n, d, idx->metric_, "VECS row");
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("corrupted index file: ") + e.what());
  }
  idx->ids_.assign(ids, ids + n);
  idx->vecs_.assign(vecs, vecs + n * d);
  idx->pos_.reserve(n);
  for (size_t i = 0; i < n; ++i) idx->pos_.emplace(ids[i], i);
  idx->next_id_ = next_id;
  return idx;
}

}  // namespace avq
