// The AVQ index: k-means partitioning, anisotropic 4-bit PQ of residuals, LUT16 SIMD scan,
// exact reordering. See docs/parameters.md for the parameter glossary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "anisotropic.h"
#include "codes.h"
#include "common.h"
#include "kmeans.h"
#include "soar.h"

namespace avq {
namespace topk {
struct Cand;
}

namespace kernels {
struct KernelTable;
}

enum class Metric : uint32_t { kDot = 0, kCosine = 1, kL2 = 2 };
enum class ReorderMode : uint32_t { kNone = 0, kFloat32 = 1, kInt8 = 2, kFloat16 = 3 };
inline bool valid_reorder(uint32_t r) {
  return r <= static_cast<uint32_t>(ReorderMode::kFloat16);
}

const char* metric_name(Metric m);
const char* reorder_name(ReorderMode r);

// search()'s leaf_margin budget, the one rule (also the routed search's, through the binding
// margin_reorder_k): a query probing nprobe leaves where leaves_to_search asked for `asked`
// re-ranks reorder_k * sqrt(nprobe / asked), rounded up, at most ntotal; reorder_k itself (at
// most ntotal already) when nprobe <= asked.
inline size_t margin_reorder_k(size_t reorder_k, size_t nprobe, size_t asked, size_t ntotal) {
  if (nprobe <= asked || asked == 0) return reorder_k;
  return static_cast<size_t>(
      std::min(double(ntotal), std::ceil(double(reorder_k) * std::sqrt(double(nprobe) / double(asked)))));
}

// Every parameter of an index, concrete: the Python layer resolves the defaults
// (avq_plugin/_params.py) before it builds one, and the file stores these values.
struct IndexParams {
  Metric metric = Metric::kDot;
  uint32_t d = 0;
  uint32_t num_leaves = 0;  // leaves to train (must be set before train(); set_quantizer sets it)
  uint32_t dims_per_block = 2;
  double threshold = std::numeric_limits<double>::quiet_NaN();  // T; NaN: none
  double eta = 0;                                               // > 0: fixed eta for every point (overrides threshold)
  bool eta_scann = false;                                       // ScaNN's limit formula instead of the exact one
  uint32_t avq_iterations = 3;      // encode / codebook-update alternations (0: encode-only)
  uint32_t kmeans_iterations = 10;  // partitioner Lloyd iterations
  uint32_t pq_kmeans_iterations = 10;
  uint64_t training_sample_size = 0;  // 0: min(n, 100000)
  uint64_t seed = 0;
  ReorderMode reorder = ReorderMode::kFloat32;
  // Search defaults stored with the index (format version 1 files may hold 0: "chosen by the
  // Python layer", which completes them when it loads the file).
  uint32_t default_leaves_to_search = 0;
  uint32_t default_reorder_k = 0;
  // The leaf_margin search() uses when it is given none (negative: none, the fixed count; dot
  // and cosine only). Chosen by AVQIndex.tune; stored in the optional file section MRGN.
  double default_leaf_margin = -1;
  // l2 only: the exact term of the quantized distance ||q||^2 - 2 <q, x~> + n(x) uses
  // n(x) = ||x~||^2 (the decoded vector: ScaNN's and Faiss's distance ||q - x~||^2) instead of
  // ||x||^2. Its error 2 <q - x, x - x~> + ||x - x~||^2 shrinks as q approaches x, where the
  // exact norm's 2 <q, x - x~> grows with ||q||: on data far from the origin (Fashion-MNIST)
  // that ranks near neighbours much worse. With re-scoring, BIAS keeps the exact norm and the
  // scan's term is computed from the codes (at add and at load: Leaf::scan_bias); without,
  // BIAS holds the decoded norm. The Python layer sets it for every new l2 index. A PARM field
  // (optional at the end in format version 1: absent means false, the exact-norm scan).
  bool l2_decoded_norms = false;
  // SOAR spilling (soar.h): a second, spilled copy of every vector. Stored in the optional file
  // section SOAR (absent: none).
  SpillMode spill = SpillMode::kNone;
  double soar_lambda = kDefaultSoarLambda;
};

struct TrainStats {
  double eta_min = 0, eta_max = 0, eta_mean = 0;
  double threshold = 0;
  size_t sample_size = 0;
  std::vector<double> loss;  // mean anisotropic loss per alternation
};

class Mapping;  // a read-only memory-mapped file (io.h)

// Implemented by job: index.cpp (construction, accessors, add/remove/reset), train.cpp,
// search.cpp, reorder_store.cpp (the re-ranking vectors), ids.cpp (the id map and lookups by id),
// faiss_import.cpp (set_quantizer, add_codes, float-LUT search), io.cpp (files), soar.cpp.
//
// Thread safety: search() and every const accessor take the shared lock (accessors return
// copies), train/add/remove/reset/set_* take the exclusive lock; many threads may search at
// once. Exceptions, immutable after construction and so lock-free: d(), num_blocks(),
// code_size(). The lock is never held while waiting for anything else (Monitor: common.h).
class Index {
 public:
  explicit Index(const IndexParams& p);
  ~Index();

