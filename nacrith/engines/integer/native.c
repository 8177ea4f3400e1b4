/* The integer engine's forward in C (native.py loads it with ctypes).
 *
 * Function for function this is forward.py: the same integers, computed without
 * numpy's per-call overhead and with SIMD where it pays. Every quantity is an
 * integer held exactly: in int32/int64, or in a double below 2**53 where a
 * vector unit is faster (the bounds are those of spec.py and weights.py). So the
 * AVX2 clones and the portable clones agree bit for bit, and so does any number
 * of OpenMP threads (each thread writes its own outputs; no sum depends on order).
 *
 * Compile flags must keep floating point exact: no -ffast-math; contraction is
 * switched off below and fma() is written out where it is wanted.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NC_X86 1
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#pragma GCC optimize("fp-contract=off")

/* spec.py */
#define ACT_BITS 16
#define QK_BITS 12
#define V_BITS 12
#define P_BITS 16
#define RESID 24
#define WUNIT 24
#define NORM_BITS 26
#define LOGIT_UNIT 16
#define ROPE_FIX 30
#define ROPE_BITS 15
#define POS_BITS 26
#define LOG2E_FIX 94548
#define SCORE_FIX 24
#define SCORE_CAP ((int64_t)1 << 40)
#define SIGMOID_CLAMP ((int64_t)1 << 31)

typedef struct {
    int64_t N, K;           /* outputs (a multiple of 8), inputs (a multiple of 32) */
    const int8_t *qp;       /* [N/8][K/32][16][8][2]: pair p of output j of group G */
    const int32_t *dp, *mp; /* [N/8][K/32][8] */
} QMat;

typedef struct {
    int64_t n_layer, dim, n_head, n_kv, head_dim, ffn;
    int64_t eps_m, eps_e, eps_cap, score;
    const int64_t *rope;   /* [POS_BITS][head_dim/2][2] */
    const int64_t *exp2;   /* [4096] */
    const int64_t *gamma;  /* [n_layer][2][dim], then the output norm [dim] */
    const int64_t *gshift; /* [n_layer][2], then the output norm */
    const QMat *mats;      /* [n_layer][4] (qkv, o, gate/up, down), then the logits */
} Model;

typedef struct {
    int64_t lanes, ctx;
    int16_t *k, *v;   /* [n_layer][lanes][n_kv][ctx][head_dim] */
    int32_t *ke, *ve; /* [n_layer][lanes][n_kv][ctx] */
    int16_t *bos;     /* [n_layer][lanes][n_kv][head_dim] */
} Cache;

static int use_simd = 1;

int nc_set_simd(int on)
{
    use_simd = on;
#ifdef NC_X86
    __builtin_cpu_init();
    return on && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int nc_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* -- exact scalar helpers (ops.py) ----------------------------------------------- */

static inline int64_t shl(int64_t x, int64_t k) { return (int64_t)((uint64_t)x << k); }

/* round(x * 2**-s), halves up; s <= 0 shifts left; shift counts clipped to 62 */
static inline int64_t shift_round(int64_t x, int64_t s)
{
    if (s > 0) {
        if (s > 62) s = 62;
        return (x + ((int64_t)1 << (s - 1))) >> s;
    }
    return shl(x, -s > 62 ? 62 : -s);
}

static inline int64_t bitlen(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

static inline int64_t floordiv(int64_t a, int64_t b) /* b > 0 */
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static inline int64_t isqrt64(int64_t n)
{
    int64_t r = (int64_t)sqrt((double)n);
    while (r * r > n) r--;
    while ((r + 1) * (r + 1) <= n) r++;
    return r;
}

static inline int64_t clip(int64_t x, int64_t lim) { return x > lim ? lim : (x < -lim ? -lim : x); }

static inline int64_t maxabs(const int64_t *x, int64_t n)
{
    uint64_t top = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t a = x[i] < 0 ? (uint64_t)0 - (uint64_t)x[i] : (uint64_t)x[i];
        if (a > top) top = a;
    }
    return (int64_t)top;
}

/* ops.quantise over one group: returns e, writes |m| < 2**(bits-1) */
static int64_t quantise(const int64_t *x, int64_t n, int bits, int64_t *m)
{
    int64_t e = bitlen((uint64_t)maxabs(x, n)) - (bits - 1);
    int64_t lim = ((int64_t)1 << (bits - 1)) - 1;
    for (int64_t i = 0; i < n; i++) m[i] = clip(shift_round(x[i], e), lim);
    return e;
}

/* forward.rmsnorm for one row: a (int16), returns the exponent */
static int64_t rmsnorm(const Model *M, const int64_t *h, const int64_t *g, int64_t gs, int64_t *tmp, int16_t *a)
{
    int64_t dim = M->dim;
    int64_t s = bitlen((uint64_t)maxabs(h, dim)) - NORM_BITS;
    if (s < -NORM_BITS) s = -NORM_BITS;
    int64_t ss = 0;
    for (int64_t i = 0; i < dim; i++) {
        int64_t x = s >= 0 ? h[i] >> (s > 62 ? 62 : s) : shl(h[i], -s);
        tmp[i] = x;
        ss += x * x;
    }
    int64_t mean = ss / dim;
    int64_t k = M->eps_e + 2 * (RESID - s);
    int64_t eps = k >= 0 ? shl(M->eps_m, k > M->eps_cap ? M->eps_cap : k) : M->eps_m >> (-k > 62 ? 62 : -k);
    int64_t r = isqrt64(mean + eps);
    for (int64_t i = 0; i < dim; i++) tmp[i] = floordiv(tmp[i] * g[i], r);
    int64_t e = quantise(tmp, dim, ACT_BITS, tmp);
    for (int64_t i = 0; i < dim; i++) a[i] = (int16_t)tmp[i];
    return e - gs;
}

/* forward.rope_rows for one position: cos, sin in Q15 */
static void rope_row(const Model *M, int64_t pos, int64_t *cs, int64_t *sn)
{
    int64_t half = M->head_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        int64_t c = (int64_t)1 << ROPE_FIX, s = 0;
        for (int b = 0; b < POS_BITS; b++) {
            if (!((pos >> b) & 1)) continue;
            int64_t cb = M->rope[(b * half + i) * 2], sb = M->rope[(b * half + i) * 2 + 1];
            int64_t nc = shift_round(c * cb - s * sb, ROPE_FIX);
            int64_t ns = shift_round(s * cb + c * sb, ROPE_FIX);
            c = nc;
            s = ns;
        }
        cs[i] = shift_round(c, ROPE_FIX - ROPE_BITS);
        sn[i] = shift_round(s, ROPE_FIX - ROPE_BITS);
    }
}

