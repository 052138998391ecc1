// Which instructions of the cell update can run beside `vdpbf16ps` for free?
//
// Each loop iteration issues 16 independent `vdpbf16ps` (one per accumulator, as the step's
// product loop does) plus 8 independent chains of one other instruction, and compares the time
// with the products alone and the 8 instructions alone. "hidden 100%" means the instruction ran
// on resources the products leave idle; "hidden 0%" means it took the products' pipes.
// docs/kernels.md quotes what it printed on the Zen 4 this project was measured on.
//
// Build and run (a CPU with AVX512-BF16):
//   gcc -O2 -march=native -o /tmp/port_probe tools/port_probe.c && /tmp/port_probe
// chains of one instruction kind; compare with the 16 products alone and the 8 ops alone.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define N 20000000L
#define GEN(NAME, ND, EXPR) static double NAME(void){ __m512 A[16], E[8]; \
  for(int q=0;q<16;q++) { A[q]=_mm512_set1_ps(0.f); } \
  for(int q=0;q<8;q++) { E[q]=_mm512_set1_ps(1.0f+q); } \
  __m512 w=_mm512_set1_ps(1.0f), x=_mm512_set1_ps(0.25f), c=_mm512_set1_ps(1.0001f); double t=now(); \
  for(long i=0;i<N;i++){ __asm__ volatile("" : "+v"(w),"+v"(x),"+v"(c)); \
    _Pragma("GCC unroll 16") for(int q=0;q<ND;q++) A[q]=_mm512_dpbf16_ps(A[q],(__m512bh)w,(__m512bh)x); \
    _Pragma("GCC unroll 8") for(int q=0;q<8;q++){ __m512 v=E[q]; E[q]=(EXPR); } } \
  t=now()-t; __m512 s=A[0]; for(int q=1;q<16;q++) s=_mm512_add_ps(s,A[q]); for(int q=0;q<8;q++) s=_mm512_add_ps(s,E[q]); \
  volatile float sink=_mm512_reduce_add_ps(s); (void)sink; return t/N*1e9; }
#define PAIR(n, EXPR) GEN(with_##n, 16, EXPR) GEN(alone_##n, 0, EXPR)
GEN(with_none, 16, v)
PAIR(fma, _mm512_fmadd_ps(v,c,c))
PAIR(mul, _mm512_mul_ps(v,c))
PAIR(add, _mm512_add_ps(v,c))
PAIR(max, _mm512_max_ps(v,c))
PAIR(round, _mm512_roundscale_ps(v,8))
PAIR(cvt, _mm512_castsi512_ps(_mm512_cvtps_epi32(v)))
PAIR(shift, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(v),1)))
PAIR(iadd, _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(v),_mm512_castps_si512(c))))
PAIR(and, _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v),_mm512_castps_si512(c))))
PAIR(div, _mm512_div_ps(c,v))
PAIR(scalef, _mm512_scalef_ps(v,c))
PAIR(cmpmov, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v,c,_CMP_NLT_UQ),v))
int main(void){
  double base=with_none(); base=with_none();
  printf("16 vdpbf16ps alone: %.2f ns per iteration\n", base);
  struct {const char*n; double(*w)(void); double(*a)(void);} T[]={
    {"fma",with_fma,alone_fma},{"mul",with_mul,alone_mul},{"add",with_add,alone_add},{"max",with_max,alone_max},
    {"round",with_round,alone_round},{"cvt",with_cvt,alone_cvt},{"shift",with_shift,alone_shift},
    {"iadd",with_iadd,alone_iadd},{"and",with_and,alone_and},{"div",with_div,alone_div},
    {"scalef",with_scalef,alone_scalef},{"cmp+mov",with_cmpmov,alone_cmpmov}};
  for(unsigned i=0;i<sizeof T/sizeof *T;i++){ double w=T[i].w(), a=T[i].a(), b=with_none();
    printf("%-8s 8 alone %.2f ns, with the 16 products %.2f ns (products alone %.2f): hidden %3.0f%%\n",
      T[i].n, a, w, b, 100.0*(1.0-(w-b)/a)); }
  return 0;
}