  // Trains the partitioner and the codebooks on x (layout (n, d)). Replaces any previous state.
  void train(const float* x, size_t n, int nthreads, Monitor* mon);
  // Adds x (layout (n, d)) with ids (n; nullptr: max existing id + 1 onwards). Requires training.
  // Throws InvalidArgument on an id already present (checked before anything is added).
  void add(const float* x, size_t n, const int64_t* ids, int nthreads, Monitor* mon);
  // Removes the given ids (unknown ids are ignored); returns the number removed. Other ids keep
  // their values.
  size_t remove(const int64_t* ids, size_t n);
  // Drops all vectors, keeps the training.
  void reset();

  // Searches nq queries (layout (nq, d)). Outputs D (nq, k) float and I (nq, k) int64, best
  // first, padded with id -1 and -FLT_MAX (dot, cosine) / +FLT_MAX (l2). D is the inner product
  // (dot), the cosine similarity (cosine) or the squared L2 distance (l2); exact when reordering,
  // else the quantized estimate. leaves_to_search is clamped to num_leaves. reorder_k: number of
  // candidates re-scored exactly (ignored when reorder is none; raised to k if smaller).
  // leaf_margin >= 0 (dot and cosine only; negative: off; NaN: the stored default_leaf_margin;
  // 0 is the fixed count, searched by the normal path): a query also probes every further
  // leaf whose centre score is within leaf_margin * ||q|| of its best leaf's (the cosine of the
  // query and the centre direction within leaf_margin of the best), and re-ranks reorder_k
  // scaled by sqrt(its leaves / leaves_to_search) (rounded up). Easy queries (one clearly best region)
  // then probe few leaves and hard ones many, for the same recall with less work on average.
  void search(const float* q, size_t nq, size_t k, size_t leaves_to_search, size_t reorder_k, int nthreads, float* D,
              int64_t* I, float leaf_margin = -1.f) const;