static void rotate(const int64_t *m, int64_t hd, const int64_t *cs, const int64_t *sn, int64_t *out)
{
    for (int64_t i = 0; i < hd / 2; i++) {
        int64_t a = m[2 * i], b = m[2 * i + 1];
        out[2 * i] = shift_round(a * cs[i] - b * sn[i], ROPE_BITS);
        out[2 * i + 1] = shift_round(a * sn[i] + b * cs[i], ROPE_BITS);
    }
}

static inline int64_t sigmoid_q24(int64_t sbits, const int64_t *exp2)
{
    int64_t a = sbits < 0 ? -sbits : sbits;
    int64_t whole = a >> 16;
    int64_t w = exp2[(a & 0xFFFF) >> 4] >> (whole > 62 ? 62 : whole);
    int64_t small = (w << 24) / (((int64_t)1 << 30) + w);
    return sbits >= 0 ? ((int64_t)1 << 24) - small : small;
}

/* -- the blocked product -------------------------------------------------------------
 * y[t, n] = sum_b d[b, n] * S(t, n, b) + m[b, n] * A(t, b), with
 * S = sum_{k in b} a[t, k] q[n, k] (|S| < 2**27, int32) and A = sum_{k in b} a[t, k].
 * Terms and partial sums are integers below 2**53 (weights.py), so the double
 * accumulation is exact. Output groups g0 <= G < g1 (8 outputs each). */

static void mm_portable(const QMat *W, int64_t T, const int16_t *a, const double *A, int64_t g0, int64_t g1, double *y)
{
    int64_t K = W->K, N = W->N, nb = K / 32;
    for (int64_t G = g0; G < g1; G++)
        for (int64_t t = 0; t < T; t++) {
            double acc[8] = {0};
            for (int64_t b = 0; b < nb; b++) {
                const int8_t *qb = W->qp + (G * nb + b) * 256;
                const int16_t *ab = a + t * K + b * 32;
                for (int j = 0; j < 8; j++) {
                    int32_t s = 0;
                    for (int p = 0; p < 16; p++) s += ab[2 * p] * qb[p * 16 + j * 2] + ab[2 * p + 1] * qb[p * 16 + j * 2 + 1];
                    acc[j] += (double)W->dp[(G * nb + b) * 8 + j] * (double)s;
                    acc[j] += (double)W->mp[(G * nb + b) * 8 + j] * A[t * nb + b];
                }
            }
            for (int j = 0; j < 8; j++) y[t * N + G * 8 + j] = acc[j];
        }
}

#ifdef NC_X86
#define MM_TILE(TT)                                                                                                  \
    __attribute__((target("avx2,fma"), always_inline)) static inline void mm_avx2_##TT(const QMat *W, int64_t t, const int16_t *a,         \
                                                                 const double *A, int64_t G, double *y)              \
    {                                                                                                                \
        int64_t K = W->K, N = W->N, nb = K / 32;                                                                     \
        const int8_t *qg = W->qp + G * nb * 256;                                                                     \
        const int32_t *dg = W->dp + G * nb * 8, *mg = W->mp + G * nb * 8;                                            \
        __m256d cl[TT], ch[TT];                                                                                      \
        for (int i = 0; i < TT; i++) cl[i] = ch[i] = _mm256_setzero_pd();                                            \
        for (int64_t b = 0; b < nb; b++) {                                                                           \
            const int8_t *qb = qg + b * 256;                                                                         \
            __m256i s[TT];                                                                                           \
            for (int i = 0; i < TT; i++) s[i] = _mm256_setzero_si256();                                              \
            for (int p = 0; p < 16; p++) {                                                                           \
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qb + 16 * p)));                   \
                for (int i = 0; i < TT; i++) {                                                                       \
                    const int32_t *ap = (const int32_t *)(a + (t + i) * K + b * 32);                                 \
                    s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(_mm256_set1_epi32(ap[p]), w));                   \
                }                                                                                                    \
            }                                                                                                        \
            __m256i dv = _mm256_loadu_si256((const __m256i *)(dg + b * 8));                                          \
            __m256i mv = _mm256_loadu_si256((const __m256i *)(mg + b * 8));                                          \
            __m256d dl = _mm256_cvtepi32_pd(_mm256_castsi256_si128(dv));                                             \
            __m256d dh = _mm256_cvtepi32_pd(_mm256_extracti128_si256(dv, 1));                                        \
            __m256d ml = _mm256_cvtepi32_pd(_mm256_castsi256_si128(mv));                                             \
            __m256d mh = _mm256_cvtepi32_pd(_mm256_extracti128_si256(mv, 1));                                        \
            for (int i = 0; i < TT; i++) {                                                                           \
                __m256d x = _mm256_set1_pd(A[(t + i) * nb + b]);                                                     \
                cl[i] = _mm256_fmadd_pd(dl, _mm256_cvtepi32_pd(_mm256_castsi256_si128(s[i])), cl[i]);                \
                ch[i] = _mm256_fmadd_pd(dh, _mm256_cvtepi32_pd(_mm256_extracti128_si256(s[i], 1)), ch[i]);           \
                cl[i] = _mm256_fmadd_pd(ml, x, cl[i]);                                                               \
                ch[i] = _mm256_fmadd_pd(mh, x, ch[i]);                                                               \
            }                                                                                                        \
        }                                                                                                            \
        for (int i = 0; i < TT; i++) {                                                                               \
            _mm256_storeu_pd(y + (t + i) * N + G * 8, cl[i]);                                                        \
            _mm256_storeu_pd(y + (t + i) * N + G * 8 + 4, ch[i]);                                                    \
        }                                                                                                            \
    }
