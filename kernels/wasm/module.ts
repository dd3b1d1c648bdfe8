/**
 * Compiles kernels/wasm/kernels.wat once per process (at module load, with the `wabt`
 * npm package: the toolchain comes from npm, no downloaded binaries) and keeps the
 * WebAssembly.Module; every wasm backend and its worker threads instantiate it against
 * their own shared memory.
 *
 * Relaxed SIMD: Node 20's V8 has f32x4.relaxed_madd (a fused multiply-add on FMA
 * hardware, ~1.5× the throughput of mul + add) behind a flag; we switch the flag on
 * before compiling and check that it took. If it did not, or INVARX_WASM_STRICT=1 asks
 * for results that do not depend on the machine's FMA, the text is rewritten to unfused
 * f32x4.add(f32x4.mul(a, b), c) first.
 */
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import wabtInit from 'wabt';
import { WA, type WasmMemory, type WasmModule } from './api';

/** The .wat source: beside this file in the repo, or under kernels/wasm from dist/. */
function watPath(): string {
  const candidates = [new URL('./kernels.wat', import.meta.url), new URL('../kernels/wasm/kernels.wat', import.meta.url)];
  for (const u of candidates) {
    const p = fileURLToPath(u);
    if (existsSync(p)) return p;
  }
  throw new Error(`kernels.wat not found (looked at ${candidates.map((u) => fileURLToPath(u)).join(', ')})`);
}

/** (module (func (result v128) zeros zeros zeros f32x4.relaxed_madd)) as bytes. */
const RELAXED_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type: () -> v128
  0x03, 0x02, 0x01, 0x00, // func 0 of type 0
  0x0a, 0x3d, 0x01, 0x3b, 0x00, // code: 1 body of 59 bytes, no locals
  0xfd, 0x0c, ...new Array(16).fill(0), // v128.const 0
  0xfd, 0x0c, ...new Array(16).fill(0),
  0xfd, 0x0c, ...new Array(16).fill(0),
  0xfd, 0x85, 0x02, // f32x4.relaxed_madd (0x105)
  0x0b,
]);

function relaxedSimdAvailable(): boolean {
  if (WA.validate(RELAXED_PROBE)) return true;
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    return false;
  }
  return WA.validate(RELAXED_PROBE);
}

/** Rewrites every `(f32x4.relaxed_madd A B C)` of folded WAT to `(f32x4.add (f32x4.mul A B) C)`. */
export function unfuseMadd(src: string): string {
  const head = '(f32x4.relaxed_madd';
  let out = '';
  let pos = 0;
  for (;;) {
    const at = src.indexOf(head, pos);
    if (at < 0) return out + src.slice(pos);
    out += src.slice(pos, at);
    let i = at + head.length;
    const args: string[] = [];
    while (args.length < 3) {
      while (/\s/.test(src[i])) i++;
      if (src[i] !== '(') throw new Error(`unfuseMadd: operand ${args.length + 1} at ${i} is not a folded expression`);
      let depth = 0;
      const start = i;
      do {
        if (src[i] === '(') depth++;
        else if (src[i] === ')') depth--;
        i++;
      } while (depth > 0);
      args.push(unfuseMadd(src.slice(start, i)));
    }
    while (src[i] !== ')') i++;
    out += `(f32x4.add (f32x4.mul ${args[0]} ${args[1]}) ${args[2]})`;
    pos = i + 1;
  }
}

type Wabt = Awaited<ReturnType<typeof wabtInit>>;

function compile(wabt: Wabt, source: string, fused: boolean): WasmModule {
  const parsed = wabt.parseWat('kernels.wat', fused ? source : unfuseMadd(source), { simd: true, relaxed_simd: fused, threads: true });
  try {
    return new WA.Module(parsed.toBinary({}).buffer);
  } finally {
    parsed.destroy();
  }
}

const wabt = await wabtInit();
const source = readFileSync(watPath(), 'utf8');
const canFuse = relaxedSimdAvailable();

/** Whether this engine runs relaxed SIMD (f32x4.relaxed_madd). */
export const relaxedSimd: boolean = canFuse;

/** Whether the default kernels use fused multiply-add (relaxed SIMD); false under INVARX_WASM_STRICT=1. */
export const fusedMadd: boolean = canFuse && process.env.INVARX_WASM_STRICT !== '1';

const modules = new Map<boolean, WasmModule>([[fusedMadd, compile(wabt, source, fusedMadd)]]);

/**
 * The compiled kernels (they import env.memory: a shared memory). `fused` picks the
 * relaxed-SIMD build or the unfused one; default: `fusedMadd`. Fused is only there when
 * the engine has relaxed SIMD.
 */
export function kernelsModule(fused = fusedMadd): WasmModule {
  const f = fused && canFuse;
  let m = modules.get(f);
  if (!m) {
    m = compile(wabt, source, f);
    modules.set(f, m);
  }
  return m;
}

/** The exports of kernels.wat (pointers are byte offsets into the memory). */
export interface KernelExports {
  pack_w(w: number, ldw: number, N: number, K: number, kcMax: number, wp: number): void;
  pack_wt(src: number, lds: number, N: number, K: number, kcMax: number, wp: number): void;
  matmul_t(x: number, wp: number, y: number, r0: number, r1: number, K: number, N: number, kcMax: number, beta: number, scratch: number): void;
  dot_t(x: number, w: number, ldw: number, y: number, n: number, K: number, N: number, beta: number): void;
  matmul_xt(xt: number, w: number, ldw: number, yt: number, K: number, kcMax: number, beta: number, j0: number, j1: number): void;
  qdq(w: number, out: number, rows: number, cols: number, group: number, g0: number, g1: number, maxq: number, ratios: number, nratios: number, f16: number, codes: number, codeRatios: number): void;
  softmax_causal(att: number, T: number, S: number, past: number, scale: number): void;
  silu_mul(a: number, g: number, n: number): void;
  exp_f64(x: number): number;
  draw_weights(l: number, V: number, T: number, w: number): number;
  draw_rows(logits: number, V: number, temps: number, us: number, out: number, w: number, r0: number, r1: number): void;
  hess_row(x: number, ld: number, t0: number, t1: number, f: number, d: number, a: number, b0: number, nb: number, acc: number): void;
  hess_col(x: number, ld: number, t0: number, t1: number, f: number, d: number, b: number, a0: number, na: number, acc: number): void;
  gemm_add(C: number, ldc: number, A: number, ai: number, ak: number, B: number, bj: number, bk: number, j0: number, i0: number, i1: number, k0: number, k1: number): void;
}

export function instantiate(module: WasmModule, memory: WasmMemory): KernelExports {
  const inst = new WA.Instance(module, { env: { memory } });
  return inst.exports as unknown as KernelExports;
}