  // Routed search (sharded indexes, avq_plugin.distributed). probe(): the leaves search() would
  // scan for each query, best first: out (nq, w) with w = min(leaves_to_search, num_leaves); an
  // empty trained index probes as a full one (the centres decide). search_leaves(): search()
  // restricted to the given leaves: leaves (nq, w), each row scanned in its order, -1 entries
  // skipped (rows may not repeat a leaf); reorder_k (nq) per query. Scores are identical to
  // search()'s for the same candidates (the lookup tables depend only on the query).
  void probe(const float* q, size_t nq, size_t leaves_to_search, int nthreads, int32_t* out) const;
  // probe() with a leaf_margin >= 0 (dot and cosine): the leaves search() with that margin probes
  // per query, best first, in rows as wide as the widest query's list (returned in width), padded
  // with -1. The routed search scales each query's budget by sqrt(its leaves / leaves_to_search).
  std::vector<int32_t> probe_margin(const float* q, size_t nq, size_t leaves_to_search, float leaf_margin, int nthreads,
                                    size_t& width) const;
  void search_leaves(const float* q, size_t nq, size_t k, const int32_t* leaves, size_t w, const int64_t* reorder_k,
                     int nthreads, float* D, int64_t* I) const;
  // search_leaves() of several shards (indexes with the same quantizer: codebooks, layout,
  // metric, re-ranking mode and int8 scales, else InvalidArgument) at once: job j asks shard
  // jobs[j].shard for the queries rows[0..n) (in [0, nq)) with leaves and reorder_k (n): the
  // leaves either as a matrix (n, w) padded with -1, or (offsets given: n + 1 values from 0 to w,
  // each row 1 to num_leaves leaves) as w values, row r's at [offsets[r], offsets[r + 1]).
  // Each query is prepared and its lookup table built once for all its shards. A query's jobs of
  // one group (jobs[j].group) are searched as one index holding all their shards would be: one
  // top-N over their leaves (the jobs by their first leaf's centre score, best first; each job's
  // leaves in its order) and one re-ranking budget, the sum of their reorder_k; their leaves must
  // be disjoint and their shards without spilled (SOAR) copies. A group of one job gives that
  // shard's search_leaves() answer. The lists of a query's groups are merged as merge_topk_rows()
  // does (merge.h). D, I (nq, k); queries of no job are padding.
  struct LeafJob {
    size_t shard;
    const int64_t* rows;
    size_t n;
    const int32_t* leaves;
    size_t w;
    const int64_t* reorder_k;
    size_t group;
    const int64_t* offsets = nullptr;  // (n + 1,) or null: leaves is the matrix (n, w)
    // Row r's leaves and their count m (padding included for a matrix).
    const int32_t* row(size_t r, size_t& m) const {
      if (offsets == nullptr) {
        m = w;
        return leaves + r * w;
      }
      m = static_cast<size_t>(offsets[r + 1] - offsets[r]);
      return leaves + offsets[r];
    }
  };
  static void search_leaves_multi(const std::vector<const Index*>& shards, const std::vector<LeafJob>& jobs,
                                  const float* q, size_t nq, size_t k, int nthreads, float* D, int64_t* I);

  // Installs a quantizer built elsewhere (the Faiss adapter: codebooks imported from a Faiss
  // index, or IVF probing by the residual centres as Faiss's IndexIVF does) in place of train().
  // probe, resid: layout (L, d): the probe centres (unit directions or any vectors scored by
  // <q, c> for dot/cosine, means scored by -||q - c||^2 for l2) and the residual centres;
  // codebooks: (16, d) per block in the BlockLayout order (see codebooks()). The index must be
  // empty (throws InvalidArgument otherwise). Training statistics are kept when the index was
  // trained, else set to the threshold with an empty sample. Exclusive lock. O(L d).
  void set_quantizer(const float* probe, const float* resid, size_t L, const float* codebooks);
  // Adds pre-computed codes (layout (n, num_blocks), values 0..15) in the given leaves (n, each
  // < num_leaves) with ids (n; nullptr: max existing id + 1 onwards), without encoding. Only for
  // reorder == none (there are no vectors to store). l2: norms2 (n) are the squared norms ||x||^2
  // used as the exact term of the distance (the Faiss adapter passes the decoded norms); ignored
  // for dot/cosine. Validates everything before adding anything. Exclusive lock.
  void add_codes(const uint8_t* codes, const int64_t* leaf, size_t n, const int64_t* ids, const float* norms2);
  // Probe centres, layout (L, d) (unit directions for dot/cosine unless set_quantizer changed them).
  std::vector<float> probe_centers() const;