MM_TILE(6)
MM_TILE(4)
MM_TILE(2)
MM_TILE(1)

__attribute__((target("avx2,fma"))) static void mm_avx2(const QMat *W, int64_t T, const int16_t *a, const double *A,
                                                        int64_t g0, int64_t g1, double *y)
{
    /* a tile of 6 rows stays in L1 while a chunk of panels (at most ~460 KB, so they
     * stay in L2) streams past it */
    const int64_t chunk = 100;
    for (int64_t c0 = g0; c0 < g1; c0 += chunk) {
        int64_t c1 = c0 + chunk < g1 ? c0 + chunk : g1;
        int64_t t = 0;
        for (; t + 6 <= T; t += 6)
            for (int64_t G = c0; G < c1; G++) mm_avx2_6(W, t, a, A, G, y);
        for (int64_t G = c0; G < c1; G++) {
            int64_t u = t;
            if (u + 4 <= T) { mm_avx2_4(W, u, a, A, G, y); u += 4; }
            if (u + 2 <= T) { mm_avx2_2(W, u, a, A, G, y); u += 2; }
            if (u < T) mm_avx2_1(W, u, a, A, G, y);
        }
    }
}
#endif

static int simd_ok(void)
{
#ifdef NC_X86
    return use_simd && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static void block_sums(int64_t T, int64_t K, const int16_t *a, double *A)
{
    int64_t nb = K / 32;
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < nb; b++) {
            int32_t s = 0;
            for (int k = 0; k < 32; k++) s += a[t * K + b * 32 + k];
            A[t * nb + b] = (double)s;
        }
}

/* y = a @ W for rows 0..T-1, every output; called inside a parallel region */
static void matmul(const QMat *W, int64_t T, const int16_t *a, const double *A, double *y, int nt, int id)
{
    int64_t groups = W->N / 8, step = (groups + nt - 1) / nt;
    int64_t g0 = id * step, g1 = g0 + step < groups ? g0 + step : groups;
    if (g0 >= g1) return;
#ifdef NC_X86
    if (simd_ok()) {
        mm_avx2(W, T, a, A, g0, g1, y);
        return;
    }
#endif
    mm_portable(W, T, a, A, g0, g1, y);
}

/* -- attention --------------------------------------------------------------------
 * Row t of lane l at slot s sees slots 0..s of its lane. For each head: scores
 * (score_bits), probabilities (softmax_p) and values aligned to the largest value
 * exponent in view, as in reference.Reference.attend. The softmax runs in doubles
 * that hold its integers exactly (all below 2**53; see the comments). */

CLONES static void attend_head(const int16_t *q, int64_t qe, const int16_t *Kl, const int32_t *KEl,
                               const int16_t *Vl, const int32_t *VEl, int64_t n, int64_t hd, int32_t vmax,
                               int64_t score, const int64_t *exp2, double *B, int32_t *P, int32_t *out)
{
    double top = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        const int16_t *kj = Kl + j * hd;
        int32_t s = 0;
        for (int64_t c = 0; c < hd; c++) s += q[c] * kj[c]; /* |s| < 2**29 */
        int64_t sh = SCORE_FIX - 16 - qe - KEl[j];
        if (sh < -11) sh = -11;
        if (sh > 1000) sh = 1000;
        /* s * score < 2**51: exact; times 2**-sh exact; + 0.5 and floor exact (see docs) */
        double x = (double)s * (double)score * ldexp(1.0, (int)-sh);
        double b = floor(x + 0.5);
        if (b > (double)SCORE_CAP) b = (double)SCORE_CAP;
        if (b < -(double)SCORE_CAP) b = -(double)SCORE_CAP;
        B[j] = b;
        if (b > top) top = b;
    }
    int64_t W = 0;
    for (int64_t j = 0; j < n; j++) {
        int64_t d = (int64_t)(top - B[j]); /* 0 <= d <= 2**41, exact */
        int64_t whole = d >> 16;
        int64_t w = exp2[(d & 0xFFFF) >> 4] >> (whole > 62 ? 62 : whole);
        B[j] = (double)w;
        W += w;
    }
    double inv = 1.0 / (double)W, Wd = (double)W;
    for (int64_t j = 0; j < n; j++) {
        double x = B[j] * 65536.0; /* w * 2**16 < 2**46 */
        double p = floor(x * inv);  /* floor(x / W) within one */
        double r = fma(-p, Wd, x);  /* the exact remainder (an integer below 2**47) */
        if (r < 0) p -= 1.0;
        else if (r >= Wd) p += 1.0;
        int64_t e = (int64_t)vmax - VEl[j];
        P[j] = (int32_t)((int64_t)p >> (e > 62 ? 62 : e));
    }
    for (int64_t c = 0; c < hd; c++) out[c] = 0;
    for (int64_t j = 0; j < n; j++) {
        int32_t p = P[j];
        if (!p) continue;
        const int16_t *vj = Vl + j * hd;
        for (int64_t c = 0; c < hd; c++) out[c] += p * vj[c]; /* sum < 2**27 */
    }
}

#ifdef NC_X86
/* attend_head for head_dim 64 with AVX2: the same integers (the doubles hold them
 * exactly, as in attend_head), 8 keys at a time. */
__attribute__((target("avx2,fma"))) static inline __m256i sum8(__m256i v0, __m256i v1, __m256i v2, __m256i v3,
                                                               __m256i v4, __m256i v5, __m256i v6, __m256i v7)
{
    __m256i u0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    __m256i u1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7));
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

