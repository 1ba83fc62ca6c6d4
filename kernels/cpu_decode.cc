// Native pieces of a CPU decode step for x86-64 CPUs with AVX-512F, as XLA FFI custom calls; built and registered by
// kernels/cpu_native.py.
//
// ProrlColumnMatmul: y[M, N] = w[M, K] @ x[K, N] in float32 (kernels/column_matmul.py). The decode step of a CPU
// sampler multiplies every weight matrix `[out, in]` by a few activation columns (N = the batch, 16-64); XLA:CPU's
// library matmul reaches ~70% of the machine's fp32 rate on such products, and less on the smaller ones, where
// splitting the work over threads costs as much as the work. This kernel keeps a block of 8 weight rows x 32
// columns of y in 16 registers, reads the weights once, in order, prefetching the next block's rows, and splits the
// row blocks over XLA's own intra-op thread pool (the calling thread works too, so nothing waits on a thread that
// never wakes).
//
// Layouts: all row-major. N must be a multiple of 16 (the Python side pads the columns). Each output element is a
// float32 sum over k in increasing order.
//
// ProrlColumnAttention: one decode step of grouped-query attention over the column cache (keys [B, Hkv, D, S],
// values [B, Hkv, S, D]) that reads only each row's valid prefix (kernels/column_attention.py).

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Only the kernels are compiled for AVX-512; the rest of the library (and ProrlCpuDecodeSupported) runs anywhere.
#pragma GCC push_options
#pragma GCC target("avx512f,fma")

constexpr int64_t kRows = 8;      // weight rows per register block
constexpr int64_t kPrefetch = 16;  // floats per cache line: prefetch once per line of each row

// y[0:R, 0:C] = w[0:R, :] @ x[:, 0:C] for one block; C is 16 or 32 (one or two zmm per row).
template <int R, int C>
inline void Block(const float* w, int64_t k_dim, const float* x, int64_t ldx, float* y, int64_t ldy) {
  constexpr int V = C / 16;
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < k_dim; ++k) {
    if (k % kPrefetch == 0) {
      // The same rows of the next block: weights stream from DRAM once per step and the hardware prefetcher
      // alone leaves the FMA units waiting (measured: 170 -> 212 GF/s on a [32000, 512] x [512, 32] product).
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(w + (r + kRows) * k_dim + k), _MM_HINT_T0);
      }
    }
    __m512 xv[V];
    for (int v = 0; v < V; ++v) xv[v] = _mm512_loadu_ps(x + k * ldx + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(w[r * k_dim + k]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(y + r * ldy + 16 * v, acc[r][v]);
}

template <int R>
inline void RowBlock(const float* w, int64_t k_dim, const float* x, int64_t n, float* y) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) Block<R, 32>(w, k_dim, x + j, n, y + j, n);
  if (j < n) Block<R, 16>(w, k_dim, x + j, n, y + j, n);  // n % 32 == 16
}

// Rows [r0, r1) of y.
void Rows(const float* w, const float* x, float* y, int64_t k_dim, int64_t n, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) RowBlock<kRows>(w + r * k_dim, k_dim, x, n, y + r * n);
  const float* wr = w + r * k_dim;
  float* yr = y + r * n;
  switch (r1 - r) {
    case 1: RowBlock<1>(wr, k_dim, x, n, yr); break;
    case 2: RowBlock<2>(wr, k_dim, x, n, yr); break;
    case 3: RowBlock<3>(wr, k_dim, x, n, yr); break;
    case 4: RowBlock<4>(wr, k_dim, x, n, yr); break;
    case 5: RowBlock<5>(wr, k_dim, x, n, yr); break;
    case 6: RowBlock<6>(wr, k_dim, x, n, yr); break;
    case 7: RowBlock<7>(wr, k_dim, x, n, yr); break;
    default: break;
  }
}

// Lanes of a 16-position chunk that hold positions before the end, `left` positions away (all 16 when left >= 16).
inline __mmask16 TailMask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}

// exp(x) for float32 lanes: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by its degree-7 Taylor polynomial (relative error
// < 2e-7 before rounding), times 2^n by scalef. exp(-inf) = 0; softmax arguments are <= 0, so no overflow.
inline __m512 Exp(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2 in two steps (Cody-Waite) to keep r's low bits.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512 e = _mm512_scalef_ps(p, n);
  // x = -inf gives n = -inf and r = nan: masked to 0 here.
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ), e);
}