  // Like search() without re-ranking, but every candidate of the probed leaves is scored with
  // float lookup tables (no 8-bit rounding): <q, centre> + sum_m <q_m, C_m[code_m]> (l2: plus the
  // stored norm term, as search()). That is the score Faiss's IndexPQ / IndexIVFPQ computes for
  // the same codes, up to float summation order. Scalar: slower than search(); for checking
  // exports and exact agreement with Faiss. Same outputs and padding as search().
  void search_float_lut(const float* q, size_t nq, size_t k, size_t leaves_to_search, int nthreads, float* D,
                        int64_t* I) const;

  // Codes of the given ids, layout (n, num_blocks) uint8; throws InvalidArgument on unknown id.
  void get_codes(const int64_t* ids, size_t n, uint8_t* out) const;
  // out[t] = 1 when ids[t] is indexed, else 0.
  void contains(const int64_t* ids, size_t n, uint8_t* out) const;
  // Leaf of each given id.
  void get_leaves(const int64_t* ids, size_t n, int64_t* out) const;
  // Leaf of each given id's SOAR copy (soar.h), -1 when it has none (no spilling, one leaf, or
  // added with add_codes); throws InvalidArgument on unknown id. O(ntotal): for tests and tools.
  void get_spill_leaves(const int64_t* ids, size_t n, int64_t* out) const;
  // All ids in storage order (leaf by leaf).
  std::vector<int64_t> all_ids() const;
  // The float32 re-ranking vectors (reorder == float32, else InvalidArgument): the vectors given
  // to add (normalised under cosine). get_vectors: those of the given ids, layout (n, d); n is at
  // most ntotal, so the copy is bounded by the store (InvalidArgument otherwise, or on an unknown
  // id). all_vectors: every stored vector in increasing id order, ids (ntotal) and vectors
  // (ntotal, d), read under one shared lock. O(n d) and O(ntotal (d + log ntotal)).
  void get_vectors(const int64_t* ids, size_t n, float* out) const;
  void all_vectors(std::vector<int64_t>& ids, std::vector<float>& out) const;

  IndexParams params() const;
  uint32_t d() const { return p_.d; }  // immutable
  // Replaces the search defaults stored with the index; they are serialized with it. Takes the
  // exclusive lock. Used by AVQIndex.tune (issue 6). leaf_margin: see IndexParams (negative:
  // none; checked as the constructor checks it).
  void set_default_search_params(uint32_t leaves_to_search, uint32_t reorder_k, double leaf_margin);
  bool is_trained() const;
  size_t ntotal() const;
  size_t num_leaves() const;
  size_t num_blocks() const { return layout_.num_blocks; }
  size_t code_size() const { return (layout_.num_blocks + 1) / 2; }  // bytes per vector
  size_t memory_usage() const;
  bool is_mapped() const;
  TrainStats train_stats() const;
  std::vector<float> codebooks() const;
  std::vector<float> centers() const;
  std::vector<uint64_t> leaf_sizes() const;

  // Serialization (io.cpp). serialize() writes the whole index into a byte string;
  // deserialize() validates everything it reads and throws InvalidArgument on a bad file.
  std::string serialize() const;
  static std::unique_ptr<Index> deserialize(const uint8_t* data, size_t size, std::shared_ptr<Mapping> mapping);

 private:
  struct Leaf {
    uint32_t n = 0;
    // Packed (codes.h): ceil(n/32) groups of (num_blocks_pad, 16) bytes, then the groups of the
    // SOAR copies spilled into this leaf (spill_->lists[leaf]), in one buffer.
    LeafCodes codes;
    std::vector<int64_t> ids;
    uint64_t row_off = 0;     // the leaf's rows in the reorder arena: [row_off, row_off + n)
    uint32_t row_cap = 0;     // rows reserved there
    std::vector<float> bias;  // l2 only: -0.5 * ||x||^2 per point (decoded norm: see l2_decoded_norms)
    // l2 with l2_decoded_norms and re-scoring: -0.5 * ||x~||^2 per point, the scan's term
    // (bias keeps the exact norm for re-scoring). Always owned: computed from the codes.
    std::vector<float> scan_bias;
    // Views used by search: point into the vectors above or into a mapped file.
    const uint8_t* codes_p = nullptr;
    const uint8_t* spill_p = nullptr;  // the spilled copies' codes (owned: right after codes_p's)
    const int64_t* ids_p = nullptr;
    const float* bias_p = nullptr;
    const float* scan_p = nullptr;  // the PQ scan's l2 term: scan_bias, else bias_p
  };
  struct Scratch;