__attribute__((target("avx2,fma"))) static inline __m256i dot64(const __m256i *q, const int16_t *k)
{
    __m256i p = _mm256_madd_epi16(q[0], _mm256_loadu_si256((const __m256i *)k));
    p = _mm256_add_epi32(p, _mm256_madd_epi16(q[1], _mm256_loadu_si256((const __m256i *)(k + 16))));
    p = _mm256_add_epi32(p, _mm256_madd_epi16(q[2], _mm256_loadu_si256((const __m256i *)(k + 32))));
    return _mm256_add_epi32(p, _mm256_madd_epi16(q[3], _mm256_loadu_si256((const __m256i *)(k + 48))));
}

/* 2**-s as doubles for int32 s in [-1022, 1022] */
__attribute__((target("avx2,fma"))) static inline __m256d pow2neg(__m128i s)
{
    __m256i e = _mm256_cvtepi32_epi64(_mm_sub_epi32(_mm_set1_epi32(1023), s));
    return _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
}

/* scores of keys [j0, j1) (a multiple of 8 apart) for one head */
__attribute__((target("avx2,fma"))) static void scores64(const __m256i *qv, int64_t qe, const int16_t *Kl,
                                                         const int32_t *KEl, int64_t j0, int64_t j1, int64_t score,
                                                         double *B, __m256d *top)
{
    const __m256d sc = _mm256_set1_pd((double)score), half = _mm256_set1_pd(0.5);
    const __m256d cap = _mm256_set1_pd((double)SCORE_CAP), ncap = _mm256_set1_pd(-(double)SCORE_CAP);
    const __m128i base = _mm_set1_epi32((int32_t)(SCORE_FIX - 16 - qe));
    const __m128i lo = _mm_set1_epi32(-11), hi = _mm_set1_epi32(1000);
    for (int64_t j = j0; j < j1; j += 8) {
        const int16_t *k = Kl + j * 64;
        __m256i s = sum8(dot64(qv, k), dot64(qv, k + 64), dot64(qv, k + 128), dot64(qv, k + 192),
                         dot64(qv, k + 256), dot64(qv, k + 320), dot64(qv, k + 384), dot64(qv, k + 448));
        __m256i ke = _mm256_loadu_si256((const __m256i *)(KEl + j));
        for (int h = 0; h < 2; h++) {
            __m128i sh = _mm_sub_epi32(base, h ? _mm256_extracti128_si256(ke, 1) : _mm256_castsi256_si128(ke));
            sh = _mm_min_epi32(_mm_max_epi32(sh, lo), hi);
            __m128i s4 = h ? _mm256_extracti128_si256(s, 1) : _mm256_castsi256_si128(s);
            __m256d x = _mm256_mul_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(s4), sc), pow2neg(sh));
            __m256d b = _mm256_floor_pd(_mm256_add_pd(x, half));
            b = _mm256_max_pd(_mm256_min_pd(b, cap), ncap);
            _mm256_storeu_pd(B + j + 4 * h, b);
            *top = _mm256_max_pd(*top, b);
        }
    }
}

/* scores -> probabilities for one head (B in, P out), as attend_head */
__attribute__((target("avx2,fma"))) static void probs64(double tmax, double *B, int64_t n, const int32_t *VEl,
                                                        int32_t vmax, const double *exp2d, int32_t *P)
{
    const __m256d tv = _mm256_set1_pd(tmax), inv16 = _mm256_set1_pd(1.0 / 65536.0), k16 = _mm256_set1_pd(65536.0);
    const __m256d inv4 = _mm256_set1_pd(1.0 / 16.0);
    const __m128i c62 = _mm_set1_epi32(62);
    __m256d Wv = _mm256_setzero_pd();
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        __m256d d = _mm256_sub_pd(tv, _mm256_loadu_pd(B + j));
        __m256d whole = _mm256_floor_pd(_mm256_mul_pd(d, inv16));
        __m256d rem = _mm256_sub_pd(d, _mm256_mul_pd(whole, k16));
        __m128i idx = _mm256_cvttpd_epi32(_mm256_mul_pd(rem, inv4));
        __m128i wh = _mm_min_epi32(_mm256_cvttpd_epi32(_mm256_min_pd(whole, _mm256_set1_pd(62.0))), c62);
        __m256d w = _mm256_floor_pd(_mm256_mul_pd(_mm256_i32gather_pd(exp2d, idx, 8), pow2neg(wh)));
        _mm256_storeu_pd(B + j, w);
        Wv = _mm256_add_pd(Wv, w);
    }
    double ws[4];
    _mm256_storeu_pd(ws, Wv);
    double Wd = ((ws[0] + ws[1]) + ws[2]) + ws[3]; /* integers below 2**53: exact */
    for (; j < n; j++) {
        int64_t d = (int64_t)(tmax - B[j]);
        int64_t wh = d >> 16;
        B[j] = (double)((int64_t)exp2d[(d & 0xFFFF) >> 4] >> (wh > 62 ? 62 : wh));
        Wd += B[j];
    }
    const __m256d Wb = _mm256_set1_pd(Wd), invW = _mm256_set1_pd(1.0 / Wd), one = _mm256_set1_pd(1.0);
    const __m256d zero = _mm256_setzero_pd();
    const __m128i vm = _mm_set1_epi32(vmax);
    for (j = 0; j + 4 <= n; j += 4) {
        __m256d x = _mm256_mul_pd(_mm256_loadu_pd(B + j), k16);
        __m256d p = _mm256_floor_pd(_mm256_mul_pd(x, invW));
        __m256d r = _mm256_fnmadd_pd(p, Wb, x); /* x - p * W, exact */
        p = _mm256_sub_pd(p, _mm256_and_pd(_mm256_cmp_pd(r, zero, _CMP_LT_OQ), one));
        p = _mm256_add_pd(p, _mm256_and_pd(_mm256_cmp_pd(r, Wb, _CMP_GE_OQ), one));
        __m128i gap = _mm_min_epi32(_mm_sub_epi32(vm, _mm_loadu_si128((const __m128i *)(VEl + j))), c62);
        __m256d pp = _mm256_floor_pd(_mm256_mul_pd(p, pow2neg(gap)));
        _mm_storeu_si128((__m128i *)(P + j), _mm256_cvttpd_epi32(pp));
    }
    for (; j < n; j++) {
        double x = B[j] * 65536.0;
        double p = floor(x * (1.0 / Wd));
        double r = fma(-p, Wd, x);
        if (r < 0) p -= 1.0;
        else if (r >= Wd) p += 1.0;
        int64_t e = (int64_t)vmax - VEl[j];
        P[j] = (int32_t)((int64_t)p >> (e > 62 ? 62 : e));
    }
}

