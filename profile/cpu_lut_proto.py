"""Issue 12's AVX2 lookup-table (T-MAC / TL-style) GEMV experiment: an exact LUT GEMV prototype on
AVX2 against the shipped GEMV tiles, 1 thread, weights hot. Not part of the package: it decided that
AVX2 gets no lookup kernel (docs/benchmarks.md, "The lookup-table GEMV"; the shipped one is
AVX-512 vpermw on another layout, csrc/cpu/lut.c). The prototype (C below) repacks the weights into
tiles of 32 rows (a byte = the code pairs of two groups of 2 activations of one row), builds per
token a table per group of the 16 int16 sums (c0 - 1) x0 + (c1 - 1) x1 split into low and high
bytes, and sums vpshufb lookups (lo and hi), unpacked to int16, into int32 every 32 steps. It checks
its result against bl_gemm_acc's reference (bit for bit) before timing.

    python profile/cpu_lut_proto.py [--k 4096] [--n 4096]

Compiles csrc/cpu/*.c (flags from csrc/cpu/isa_flags.txt) with this C file in a temporary
directory with cc; x86-64 with AVX2 only.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU = ROOT / "csrc" / "cpu"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_decode_c import core_objects  # noqa: E402  (profile/, next to this file)

C_SRC = r"""
/* Prototype: exact LUT GEMV (T-MAC style) on AVX2 vs the shipped GEMV. Not part of the repo.
 * Repack: tiles of 32 rows; per 4 consecutive k (two groups of 2 weights) 32 bytes, byte r =
 * code pair of group 2q (lo nibble) | group 2q+1 (hi nibble) of row r, codes clamped to 0..2.
 * Table per group g (per token): t[c0 + 4 c1] = (c0-1) x[2g] + (c1-1) x[2g+1] in int16,
 * split into lo bytes TL and hi bytes TH (16 each). GEMV: pshufb lo / hi, unpack to int16, add;
 * int16 accumulators flushed to int32 every 32 steps (64 lookups of |t| <= 256 fit int16).
 * gemv_lut: one 32-row tile per table load; gemv_lut2: two (64 rows). N % 64 == 0, K % 4 == 0. */