  void sync_views(Leaf& leaf);
  void start_empty(size_t L);  // L empty leaves, no ids: the state right after training
  void build_probe_table();    // probe_table_ from probe_centers_, with the coarse copy when it pays
  // ||x~||^2 of the vector with the given codes (num_blocks values) in leaf li: the squared norm
  // of its centre plus its codewords, summed in double.
  double decoded_norm2(size_t li, const uint8_t* codes) const;
  bool scan_decoded_separately() const;  // l2 && l2_decoded_norms && reorder != none
  void fill_scan_bias(size_t li);        // recomputes leaves_[li].scan_bias from its codes
  void materialize();                    // copy mapped data into owned storage before a mutation
  void ensure_id_map() const;
  void prepare_vector(const float* x, float* out) const;  // cosine: normalise
  void search_one(const float* q, size_t k, size_t nprobe, size_t reorder_k, Scratch& s, float* D, int64_t* I) const;
  static void search_group(const std::vector<const Index*>& shards, const std::vector<LeafJob>& jobs,
                           const std::pair<uint32_t, size_t>* refs, size_t n, const float* q, size_t k,
                           const Index** owner, Scratch& s, float* D, int64_t* I);
  void prepare_query(const float* q_in, Scratch& s) const;            // s.q, s.q_unscale (once per query when shared)
  void scan_probed(const float* q, size_t nprobe, Scratch& s) const;  // s.leaf_sel[0..nprobe) into s.topn
  // Re-scoring and output of a query's candidates; owner: null, or the index holding each leaf.
  void finish_query(std::vector<topk::Cand>& cands, const float* q, size_t k, const Index* const* owner, Scratch& s,
                    float* D, int64_t* I) const;
  void build_lut(const float* q, Scratch& s) const;  // s.lut8, s.lut_offset, s.lut_inv_scale
  // search_leaves' checks of the leaf lists (range, no leaf twice) and budgets (positive).
  void check_leaf_lists(const int32_t* leaves, size_t n, size_t w, const int64_t* reorder_k) const;
  void check_leaf_job(const LeafJob& job) const;                        // check_leaf_lists, or its rule for offsets
  void select_leaves(const float* q, size_t nprobe, Scratch& s) const;  // fills s.leaf_sel
  // select_leaves' two passes (bfloat16 table, then the float scores of the leaves that can still be
  // among the best); false when the coarse pass cannot decide cheaply (then the float pass runs).
  bool select_leaves_coarse(const float* q, size_t nprobe, Scratch& s) const;
  // search()'s leaf_margin (s.leaf_margin >= 0): at least nprobe leaves, plus those within the
  // margin, into s.leaf_sel best first; returns their number.
  size_t select_leaves_by_margin(const float* q, size_t nprobe, Scratch& s) const;
  void select_top(const float* score, const uint32_t* leaf, size_t n, size_t nprobe, Scratch& s) const;
  const float* start_query(const float* q_in, size_t k, size_t& nprobe, size_t& probed, Scratch& s, float* D,
                           int64_t* I) const;
  void search_one_float(const float* q, size_t k, size_t nprobe, Scratch& s, float* D, int64_t* I) const;
  void check_queries(const float* q, size_t nq) const;
  std::vector<int64_t> checked_new_ids(const int64_t* ids, size_t n);  // exclusive lock held
  static void release_large_scratch(Scratch& s);
  void encode_points(const float* x, size_t n, int nthreads, Monitor* mon, std::vector<uint32_t>& leaf_of,
                     std::vector<uint8_t>& codes) const;
  size_t group_bytes() const { return layout_.num_blocks_pad * 16; }