/* the g query heads of one key head, head_dim 64; keys and values are read in blocks
 * of 64, once for all g heads. B: [g][ctx] doubles, P: [g][ctx] int32. */
#define KBLOCK 64
__attribute__((target("avx2,fma"))) static void attend_group64(const int16_t *q, const int64_t *qe, int64_t g,
                                                               const int16_t *Kl, const int32_t *KEl,
                                                               const int16_t *Vl, const int32_t *VEl, int64_t n,
                                                               int64_t ctx, int32_t vmax, int64_t score,
                                                               const double *exp2d, double *B, int32_t *P,
                                                               int32_t *out)
{
    __m256i qv[8][4];
    __m256d top[8];
    for (int64_t h = 0; h < g; h++) {
        for (int i = 0; i < 4; i++) qv[h][i] = _mm256_loadu_si256((const __m256i *)(q + h * 64 + 16 * i));
        top[h] = _mm256_set1_pd(-INFINITY);
    }
    int64_t n8 = n & ~(int64_t)7;
    for (int64_t j0 = 0; j0 < n8; j0 += KBLOCK) {
        int64_t j1 = j0 + KBLOCK < n8 ? j0 + KBLOCK : n8;
        for (int64_t h = 0; h < g; h++) scores64(qv[h], qe[h], Kl, KEl, j0, j1, score, B + h * ctx, &top[h]);
    }
    for (int64_t h = 0; h < g; h++) {
        double tops[4], *Bh = B + h * ctx;
        _mm256_storeu_pd(tops, top[h]);
        double tmax = tops[0];
        for (int i = 1; i < 4; i++) tmax = tops[i] > tmax ? tops[i] : tmax;
        for (int64_t j = n8; j < n; j++) {
            const int16_t *kj = Kl + j * 64;
            int32_t s = 0;
            for (int c = 0; c < 64; c++) s += q[h * 64 + c] * kj[c];
            int64_t sh = SCORE_FIX - 16 - qe[h] - KEl[j];
            sh = sh < -11 ? -11 : (sh > 1000 ? 1000 : sh);
            double b = floor((double)s * (double)score * ldexp(1.0, (int)-sh) + 0.5);
            b = b > (double)SCORE_CAP ? (double)SCORE_CAP : (b < -(double)SCORE_CAP ? -(double)SCORE_CAP : b);
            Bh[j] = b;
            tmax = b > tmax ? b : tmax;
        }
        probs64(tmax, Bh, n, VEl, vmax, exp2d, P + h * ctx);
    }
    __m256i acc[8][8];
    for (int64_t h = 0; h < g; h++)
        for (int i = 0; i < 8; i++) acc[h][i] = _mm256_setzero_si256();
    for (int64_t j0 = 0; j0 < n; j0 += KBLOCK) {
        int64_t j1 = j0 + KBLOCK < n ? j0 + KBLOCK : n;
        for (int64_t h = 0; h < g; h++) {
            const int32_t *Ph = P + h * ctx;
            __m256i a0 = acc[h][0], a1 = acc[h][1], a2 = acc[h][2], a3 = acc[h][3];
            __m256i a4 = acc[h][4], a5 = acc[h][5], a6 = acc[h][6], a7 = acc[h][7];
            for (int64_t j = j0; j < j1; j++) {
                int32_t p = Ph[j];
                if (!p) continue;
                __m256i pv = _mm256_set1_epi32(p);
                const int16_t *vj = Vl + j * 64;
#define PV(i, a) a = _mm256_add_epi32(a, _mm256_mullo_epi32(pv, _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(vj + 8 * i)))))
                PV(0, a0); PV(1, a1); PV(2, a2); PV(3, a3); PV(4, a4); PV(5, a5); PV(6, a6); PV(7, a7);
#undef PV
            }
            acc[h][0] = a0; acc[h][1] = a1; acc[h][2] = a2; acc[h][3] = a3;
            acc[h][4] = a4; acc[h][5] = a5; acc[h][6] = a6; acc[h][7] = a7;
        }
    }
    for (int64_t h = 0; h < g; h++)
        for (int i = 0; i < 8; i++) _mm256_storeu_si256((__m256i *)(out + h * 64 + 8 * i), acc[h][i]);
}
#endif

/* -- the forward ------------------------------------------------------------------- */

typedef struct {
    int64_t *x;   /* [dim or ffn] int64 scratch */
    int64_t *y2;  /* [...] */
    double *B;    /* [ctx] */
    int32_t *P;   /* [ctx] */
} Scratch;