constexpr int kMaxGroup = 16;  // query heads per kv head the kernel takes (the Python side checks)

// One (row, kv head): q [G, D], keys [D, S], values [S, D] -> out [G, D] over positions [0, len); `logits` is
// scratch [G, S]. The cache streams from DRAM (the step's weights evict it between layers), and its D short key
// rows are too many streams for the hardware prefetcher, so each load here comes with a prefetch of the same
// place in the next pair's keys / values (`next_keys`, `next_values`; the current pair's were fetched by the pair
// before it).
void AttendOne(const float* q, const float* keys, const float* values, int64_t g_dim, int64_t d_dim, int64_t s_dim,
               int64_t len, float scale, float* out, float* logits, const float* next_keys,
               const float* next_values, int64_t next_len) {
  if (len <= 0) {
    for (int64_t i = 0; i < g_dim * d_dim; ++i) out[i] = 0.0f;
    return;
  }
  for (int64_t s0 = 0; s0 < len; s0 += 16) {
    const __mmask16 m = TailMask(len - s0);
    __m512 acc[kMaxGroup];
    for (int64_t g = 0; g < g_dim; ++g) acc[g] = _mm512_setzero_ps();
    const bool fetch = s0 < next_len;
    for (int64_t d = 0; d < d_dim; ++d) {
      if (fetch) _mm_prefetch(reinterpret_cast<const char*>(next_keys + d * s_dim + s0), _MM_HINT_T0);
      const __m512 kv = _mm512_maskz_loadu_ps(m, keys + d * s_dim + s0);
      for (int64_t g = 0; g < g_dim; ++g) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(q[g * d_dim + d]), kv, acc[g]);
    }
    for (int64_t g = 0; g < g_dim; ++g)
      _mm512_mask_storeu_ps(logits + g * s_dim + s0, m, _mm512_mul_ps(acc[g], _mm512_set1_ps(scale)));
  }
  for (int64_t g = 0; g < g_dim; ++g) {
    float* lg = logits + g * s_dim;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t s0 = 0; s0 < len; s0 += 16) {
      const __mmask16 m = TailMask(len - s0);
      mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, lg + s0));
    }
    const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 den = _mm512_setzero_ps();
    for (int64_t s0 = 0; s0 < len; s0 += 16) {
      const __mmask16 m = TailMask(len - s0);
      const __m512 e = _mm512_maskz_mov_ps(m, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, lg + s0), mv)));
      _mm512_mask_storeu_ps(lg + s0, m, e);
      den = _mm512_add_ps(den, e);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(den);
    float* o = out + g * d_dim;
    for (int64_t d0 = 0; d0 < d_dim; d0 += 64) {  // 4 zmm of the output at a time
      const int64_t nv = std::min<int64_t>(4, (d_dim - d0) / 16);
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t s = 0; s < len; ++s) {
        if (g == 0 && s < next_len) {
          const float* next = next_values + s * d_dim + d0;
          for (int64_t j = 0; j < nv; ++j) _mm_prefetch(reinterpret_cast<const char*>(next + 16 * j), _MM_HINT_T0);
        }
        const __m512 p = _mm512_set1_ps(lg[s]);
        const float* vs = values + s * d_dim + d0;
        for (int64_t j = 0; j < nv; ++j) acc[j] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vs + 16 * j), acc[j]);
      }
      for (int64_t j = 0; j < nv; ++j) _mm512_storeu_ps(o + d0 + 16 * j, _mm512_mul_ps(acc[j], _mm512_set1_ps(inv)));
    }
  }
}

#pragma GCC pop_options