#define _POSIX_C_SOURCE 200809L
#include "bitlinear.h"
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static int code_at(const uint8_t*row,int64_t k){int c=(row[(k/128)*32+(k%32)]>>(2*((k%128)/32)))&3;return c<2?c:2;}
static void repack(const uint8_t*p,int64_t N,int64_t K,uint8_t*out){ /* N%32==0, K%4==0 */
  int64_t rb=bl_packed_row_bytes(K);
  for(int64_t t=0;t<N/32;t++)for(int64_t q=0;q<K/4;q++)for(int r=0;r<32;r++){
    const uint8_t*row=p+(t*32+r)*rb; int64_t k=4*q;
    uint8_t lo=(uint8_t)(code_at(row,k)+4*code_at(row,k+1)), hi=(uint8_t)(code_at(row,k+2)+4*code_at(row,k+3));
    out[(t*(K/4)+q)*32+r]=(uint8_t)(lo|(hi<<4));}
}
static void tables(const int8_t*x,int64_t K,uint8_t*T){ /* per group g: 16 lo then 16 hi bytes */
  for(int64_t g=0;g<K/2;g++)for(int i=0;i<16;i++){int c0=i&3,c1=i>>2;if(c0>2)c0=2;if(c1>2)c1=2;
    int v=(c0-1)*x[2*g]+(c1-1)*x[2*g+1]; T[g*32+i]=(uint8_t)(v&0xff); T[g*32+16+i]=(uint8_t)((v>>8)&0xff);}
}
__attribute__((target("avx2"))) static void gemv_lut(const uint8_t*w,const uint8_t*T,int64_t N,int64_t K,int32_t*y){
  const __m256i m0f=_mm256_set1_epi8(0x0f);
  const int64_t Q=K/4;
  for(int64_t t=0;t<N/32;t++){
    const uint8_t*wt=w+t*Q*32;
    __m256i acc0=_mm256_setzero_si256(),acc1=acc0,acc2=acc0,acc3=acc0; /* int32: rows 0-7,8-15,16-23,24-31 */
    for(int64_t q0=0;q0<Q;q0+=32){
      int64_t q1=q0+32<Q?q0+32:Q;
      __m256i a0=_mm256_setzero_si256(),a1=a0; /* int16: unpacklo / unpackhi halves */
      for(int64_t q=q0;q<q1;q++){
        _mm_prefetch((const char*)(wt+q*32+8192),_MM_HINT_T0);
        __m256i raw=_mm256_loadu_si256((const __m256i*)(wt+q*32));
        __m256i nl=_mm256_and_si256(raw,m0f), nh=_mm256_and_si256(_mm256_srli_epi16(raw,4),m0f);
        const uint8_t*tg=T+(2*q)*32;
        __m256i tl0=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)tg));
        __m256i th0=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tg+16)));
        __m256i tl1=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tg+32)));
        __m256i th1=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tg+48)));
        __m256i l0=_mm256_shuffle_epi8(tl0,nl),h0=_mm256_shuffle_epi8(th0,nl);
        __m256i l1=_mm256_shuffle_epi8(tl1,nh),h1=_mm256_shuffle_epi8(th1,nh);
        a0=_mm256_add_epi16(a0,_mm256_add_epi16(_mm256_unpacklo_epi8(l0,h0),_mm256_unpacklo_epi8(l1,h1)));
        a1=_mm256_add_epi16(a1,_mm256_add_epi16(_mm256_unpackhi_epi8(l0,h0),_mm256_unpackhi_epi8(l1,h1)));
      }
      /* a0 lanes: rows 0-7 (lane 0), 16-23 (lane 1); a1: rows 8-15, 24-31 */
      acc0=_mm256_add_epi32(acc0,_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a0)));
      acc2=_mm256_add_epi32(acc2,_mm256_cvtepi16_epi32(_mm256_extracti128_si256(a0,1)));
      acc1=_mm256_add_epi32(acc1,_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a1)));
      acc3=_mm256_add_epi32(acc3,_mm256_cvtepi16_epi32(_mm256_extracti128_si256(a1,1)));
    }
    _mm256_storeu_si256((__m256i*)(y+t*32),acc0);_mm256_storeu_si256((__m256i*)(y+t*32+8),acc1);
    _mm256_storeu_si256((__m256i*)(y+t*32+16),acc2);_mm256_storeu_si256((__m256i*)(y+t*32+24),acc3);
  }
}
__attribute__((target("avx2"))) static void gemv_lut2(const uint8_t*w,const uint8_t*T,int64_t N,int64_t K,int32_t*y){
  const __m256i m0f=_mm256_set1_epi8(0x0f);
  const int64_t Q=K/4;
  for(int64_t t=0;t<N/32;t+=2){
    const uint8_t*wt=w+t*Q*32;
    __m256i acc[2][4];
    for(int u=0;u<2;u++)for(int i=0;i<4;i++)acc[u][i]=_mm256_setzero_si256();
    for(int64_t q0=0;q0<Q;q0+=32){
      int64_t q1=q0+32<Q?q0+32:Q;
      __m256i a[2][2];for(int u=0;u<2;u++)a[u][0]=a[u][1]=_mm256_setzero_si256();
      for(int64_t q=q0;q<q1;q++){
        const uint8_t*tg=T+(2*q)*32;
        __m256i tl0=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)tg));
        __m256i th0=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tg+16)));
        __m256i tl1=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tg+32)));
        __m256i th1=_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tg+48)));
        for(int u=0;u<2;u++){
          const uint8_t*wu=wt+u*Q*32;
          _mm_prefetch((const char*)(wu+q*32+8192),_MM_HINT_T0);
          __m256i raw=_mm256_loadu_si256((const __m256i*)(wu+q*32));
          __m256i nl=_mm256_and_si256(raw,m0f), nh=_mm256_and_si256(_mm256_srli_epi16(raw,4),m0f);
          __m256i l0=_mm256_shuffle_epi8(tl0,nl),h0=_mm256_shuffle_epi8(th0,nl);
          __m256i l1=_mm256_shuffle_epi8(tl1,nh),h1=_mm256_shuffle_epi8(th1,nh);
          a[u][0]=_mm256_add_epi16(a[u][0],_mm256_add_epi16(_mm256_unpacklo_epi8(l0,h0),_mm256_unpacklo_epi8(l1,h1)));
          a[u][1]=_mm256_add_epi16(a[u][1],_mm256_add_epi16(_mm256_unpackhi_epi8(l0,h0),_mm256_unpackhi_epi8(l1,h1)));
        }
      }
      for(int u=0;u<2;u++){
      acc[u][0]=_mm256_add_epi32(acc[u][0],_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a[u][0])));
      acc[u][2]=_mm256_add_epi32(acc[u][2],_mm256_cvtepi16_epi32(_mm256_extracti128_si256(a[u][0],1)));
      acc[u][1]=_mm256_add_epi32(acc[u][1],_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a[u][1])));
      acc[u][3]=_mm256_add_epi32(acc[u][3],_mm256_cvtepi16_epi32(_mm256_extracti128_si256(a[u][1],1)));}
    }
    for(int u=0;u<2;u++)for(int i=0;i<4;i++)_mm256_storeu_si256((__m256i*)(y+(t+u)*32+8*i),acc[u][i]);
  }
}
static int cmpd(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int K=argc>1?atoi(argv[1]):4096,N=argc>2?atoi(argv[2]):4096;
  int64_t rb=bl_packed_row_bytes(K),Kp=bl_padded_k(K);
  uint8_t*p=aligned_alloc(64,rb*N),*w=aligned_alloc(64,rb*N),*T=aligned_alloc(64,K*16);
  int8_t*x=aligned_alloc(64,Kp);int32_t*y=aligned_alloc(64,N*4),*yr=aligned_alloc(64,N*4),*yk=aligned_alloc(64,N*4);
  for(int64_t i=0;i<rb*N;i++)p[i]=(uint8_t)rand();for(int i=0;i<Kp;i++)x[i]=(int8_t)(rand()%256-128);
  repack(p,N,K,w);tables(x,K,T);gemv_lut(w,T,N,K,y);
  bl_isa_set(BL_ISA_REF);bl_gemm_acc(x,Kp,NULL,p,1,N,K,yr,N,1);
  gemv_lut2(w,T,N,K,yk);int bad2=0;for(int n=0;n<N;n++)bad2+=yk[n]!=yr[n];printf("lut2 mismatches %d\n",bad2);int bad=0;for(int n=0;n<N;n++)bad+=y[n]!=yr[n];printf("lut vs ref: %d mismatches of %d\n",bad,N);
  const char*isas[]={"avx2","avx512vnni"};
  for(int round=0;round<3;round++){
    double t[300];
    for(int r=0;r<300;r++){double t0=now();tables(x,K,T);gemv_lut(w,T,N,K,y);t[r]=now()-t0;}
    qsort(t,300,8,cmpd);printf("lut(avx2, tables incl.) K=%d N=%d 1 thread hot: median %.1f us\n",K,N,t[150]*1e6);
    for(int r=0;r<300;r++){double t0=now();gemv_lut2(w,T,N,K,y);t[r]=now()-t0;}
    qsort(t,300,8,cmpd);printf("  lut2 (64 rows per table load) kernel alone: %.1f us\n",t[150]*1e6);
    for(int r=0;r<300;r++){double t0=now();gemv_lut(w,T,N,K,y);t[r]=now()-t0;}
    qsort(t,300,8,cmpd);printf("  lut kernel alone: %.1f us\n",t[150]*1e6);
    for(int r=0;r<300;r++){double t0=now();tables(x,K,T);t[r]=now()-t0;}
    qsort(t,300,8,cmpd);printf("  tables alone (scalar C): %.1f us\n",t[150]*1e6);
    for(int i=0;i<2;i++){bl_isa_set(bl_isa_from_name(isas[i]));
      for(int r=0;r<300;r++){double t0=now();bl_gemm_acc(x,Kp,NULL,p,1,N,K,yk,N,1);t[r]=now()-t0;}
      qsort(t,300,8,cmpd);printf("shipped %s gemv 1 thread hot: median %.1f us\n",isas[i],t[150]*1e6);}
  }
  return 0;}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    a = ap.parse_args()
    if a.n % 64 or a.k % 4:
        sys.exit("N must be a multiple of 64 and K of 4")
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory(prefix="bl-lut-") as tmp:
        objs = core_objects(CPU, tmp, cc)
        src = os.path.join(tmp, "lut.c")
        Path(src).write_text(C_SRC)
        exe = os.path.join(tmp, "lut")
        cmd = [cc, "-O3", "-fopenmp", f"-I{ROOT / 'csrc'}", src, *objs, "-lm", "-o", exe]
        subprocess.run(cmd, check=True)
        print("$", " ".join(shlex.quote(v) for v in [exe, str(a.k), str(a.n)]), flush=True)
        return subprocess.run([exe, str(a.k), str(a.n)]).returncode


if __name__ == "__main__":
    sys.exit(main())