int nc_forward(const Model *M, Cache *C, int64_t T, int64_t *h, const int64_t *lane, const int64_t *slot,
               const int64_t *pos, int16_t *a_out, int64_t *e_out, int nthreads)
{
    int64_t dim = M->dim, nh = M->n_head, nkv = M->n_kv, hd = M->head_dim, ffn = M->ffn, half = hd / 2;
    int64_t nq = (nh + 2 * nkv) * hd, wide = 2 * ffn > nq ? 2 * ffn : nq;
    int64_t width = ffn > dim ? ffn : dim, ctx = C->ctx, L = C->lanes, g = nh / nkv;
    int16_t *a = malloc(sizeof(int16_t) * T * width);
    int64_t *e = malloc(sizeof(int64_t) * T);
    double *A = malloc(sizeof(double) * T * (width / 32));
    double *y = malloc(sizeof(double) * T * wide);
    int64_t *cs = malloc(sizeof(int64_t) * T * half), *sn = malloc(sizeof(int64_t) * T * half);
    int16_t *qr = malloc(sizeof(int16_t) * T * nh * hd);
    int64_t *qe = malloc(sizeof(int64_t) * T * nh);
    int32_t *o = malloc(sizeof(int32_t) * T * nh * hd);
    int64_t *oe = malloc(sizeof(int64_t) * T * nh);
    int nt = nthreads < 1 ? 1 : nthreads;
    Scratch *S = calloc(nt, sizeof(Scratch));
    double exp2d[4096];
    for (int i = 0; i < 4096; i++) exp2d[i] = (double)M->exp2[i];
    int failed = !a || !e || !A || !y || !cs || !sn || !qr || !qe || !o || !oe || !S;
    for (int i = 0; !failed && i < nt; i++) {
        S[i].x = malloc(sizeof(int64_t) * (2 * width + 2 * hd + 64));
        S[i].y2 = malloc(sizeof(int64_t) * (2 * width + 64));
        S[i].B = malloc(sizeof(double) * (ctx * g + 8));
        S[i].P = malloc(sizeof(int32_t) * (ctx * g + 8));
        failed |= !S[i].x || !S[i].y2 || !S[i].B || !S[i].P;
    }
    if (failed) goto done;

#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int id = omp_get_thread_num(), n_t = omp_get_num_threads();
#else
        int id = 0, n_t = 1;
#endif
        Scratch *sc = &S[id];
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) rope_row(M, pos[t], cs + t * half, sn + t * half);

        for (int64_t li = 0; li < M->n_layer; li++) {
            const int64_t *gam = M->gamma + li * 2 * dim;
            const QMat *W = M->mats + li * 4;
            /* attention norm and the q, k, v product */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) e[t] = rmsnorm(M, h + t * dim, gam, M->gshift[li * 2], sc->x, a + t * dim);
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                int32_t s;
                for (int64_t b = 0; b < dim / 32; b++) {
                    s = 0;
                    for (int k = 0; k < 32; k++) s += a[t * dim + b * 32 + k];
                    A[t * (dim / 32) + b] = (double)s;
                }
            }
            matmul(&W[0], T, a, A, y, n_t, id);
#pragma omp barrier
            /* heads: quantise, rotate, store keys and values */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                int64_t *x = sc->x, *m = sc->x + width, *r = sc->x + width + hd;
                int64_t ev = e[t] - WUNIT, l = lane[t], sl = slot[t];
                const double *yt = y + t * W[0].N;
                for (int64_t hh = 0; hh < nh + 2 * nkv; hh++) {
                    for (int64_t c = 0; c < hd; c++) x[c] = (int64_t)yt[hh * hd + c];
                    int bits = hh < nh + nkv ? QK_BITS : V_BITS;
                    int64_t ex = quantise(x, hd, bits, m) + ev;
                    if (hh < nh) {
                        rotate(m, hd, cs + t * half, sn + t * half, r);
                        for (int64_t c = 0; c < hd; c++) qr[(t * nh + hh) * hd + c] = (int16_t)r[c];
                        qe[t * nh + hh] = ex;
                        continue;
                    }
                    int64_t kv = hh < nh + nkv ? hh - nh : hh - nh - nkv;
                    int64_t cell = ((li * L + l) * nkv + kv) * ctx + sl;
                    if (hh < nh + nkv) {
                        rotate(m, hd, cs + t * half, sn + t * half, r);
                        for (int64_t c = 0; c < hd; c++) C->k[cell * hd + c] = (int16_t)r[c];
                        C->ke[cell] = (int32_t)ex;
                        if (sl == 0)
                            for (int64_t c = 0; c < hd; c++) C->bos[((li * L + l) * nkv + kv) * hd + c] = (int16_t)m[c];
                    } else {
                        for (int64_t c = 0; c < hd; c++) C->v[cell * hd + c] = (int16_t)m[c];
                        C->ve[cell] = (int32_t)ex;
                    }
                }
            }
            /* attention, rows of one (row, kv head) at a time; work grows with the slot */