// Runs fn(begin, end) over [0, items) split into up to 4 ranges per pool thread that whichever thread arrives
// claims. The caller claims too and then waits only for ranges another thread has claimed (and is running), so a
// pool thread that wakes late, or never because every pool thread is busy, costs nothing but its share.
class ParallelFor {
 public:
  static void Run(ffi::ThreadPool& pool, int64_t items, std::function<void(int64_t, int64_t)> fn) {
    const int64_t threads = std::max<int64_t>(1, pool.num_threads());
    auto job = std::shared_ptr<ParallelFor>(
        new ParallelFor(items, std::min<int64_t>(items, 4 * threads), std::move(fn)));
    for (int64_t t = 1; t < threads && t < job->parts_; ++t) pool.Schedule([job] { job->Work(); });
    job->Work();
    for (int spins = 0; job->done_.load(std::memory_order_acquire) < job->parts_; ++spins) {
      if (spins < 4096) {
        _mm_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  ParallelFor(int64_t items, int64_t parts, std::function<void(int64_t, int64_t)> fn)
      : items_(items), parts_(parts), fn_(std::move(fn)) {}

  void Work() {
    for (int64_t p; (p = next_.fetch_add(1, std::memory_order_relaxed)) < parts_;) {
      fn_(items_ * p / parts_, items_ * (p + 1) / parts_);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  const int64_t items_, parts_;
  const std::function<void(int64_t, int64_t)> fn_;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> done_{0};
};

using Matrix = ffi::Buffer<ffi::F32, 2>;  // aliases: a template's comma would split the handler macro's arguments
using ResultMatrix = ffi::ResultBuffer<ffi::F32, 2>;
using Rank3 = ffi::Buffer<ffi::F32, 3>;
using ResultRank3 = ffi::ResultBuffer<ffi::F32, 3>;
using Rank4 = ffi::Buffer<ffi::F32, 4>;
using Lengths = ffi::Buffer<ffi::S32, 1>;

ffi::Error ColumnMatmulImpl(ffi::ThreadPool pool, Matrix w, Matrix x, ResultMatrix y) {
  const auto wd = w.dimensions();
  const auto xd = x.dimensions();
  const auto yd = y->dimensions();
  if (wd[1] != xd[0] || yd[0] != wd[0] || yd[1] != xd[1] || xd[1] % 16 != 0) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "column_matmul: need w [M, K], x [K, N] with N a multiple of 16, y [M, N]");
  }
  const float* wp = w.typed_data();
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  const int64_t m = wd[0], k = wd[1], n = xd[1];
  ParallelFor::Run(pool, (m + kRows - 1) / kRows, [=](int64_t b0, int64_t b1) {
    Rows(wp, xp, yp, k, n, std::min(m, b0 * kRows), std::min(m, b1 * kRows));
  });
  return ffi::Error::Success();
}

ffi::Error ColumnAttentionImpl(ffi::ThreadPool pool, Rank3 q, Rank4 keys, Rank4 values, Lengths lengths,
                               ResultRank3 out, float scale) {
  const auto qd = q.dimensions();
  const auto kd = keys.dimensions();
  const auto vd = values.dimensions();
  const int64_t b = qd[0], hq = qd[1], d = qd[2], hkv = kd[1], s = kd[3];
  if (kd[0] != b || kd[2] != d || vd[0] != b || vd[1] != hkv || vd[2] != s || vd[3] != d || hkv == 0 ||
      hq % hkv != 0 || hq / hkv > kMaxGroup || d % 16 != 0 || lengths.dimensions()[0] != b) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "column_attention: need q [B, Hq, D], keys [B, Hkv, D, S], values [B, Hkv, S, D], lengths [B] "
                      "with D a multiple of 16 and Hq / Hkv <= 16");
  }
  const float* qp = q.typed_data();
  const float* kp = keys.typed_data();
  const float* vp = values.typed_data();
  const int32_t* lp = lengths.typed_data();
  float* op = out->typed_data();
  const int64_t g = hq / hkv;
  ParallelFor::Run(pool, b * hkv, [=](int64_t i0, int64_t i1) {
    std::vector<float> logits(g * s);
    const auto length = [=](int64_t i) { return i < i1 ? std::clamp<int64_t>(lp[i / hkv], 0, s) : int64_t{0}; };
    for (int64_t i = i0; i < i1; ++i) {
      AttendOne(qp + i * g * d, kp + i * d * s, vp + i * s * d, g, d, s, length(i), scale, op + i * g * d,
                logits.data(), kp + (i + 1) * d * s, vp + (i + 1) * s * d, length(i + 1));
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ProrlColumnMatmul, ColumnMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ProrlColumnAttention, ColumnAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Rank3>()
                                  .Arg<Rank4>()
                                  .Arg<Rank4>()
                                  .Arg<Lengths>()
                                  .Ret<Rank3>()
                                  .Attr<float>("scale"));

// Whether this CPU can run the kernels.
extern "C" int ProrlCpuDecodeSupported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}
