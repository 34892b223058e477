// Training: the partition (k-means), the anisotropic codebooks, the int8 scales; encoding of
// new vectors (leaf and codes) for add().
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>

#include "checks.h"
#include "index.h"
#include "kmeans.h"

namespace avq {

void Index::build_codebooks_t() {
  codebooks_t_.assign(codebooks_.size(), 0.f);
  transpose_codebook(layout_, codebooks_.data(), codebooks_t_.data());
}

void Index::train(const float* x, size_t n, int nthreads, Monitor* mon) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  const size_t d = p_.d;
  if (n == 0) throw InvalidArgument("cannot train on an empty array");
  check_vectors(x, n, d, p_.metric, "X row");
  check_data_scale(x, n, d, p_.metric);
  if (p_.num_leaves == 0) throw InvalidArgument("num_leaves must be set before training (avq_plugin._params)");
  const size_t L = p_.num_leaves;
  if (L > n)
    throw InvalidArgument("num_leaves (" + std::to_string(L) + ") exceeds the number of training vectors (" +
                          std::to_string(n) + ")");
  // Training sample (sorted random subset, deterministic for the seed).
  // Default sample (training_sample_rows): enough rows for the partitioner; the codebooks
  // (16 x d numbers) are then trained on at most 50k of them. An explicit size is used for both.
  const size_t S = training_sample_rows(n, L, p_.training_sample_size);
  std::vector<size_t> sample(n);
  std::iota(sample.begin(), sample.end(), 0);
  if (S < n) {
    std::mt19937_64 rng(p_.seed * 0x2545F4914F6CDD1DULL + 7);
    for (size_t i = 0; i < S; ++i)
      std::swap(sample[i], sample[i + std::uniform_int_distribution<size_t>(0, n - 1 - i)(rng)]);
    sample.resize(S);
    std::sort(sample.begin(), sample.end());
  }
  std::vector<float> xs(S * d);
  for (size_t i = 0; i < S; ++i) prepare_vector(x + sample[i] * d, xs.data() + i * d);

  // Partitioning.
  const bool spherical = p_.metric != Metric::kL2;
  KMeansOptions ko;
  ko.k = L;
  ko.iterations = static_cast<int>(p_.kmeans_iterations);
  ko.spherical = spherical;
  ko.seed = p_.seed;
  ko.nthreads = nthreads;
  ko.stage = "partition k-means";
  std::vector<uint32_t> assign;
  std::vector<float> probe = train_kmeans(xs.data(), S, d, ko, mon, &assign);
  std::vector<float> resid = probe;
  if (spherical) {
    // Residuals are taken to the cluster means (the L2-optimal centre); probing uses directions.
    std::vector<double> sums(L * d, 0.0);
    std::vector<size_t> cnt(L, 0);
    for (size_t i = 0; i < S; ++i) {
      cnt[assign[i]]++;
      for (size_t j = 0; j < d; ++j) sums[assign[i] * d + j] += xs[i * d + j];
    }
    for (size_t l = 0; l < L; ++l)
      if (cnt[l])
        for (size_t j = 0; j < d; ++j) resid[l * d + j] = static_cast<float>(sums[l * d + j] / double(cnt[l]));
  }
  check_stop(mon);

  // Codebooks on the residuals of the sample.
  auto eta_fn_ptr = std::make_shared<EtaFunction>(p_.threshold, p_.eta, p_.eta_scann, static_cast<int>(d));
  const EtaFunction& eta_fn = *eta_fn_ptr;
  const size_t Sq = p_.training_sample_size ? S : std::min<size_t>(S, 50000);
  std::vector<float> R(Sq * d), U(Sq * d, 0.f);
  std::vector<double> eta(Sq, 1.0);
  TrainStats st;
  st.threshold = p_.threshold;
  st.sample_size = Sq;
  st.eta_min = std::numeric_limits<double>::infinity();
  st.eta_max = -st.eta_min;
  double eta_sum = 0;
  size_t with_direction = 0;
  for (size_t i = 0; i < Sq; ++i) {
    const size_t src = i * S / Sq;  // evenly strided over the (random) sample
    const float* xi = xs.data() + src * d;
    const float* c = resid.data() + size_t(assign[src]) * d;
    for (size_t j = 0; j < d; ++j) R[i * d + j] = xi[j] - c[j];
    double nrm = norm_of(xi, d);
    if (nrm > 0) {
      // Zero vectors have no direction: they get plain PQ and stay out of the eta statistics.
      for (size_t j = 0; j < d; ++j) U[i * d + j] = static_cast<float>(xi[j] / nrm);
      eta[i] = eta_fn(p_.metric == Metric::kCosine ? 1.0 : nrm);  // cosine: unit by construction
      st.eta_min = std::min(st.eta_min, eta[i]);
      st.eta_max = std::max(st.eta_max, eta[i]);
      eta_sum += eta[i];
      ++with_direction;
    }
  }
  if (with_direction == 0) st.eta_min = st.eta_max = 1.0;
  st.eta_mean = with_direction ? eta_sum / double(with_direction) : 1.0;
  // eta < 1 (ScaNN formula with T < norm/sqrt(d)) would reward parallel error: clamp to plain
  // PQ for those points, as ScaNN effectively does; the Python layer warns.
  for (double& e : eta) e = std::max(e, 1.0);
  CodebookTrainOptions co;
  co.kmeans_iterations = static_cast<int>(p_.pq_kmeans_iterations);
  co.avq_iterations = static_cast<int>(p_.avq_iterations);
  co.seed = p_.seed;
  co.nthreads = nthreads;
  CodebookTrainStats cs;
  std::vector<float> cb = train_codebooks(R.data(), eta_fn.plain() ? nullptr : U.data(),
                                          eta_fn.plain() ? nullptr : eta.data(), Sq, layout_, co, mon, &cs);
  st.loss = cs.loss;