#pragma omp for schedule(dynamic, 1)
            for (int64_t tk = 0; tk < T * nkv; tk++) {
                int64_t t = tk / nkv, kv = tk % nkv, l = lane[t], n = slot[t] + 1;
                int64_t base = (li * L + l) * nkv + kv;
                const int32_t *VEl = C->ve + base * ctx;
                int32_t vmax = INT32_MIN;
                for (int64_t j = 0; j < n; j++)
                    if (VEl[j] > vmax) vmax = VEl[j];
#ifdef NC_X86
                if (hd == 64 && g <= 8 && simd_ok()) {
                    attend_group64(qr + (t * nh + kv * g) * hd, qe + t * nh + kv * g, g, C->k + base * ctx * hd,
                                   C->ke + base * ctx, C->v + base * ctx * hd, VEl, n, ctx, vmax, M->score, exp2d,
                                   sc->B, sc->P, o + (t * nh + kv * g) * hd);
                    for (int64_t i = 0; i < g; i++) oe[t * nh + kv * g + i] = (int64_t)vmax - P_BITS;
                    continue;
                }
#endif
                for (int64_t i = 0; i < g; i++) {
                    int64_t hh = kv * g + i;
                    attend_head(qr + (t * nh + hh) * hd, qe[t * nh + hh], C->k + base * ctx * hd, C->ke + base * ctx,
                                C->v + base * ctx * hd, VEl, n, hd, vmax, M->score, M->exp2, sc->B, sc->P,
                                o + (t * nh + hh) * hd);
                    oe[t * nh + hh] = (int64_t)vmax - P_BITS;
                }
            }
            /* heads -> one int16 row (forward.quantise_groups), then the output product */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                int64_t E = INT64_MIN;
                for (int64_t hh = 0; hh < nh; hh++) {
                    int64_t top = 0;
                    for (int64_t c = 0; c < hd; c++) {
                        int64_t v = o[(t * nh + hh) * hd + c];
                        v = v < 0 ? -v : v;
                        if (v > top) top = v;
                    }
                    int64_t lead = top > 0 ? oe[t * nh + hh] + bitlen((uint64_t)top) : -((int64_t)1 << 40);
                    if (lead > E) E = lead;
                }
                E -= ACT_BITS - 1;
                for (int64_t hh = 0; hh < nh; hh++)
                    for (int64_t c = 0; c < hd; c++)
                        a[t * dim + hh * hd + c] =
                            (int16_t)clip(shift_round(o[(t * nh + hh) * hd + c], E - oe[t * nh + hh]), 32767);
                e[t] = E < -((int64_t)1 << 39) ? 0 : E;
                int32_t s;
                for (int64_t b = 0; b < dim / 32; b++) {
                    s = 0;
                    for (int k = 0; k < 32; k++) s += a[t * dim + b * 32 + k];
                    A[t * (dim / 32) + b] = (double)s;
                }
            }
            matmul(&W[1], T, a, A, y, n_t, id);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                int64_t sh = -(e[t] - WUNIT + RESID);
                for (int64_t i = 0; i < dim; i++) h[t * dim + i] += shift_round((int64_t)y[t * dim + i], sh);
                e[t] = rmsnorm(M, h + t * dim, gam + dim, M->gshift[li * 2 + 1], sc->x, a + t * dim);
                int32_t s;
                for (int64_t b = 0; b < dim / 32; b++) {
                    s = 0;
                    for (int k = 0; k < 32; k++) s += a[t * dim + b * 32 + k];
                    A[t * (dim / 32) + b] = (double)s;
                }
            }
            matmul(&W[2], T, a, A, y, n_t, id);
#pragma omp barrier
            /* SwiGLU: silu(gate) * up, one int16 row */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                int64_t *um = sc->y2, *p = sc->x;
                const double *yt = y + t * W[2].N;
                for (int64_t i = 0; i < ffn; i++) p[i] = (int64_t)yt[ffn + i];
                int64_t ue = quantise(p, ffn, ACT_BITS, um);
                int64_t gsh = -(e[t] - WUNIT + 16);
                for (int64_t i = 0; i < ffn; i++) {
                    int64_t gq = shift_round((int64_t)yt[i], gsh);
                    gq = gq > SIGMOID_CLAMP ? SIGMOID_CLAMP : (gq < -SIGMOID_CLAMP ? -SIGMOID_CLAMP : gq);
                    int64_t sig = sigmoid_q24((gq * LOG2E_FIX) >> 16, M->exp2);
                    p[i] = ((gq * sig) >> 24) * um[i];
                }
                int64_t e2 = quantise(p, ffn, ACT_BITS, p);
                for (int64_t i = 0; i < ffn; i++) a[t * ffn + i] = (int16_t)p[i];
                e[t] = e2 + ue + e[t] - WUNIT - 16;
                int32_t s;
                for (int64_t b = 0; b < ffn / 32; b++) {
                    s = 0;
                    for (int k = 0; k < 32; k++) s += a[t * ffn + b * 32 + k];
                    A[t * (ffn / 32) + b] = (double)s;
                }
            }
            matmul(&W[3], T, a, A, y, n_t, id);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                int64_t sh = -(e[t] - WUNIT + RESID);
                for (int64_t i = 0; i < dim; i++) h[t * dim + i] += shift_round((int64_t)y[t * dim + i], sh);
            }
        }
        const int64_t *gout = M->gamma + M->n_layer * 2 * dim;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++)
            e_out[t] = rmsnorm(M, h + t * dim, gout, M->gshift[M->n_layer * 2], sc->x, a_out + t * dim);
    }
done:
    if (S)
        for (int i = 0; i < nt; i++) {
            free(S[i].x);
            free(S[i].y2);
            free(S[i].B);
            free(S[i].P);
        }
    free(S);
    free(a);
    free(e);
    free(A);
    free(y);
    free(cs);
    free(sn);
    free(qr);
    free(qe);
    free(o);
    free(oe);
    return failed ? -1 : 0;
}

/* logits (units of 2**-16 nats) of final-norm rows: z = round(a @ W * 2**(e - 24 + 16)) */
int nc_logits(const Model *M, int64_t T, const int16_t *a, const int64_t *e, int64_t *z, int nthreads)
{
    const QMat *W = M->mats + M->n_layer * 4;
    int64_t K = W->K, N = W->N;
    double *A = malloc(sizeof(double) * T * (K / 32) + 8);
    double *y = malloc(sizeof(double) * T * N + 8);
    int nt = nthreads < 1 ? 1 : nthreads;
    if (!A || !y) {
        free(A);
        free(y);
        return -1;
    }
    block_sums(T, K, a, A);
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int id = omp_get_thread_num(), n_t = omp_get_num_threads();
#else
        int id = 0, n_t = 1;
#endif
        matmul(W, T, a, A, y, n_t, id);
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            int64_t sh = -(e[t] - WUNIT + LOGIT_UNIT);
            for (int64_t n = 0; n < N; n++) z[t * N + n] = shift_round((int64_t)y[t * N + n], sh);
        }
    }
    free(A);
    free(y);
    return 0;
}

/* y = a @ W (double, exact integers) for tests of the product alone */
int nc_matmul(const QMat *W, int64_t T, const int16_t *a, double *y, int nthreads)
{
    double *A = malloc(sizeof(double) * T * (W->K / 32) + 8);
    if (!A) return -1;
    block_sums(T, W->K, a, A);
    int nt = nthreads < 1 ? 1 : nthreads;
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        matmul(W, T, a, A, y, omp_get_num_threads(), omp_get_thread_num());
#else
        matmul(W, T, a, A, y, 1, 0);
#endif
    }
    free(A);
    return 0;
}

