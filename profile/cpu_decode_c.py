"""The C core's decode timings without torch: bl_linear_q at small M on one CPU path, weights hot
(one copy) or cold (256 MiB of copies in rotation), median / p10 / min of >= 60 calls. Builds
csrc/cpu (flags from csrc/cpu/isa_flags.txt) of the working tree, or of a git revision (--rev,
e.g. the commit before a change, for a before / after in one session), with the driver below.

    python profile/cpu_decode_c.py [--rev REV] [--shape 4096x4096] [--ms 1,2,4] [--cold]
        [--isa avx512vnni] [--threads 1] [--no-solo] [--lut]

--lut times bl_linear_lut on float32 inputs (quantization included) twice: reading the decode
layout (forced) and the packed weights; GB/s count the bytes each streams.

--no-solo builds the governor (governor.c) with its oversubscription fallback off (take_solo_call never fires), so
on a shared machine a 2-thread call waits for the scheduler instead of running on one thread: the
medians then measure the load; min and p10 what the kernels do in a quiet moment. x86-64 only.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r"""
#define _POSIX_C_SOURCE 200809L
#include "bitlinear.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static int cmpd(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int K=atoi(argv[1]),N=atoi(argv[2]);char*ml=argv[3];int cold=atoi(argv[4]);const char*isa=argv[5];int nt=argc>6?atoi(argv[6]):2;
  bl_isa_set(bl_isa_from_name(isa));
  int64_t rb=bl_packed_row_bytes(K),Kp=bl_padded_k(K);size_t wb=(size_t)rb*N;
  int copies=cold? (int)((256u<<20)/wb+1):1;
  uint8_t*w=aligned_alloc(64,(wb*copies+63)/64*64);
  for(size_t i=0;i<wb*copies;i++)w[i]=(uint8_t)(rand()&0xff);
  for(size_t i=0;i<wb*copies;i++){uint8_t b=w[i];for(int s=0;s<4;s++)if(((b>>2*s)&3)==3)b^=(1<<2*s);w[i]=b;}
  int MM=256;int8_t*xq=aligned_alloc(64,MM*Kp);for(int i=0;i<MM*Kp;i++)xq[i]=(int8_t)(rand()%255-127);
  int32_t*acc=aligned_alloc(64,(size_t)MM*N*4+64);
  float xs[256],ws=1.0f;for(int i=0;i<256;i++)xs[i]=0.01f;float*y=aligned_alloc(64,(size_t)MM*N*4+64);
  int lut=argc>7?atoi(argv[7]):0;
#ifdef BL_LUT_COL_K
  /* --lut: bl_linear_lut on float32 x (quantization included) reading the decode layout of each
     copy (BL_CPU_LUT_FORCE), against the same call on the packed weights (BL_CPU_LUT_OFF) */
  size_t lb=lut?bl_lut_bytes(N,K):0;uint8_t*L=lut?aligned_alloc(64,(lb*copies+63)/64*64):NULL;
  for(int c=0;lut&&c<copies;c++)bl_lut_pack(w+(size_t)c*wb,N,K,L+(size_t)c*lb,nt);
  float*xf=malloc(sizeof(float)*MM*K);for(int i=0;i<MM*K;i++)xf[i]=(float)(rand()%2001-1000);
  void*work=aligned_alloc(64,(bl_linear_lut_workspace_bytes(MM,K)+63)/64*64);
#else
  if(lut){fprintf(stderr,"--lut: this revision has no decode layout\n");return 2;}