  IndexParams p_;
  BlockLayout layout_;
  bool trained_ = false;
  size_t nleaves_ = 0;
  std::vector<float> probe_centers_;  // (L, d): unit directions (dot/cosine) or means (l2)
  std::vector<float> resid_centers_;  // (L, d): cluster means; residual = x - center
  CenterTable probe_table_;           // probe_centers_ laid out for kernels::dot_t16
  std::vector<float> codebooks_;      // (16, d) per block, see BlockLayout
  std::vector<float> codebooks_t_;    // per block (dims, 16): the LUT-building layout
  void build_codebooks_t();
  std::vector<float> int8_scale_;  // (d) per-dimension scale of the int8 reorder vectors
  TrainStats stats_;
  double threshold_used_ = std::numeric_limits<double>::quiet_NaN();
  std::shared_ptr<const EtaFunction> eta_fn_;  // per-point eta (tabulated once per training)
  std::vector<Leaf> leaves_;
  // Reorder arena: one allocation for all rows (advised to use huge pages), leaf by leaf, so a
  // candidate's row is at leaf.row_off + position with no indirection. A leaf that outgrows its
  // room moves to the end (its old rows become a hole; the arena is compacted when holes pass
  // half of it, and files are always written compact). Layout (arena_rows_, d).
  std::vector<float> rvec_;
  std::vector<int8_t> rvec8_;
  // float16 rows: d IEEE binary16 values of v / s, then s (a power of two, float bits in the two
  // last values) chosen per row so that max |v| / s is in [2^14, 2^15): f16_row_width() values.
  std::vector<uint16_t> rvec16_;
  const float* rvec_p_ = nullptr;
  const int8_t* rvec8_p_ = nullptr;
  const uint16_t* rvec16_p_ = nullptr;
  size_t f16_row_width() const { return p_.d + 2; }
  size_t arena_rows_ = 0, hole_rows_ = 0;
  void compact_arena();
  void clear_arena();
  void sync_store_views();
  void reserve_rows(const std::vector<size_t>& more);  // room for more[l] new rows of leaf l
  void store_row(size_t row, const float* v);          // v: a prepared vector
  void copy_row(size_t from, size_t to);
  int64_t next_id_ = 0;
  size_t ntotal_ = 0;
  std::shared_ptr<Mapping> mapping_;
  mutable bool id_map_valid_ = false;
  mutable std::unordered_map<int64_t, uint64_t> id_map_;  // id -> (leaf << 32) | position
  mutable std::shared_mutex mu_;
  mutable std::mutex id_map_mu_;

  // SOAR spilling (soar.cpp); null unless p_.spill is set.
  std::unique_ptr<SpillStore> spill_;
  void init_spill();   // validates p_.spill / p_.soar_lambda, creates spill_
  void spill_reset();  // the leaves were rebuilt empty (train, set_quantizer, reset)
  void spill_encode(const float* x, size_t n, const std::vector<uint32_t>& leaf_of, int nthreads, Monitor* mon,
                    std::vector<uint32_t>& spill_leaf, std::vector<uint8_t>& spill_codes) const;
  void spill_commit(const float* x, size_t n, const std::vector<uint32_t>& leaf_of, const std::vector<int64_t>& new_ids,
                    const std::vector<uint32_t>& spill_leaf, const std::vector<uint8_t>& spill_codes);
  void spill_load(const uint8_t* data, size_t size);
  void spill_remove(int64_t id);  // drops id's spilled copy, if any (remove(); its leaf is resized after)
  // Sets the groups of leaf li's two code sections from its vector counts (add, remove).
  void fit_code_groups(size_t li);
  size_t spill_count(size_t li) const { return spill_ && li < spill_->lists.size() ? spill_->lists[li].n : 0; }
  void scan_spilled(uint32_t li, const kernels::KernelTable& kt, float inv_scale, float bias, Scratch& s) const;

  friend class IndexIO;
};

}  // namespace avq