/* -- frequencies and the two bias heads ----------------------------------------------
 * The integer softmax (codec/quantize.freqs_fixed) of each row's logits, refined by the
 * bias head and the context bias head exactly as predictors/online.Online does when
 * they are its only predictors, then (start, freq) of the known token (encoder) or the
 * token whose interval holds the rANS slot (decoder), and the heads' update. Rows of
 * one lane are taken in order (each updates the lane's biases); lanes run in parallel.
 * z: int64 [T, V] logits (2**-16 nats); bias: [lanes, V] or NULL; ctxb: [lanes, 2**18]
 * or NULL; prev: the lane's previous token (Online.recent[:, -1]); tcount: Online.t.
 * target NULL: decode with slot[]. */
#define TOTAL_F ((int64_t)1 << 24)
#define BIAS_CAP_F ((int64_t)8 << 16)
#define CTX_BITS 18

static inline int64_t clipb(int64_t x) { return x > BIAS_CAP_F ? BIAS_CAP_F : (x < -BIAS_CAP_F ? -BIAS_CAP_F : x); }

static void code_row(int64_t V, const int64_t *z, int64_t *bias, int64_t *ctxb, int64_t prev, int64_t target,
                     int64_t slot, int64_t bias_lr, int64_t ctx_lr, const int64_t *exp2, int64_t *q, int64_t *f,
                     int64_t *start, int64_t *freq, int64_t *sym)
{
    const uint64_t M32 = 0xFFFFFFFFull, mask = ((uint64_t)1 << CTX_BITS) - 1;
    uint64_t off = 0;
    if (ctxb) {
        uint64_t h = ((13u ^ (uint64_t)(prev + 1)) * 0x2545F491ull) & M32;
        off = ((h ^ (h >> 16)) * 0x45D9F3Bull) & M32;
    }
    int64_t top = INT64_MIN;
    for (int64_t v = 0; v < V; v++) {
        int64_t x = z[v];
        if (bias) x += bias[v];
        if (ctxb) x += ctxb[(off + (uint64_t)v) & mask];
        q[v] = x;
        if (x > top) top = x;
    }
    int64_t W = 0, wmax = -1, arg = 0;
    for (int64_t v = 0; v < V; v++) {
        int64_t e = (int64_t)(((uint64_t)(top - q[v]) * (uint64_t)LOG2E_FIX)) >> 16;
        int64_t wh = e >> 16;
        int64_t w = exp2[(e & 0xFFFF) >> 4] >> (wh > 62 ? 62 : wh);
        f[v] = w;
        W += w;
        if (w > wmax) {
            wmax = w;
            arg = v;
        }
    }
    int64_t spare = TOTAL_F - V, sumf = 0;
    double inv = 1.0 / (double)W;
    for (int64_t v = 0; v < V; v++) {
        int64_t x = f[v] * spare; /* < 2**54 */
        int64_t d = (int64_t)((double)x * inv);
        int64_t r = x - d * W;
        while (r < 0) { d--; r += W; }
        while (r >= W) { d++; r -= W; }
        f[v] = 1 + d;
        sumf += f[v];
    }
    f[arg] += TOTAL_F - sumf;
    int64_t y, c = 0;
    if (target) {
        y = *start; /* the target was passed in start */
        for (int64_t v = 0; v < y; v++) c += f[v];
    } else {
        for (y = 0; y < V - 1; y++) {
            if (c + f[y] > slot) break;
            c += f[y];
        }
    }
    *start = c;
    *freq = f[y];
    *sym = y;
    if (bias)
        for (int64_t v = 0; v < V; v++) bias[v] = clipb(bias[v] - ((f[v] * bias_lr) >> 24) + (v == y ? bias_lr : 0));
    if (ctxb)
        for (int64_t v = 0; v < V; v++) {
            int64_t *cell = ctxb + ((off + (uint64_t)v) & mask);
            *cell = clipb(*cell - ((f[v] * ctx_lr) >> 24) + (v == y ? ctx_lr : 0));
        }
}

int nc_code_rows(int64_t T, int64_t V, const int64_t *z, const int64_t *lane, const int64_t *target,
                 const int64_t *slot, int64_t *bias, int64_t *ctxb, int64_t *prev, int64_t *tcount,
                 int64_t bias_lr, int64_t ctx_lr, const int64_t *exp2, int64_t *start, int64_t *freq, int64_t *sym,
                 int nthreads)
{
    int64_t *lanes = malloc(sizeof(int64_t) * (T + 1));
    if (!lanes) return -1;
    int64_t nl = 0;
    for (int64_t t = 0; t < T; t++) {
        int seen = 0;
        for (int64_t i = 0; i < nl && !seen; i++) seen = lanes[i] == lane[t];
        if (!seen) lanes[nl++] = lane[t];
    }
    int failed = 0;
    int nt = nthreads < 1 ? 1 : nthreads;
#pragma omp parallel num_threads(nt) reduction(| : failed)
    {
        int64_t *q = malloc(sizeof(int64_t) * V), *f = malloc(sizeof(int64_t) * V);
        if (!q || !f) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < nl; i++) {
            if (!q || !f) continue;
            int64_t l = lanes[i];
            for (int64_t t = 0; t < T; t++) {
                if (lane[t] != l) continue;
                if (target) start[t] = target[t];
                code_row(V, z + t * V, bias ? bias + l * V : NULL, ctxb ? ctxb + (l << CTX_BITS) : NULL, prev[l],
                         target ? target[t] : 0, slot ? slot[t] : 0, bias_lr, ctx_lr, exp2, q, f, start + t,
                         freq + t, sym + t);
                prev[l] = sym[t];
                tcount[l] += 1;
            }
        }
        free(q);
        free(f);
    }
    free(lanes);
    return failed ? -1 : 0;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "C kernels of the integer engine (used through ctypes).", -1, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
