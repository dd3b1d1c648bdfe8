/**
 * The FFN sublayer of one block on its calibration rows, computed unit by unit so that an
 * FFN move can recompute only the hidden units it touches (the counterpart of
 * attnSide.ts). A unit's activation comes from its own rows of w1/w3 with the same float
 * operations as core's ffnActivation, so a unit computed alone has the same bits as in a
 * pass over every unit; the error and loss are accumulated in float64.
 */
import type { Block, F32, ModelConfig } from '../core/model/types';
import { siluMul, type Ops } from '../core/ops';
import type { BlockSetting, F64 } from './blockState';
import { temp32 } from './temps';

/** FFN hidden activation from projections: silu(p1)·p3 (llama) or relu(p1 + b1) (opt), in place in p1. */
function activate(cfg: ModelConfig, ops: Ops, p1: F32, p3: F32 | undefined, b1: F32 | undefined, units: ArrayLike<number>, n: number): void {
  const k = units.length;
  if (cfg.arch === 'llama') {
    // as core's ffnActivation does it, so that a unit's activation has the same bits either way
    siluMul(ops, p1, p3!, n * k);
    return;
  }
  for (let r = 0; r < n; r++) {
    for (let u = 0; u < k; u++) {
      const i = r * k + u;
      const v = p1[i] + (b1 ? b1[units[u]] : 0);
      p1[i] = v > 0 ? v : 0;
    }
  }
}

/** act[N, k] of the given units from their quantized rows w1q/w3q [k, dim] and the FFN input xn [N, dim]. */
export function unitActs(s: BlockSetting, act: F32, xn: F32, w1q: F32, w3q: F32 | undefined, b1: F32 | undefined, units: ArrayLike<number>): void {
  const { cfg, N, ops } = s;
  const k = units.length;
  ops.matmulT(act, xn, w1q, N, cfg.dim, k);
  let p3: F32 | undefined;
  if (cfg.arch === 'llama') {
    p3 = temp32('unitActs.p3', N * k);
    ops.matmulT(p3, xn, w3q!, N, cfg.dim, k);
  }
  activate(cfg, ops, act, p3, b1, units, N);
}

/** The error before w2's contribution: h − y (+ b2), [N, dim] in float64. */
export function errorBeforeW2(s: BlockSetting, q: Block, h: F32): F64 {
  const d = s.cfg.dim;
  const { y } = s.data;
  const err = new Float64Array(s.N * d);
  for (let i = 0; i < s.N * d; i++) err[i] = h[i] - y[i] + (q.b2 ? q.b2[i % d] : 0);
  return err;
}

/** err += act · w2qᵀ (act [N, H], w2q [dim, H]) in place; returns Σ err² in float64. */
export function addFfnOutput(s: BlockSetting, err: F64, act: F32, w2q: F32): number {
  const { cfg, N } = s;
  const d = cfg.dim;
  const out = temp32('addFfnOutput.out', N * d);
  s.ops.matmulT(out, act, w2q, N, cfg.hiddenDim, d);
  let loss = 0;
  for (let i = 0; i < N * d; i++) {
    const e = err[i] + out[i];
    err[i] = e;
    loss += e * e;
  }
  return loss;
}