#endif
  for(char*tok=strtok(ml,",");tok;tok=strtok(NULL,",")){int M=atoi(tok);
  int reps=cold?copies*3:200; if(reps<60)reps=60; if(M>16)reps=20;
  double*t=malloc(sizeof(double)*reps);
  for(int mode=lut?0:-1;mode<(lut?2:0);mode++){
  for(int r=-20;r<reps;r++){int c=(r+20)%copies;double t0=now();
    if(mode<0) bl_linear_q(xq,Kp,xs,NULL,M,w+(size_t)c*wb,N,K,&ws,0,NULL,y,BL_F32,N,nt);
#ifdef BL_LUT_COL_K
    else {bl_cpu_set_option(BL_CPU_OPT_LUT,mode?BL_CPU_LUT_FORCE:BL_CPU_LUT_OFF);
      bl_linear_lut(xf,BL_F32,M,K,K,w+(size_t)c*wb,L+(size_t)c*lb,N,&ws,0,NULL,1e-6f,1,y,BL_F32,N,work,nt);}
#endif
    if(r>=0)t[r]=now()-t0;}
  qsort(t,reps,sizeof(double),cmpd);
  size_t bytes=mode==1?lb:wb;const char*what=mode<0?"linear_q":mode?"lut":"packed";
  printf("%s %s K=%d N=%d M=%d %s nt=%d: p10 %.1f us median %.1f us min %.1f us  (%.1f GB/s)\n",isa,what,K,N,M,cold?"cold":"hot",nt,t[reps/10]*1e6,t[reps/2]*1e6,t[0]*1e6,bytes/t[reps/2]/1e9);
  }
  free(t);}
  return 0;}
"""


def sources(rev, dst: Path) -> Path:
    """csrc/ of the working tree, or of git revision rev, copied under dst; returns its cpu dir."""
    out = dst / "csrc"
    if rev is None:
        subprocess.run(["cp", "-r", str(ROOT / "csrc"), str(out)], check=True)
    else:
        files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "csrc"],
                               check=True, capture_output=True, text=True).stdout.split()
        for f in files:
            p = dst / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{f}"], check=True,
                                         capture_output=True).stdout)
    return out / "cpu"


def flags(cpu: Path):
    """(common flags, {file: extra flags}) of isa_flags.txt for x86-64, read by setup.py's own
    parser."""
    sys.path.insert(0, str(ROOT))
    import setup as build  # noqa: E402  (setup.py's helpers; its main() runs only as a script)
    common, per, _ = build.read_isa_flags(cpu / "isa_flags.txt", "x86_64")
    return common, per


def core_objects(cpu: Path, tmp: str, cc: str) -> list:
    """Compiles the x86-64 C core of `cpu` (csrc/cpu of some revision) into tmp: the objects."""
    common, per = flags(cpu)
    objs = []
    for c in sorted(cpu.glob("*.c")):
        if c.name == "isa_neon_dot.c":
            continue
        o = os.path.join(tmp, c.stem + ".o")
        subprocess.run([cc, *common, *per.get(c.name, []), "-c", str(c), "-o", o], check=True)
        objs.append(o)
    return objs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=None, help="git revision of csrc/ (default: the working tree)")
    ap.add_argument("--shape", default="4096x4096", help="KxN")
    ap.add_argument("--ms", default="1,2,4,8,16")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--isa", default="avx512vnni")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-solo", action="store_true")
    ap.add_argument("--lut", action="store_true",
                    help="bl_linear_lut on float inputs, decode layout (lut) against packed weights")
    a = ap.parse_args()
    K, N = (int(v) for v in a.shape.lower().split("x"))
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory(prefix="bl-decode-") as tmp:
        cpu = sources(a.rev, Path(tmp))
        if a.no_solo:  # governor.c since the split of gemm.c (issue 21), gemm.c before
            hook = "static int take_solo_call(void) {"
            g = next((f for f in (cpu / "governor.c", cpu / "gemm.c")
                      if f.exists() and hook in f.read_text()), None)
            if g is None:
                sys.exit("no take_solo_call in governor.c or gemm.c at this revision")
            g.write_text(g.read_text().replace(hook, hook + " if (1) return 0;"))
        objs = core_objects(cpu, tmp, cc)
        src = os.path.join(tmp, "driver.c")
        Path(src).write_text(DRIVER)
        exe = os.path.join(tmp, "driver")
        subprocess.run([cc, "-O2", "-fopenmp", f"-I{cpu.parent}", src, *objs, "-lm", "-o", exe],
                       check=True)
        return subprocess.run([exe, str(K), str(N), a.ms, "1" if a.cold else "0", a.isa,
                               str(a.threads), "1" if a.lut else "0"]).returncode


if __name__ == "__main__":
    sys.exit(main())