  std::vector<float> scale(d, 1.f);
  if (p_.reorder == ReorderMode::kInt8) {
    for (size_t j = 0; j < d; ++j) {
      float mx = 0;
      for (size_t i = 0; i < S; ++i) mx = std::max(mx, std::fabs(xs[i * d + j]));
      scale[j] = mx > 0 ? mx / 127.f : 1.f;
    }
  }

  // Commit.
  mapping_.reset();
  threshold_used_ = p_.threshold;
  eta_fn_ = eta_fn_ptr;
  nleaves_ = L;
  probe_centers_ = std::move(probe);
  build_probe_table();
  resid_centers_ = std::move(resid);
  codebooks_ = std::move(cb);
  build_codebooks_t();
  int8_scale_ = std::move(scale);
  stats_ = st;
  start_empty(L);
}

void Index::encode_points(const float* x, size_t n, int nthreads, Monitor* mon, std::vector<uint32_t>& leaf_of,
                          std::vector<uint8_t>& codes) const {
  const size_t d = p_.d, M = layout_.num_blocks, L = nleaves_;
  const bool by_dot = p_.metric != Metric::kL2;
  const EtaFunction& eta_fn = *eta_fn_;
  leaf_of.resize(n);
  codes.resize(n * M);
  const size_t step = 8192;
  for (size_t b0 = 0; b0 < n; b0 += step) {
    check_stop(mon);
    size_t e0 = std::min(n, b0 + step);
    parallel_for(e0 - b0, nthreads, 256, [&](size_t b, size_t e) {
      // Leaves first, a block of vectors at a time (the centre table is read once per block).
      const size_t G = probe_table_.ngroups * 16, rows = score_rows(G);
      std::vector<float> vb(rows * d), scores(rows * G);
      for (size_t ib = b; ib < e; ib += rows) {
        const size_t nb = std::min(rows, e - ib);
        for (size_t t = 0; t < nb; ++t) prepare_vector(x + (b0 + ib + t) * d, vb.data() + t * d);
        probe_table_.score_multi(vb.data(), nb, by_dot, scores.data());
        for (size_t t = 0; t < nb; ++t) leaf_of[b0 + ib + t] = argmax_first(scores.data() + t * G, L);
      }
      std::vector<float> v(d), r(d), u(d);
      EncodeScratch sc;
      for (size_t ii = b; ii < e; ++ii) {
        size_t i = b0 + ii;
        prepare_vector(x + i * d, v.data());
        const uint32_t best = leaf_of[i];
        const float* c = resid_centers_.data() + size_t(best) * d;
        for (size_t j = 0; j < d; ++j) r[j] = v[j] - c[j];
        double nrm = norm_of(v.data(), d);
        double eta = 1.0;
        if (nrm > 0 && !eta_fn.plain()) {
          for (size_t j = 0; j < d; ++j) u[j] = static_cast<float>(v[j] / nrm);
          eta = std::max(1.0, eta_fn(p_.metric == Metric::kCosine ? 1.0 : nrm));
        }
        encode_anisotropic(r.data(), eta != 1.0 ? u.data() : nullptr, eta, layout_, codebooks_t_.data(),
                           codes.data() + i * M, sc);
      }
    });
    if (mon) mon->progress("encode", e0, n, "");
  }
}

}  // namespace avq
