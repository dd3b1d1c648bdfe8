/**
 * The GPTQ base quantizer of the search (core/quant/gptq.ts), true-sequential within the
 * block as core/quant/model.ts quantizes the report's base rows: wq/wk/wv from norm(x), wo
 * from the context of the quantized q/k/v, w1/w3 from norm(h) after the quantized
 * attention, w2 from the activation of the quantized w1/w3, all on the block's inputs in
 * the quantized model.
 *
 * What makes moves cheap while staying bit for bit the full evaluation: GPTQ quantizes the
 * rows of a linear independently given its input's Hessian, so rows a move touches are
 * redone from the cached factor of that Hessian (wq/wk/wv: norm(x), unchanged by attention
 * moves; w1/w3: norm(h), unchanged by FFN moves). The Hessians of wo's and w2's inputs
 * change only in the rows and columns of the heads or units a move touches, and are updated
 * there from the cached transposed activation; wo and w2 are then quantized again whole,
 * as GPTQ's error feedback spreads over all of them. The Hessians are core's
 * (core/quant/hessian.ts, float64, one calibration sequence at a time), the ones the
 * report's base rows use, so the search starts from the report's base model bit for bit.
 *
 * With spec.gptqRefine every GPTQ on the int grid, a move's re-quantized rows included, is
 * followed by that many sweeps of code (and with spec.gptqRefitScales, scale) refinement
 * (core/quant/refine.ts, rows independent as GPTQ's), so incremental scoring stays the full
 * evaluation bit for bit.
 *
 * On a ggml format (spec.format) every GPTQ is the format's (core/quant/gptqFormat.ts,
 * with the clip search when spec.clip), and the codes kept for export are the packed rows.
 */
import { ffnActivation } from '../core/forward';
import type { Block, F32, LinearName } from '../core/model/types';
import { gptqFactor, gptqQuantizeRows, type GptqFactor, type GptqResult } from '../core/quant/gptq';
import { gptqFormatRows, type FormatGptqResult } from '../core/quant/gptqFormat';
import { hessian, hessianRows, hessianT, transpose } from '../core/quant/hessian';
import { commitUnits, QKV_LINEARS, refineOptions, setRows, specFormat, type BaseQuantizer, type CodeSink, type QkvName, type SearchSpec } from './blockQuant';
import type { BlockSetting, BlockState, Caches, F64, GptqFfnCaches } from './blockState';
import { addFfnOutput, unitActs } from './ffnSide';
import { temp32, tempCopy } from './temps';

/** The fake-quantized weights of a GPTQ result, its codes (int grid) or packed rows (ggml format) left in `codes` under `name`. */
function keepCodes(name: LinearName, r: GptqResult | FormatGptqResult, codes?: CodeSink): F32 {
  if (codes) codes[name] = 'qz' in r ? r.qz : r;
  return r.deq;
}

export class GptqBase implements BaseQuantizer {
  readonly method = 'gptq';

  constructor(private s: BlockSetting) {}

  /** GPTQ of the rows `rowSet` (all when omitted) of w [·, cols] on the run's grid, from the factor of their input Hessian. */
  private gptqRows(w: F32, cols: number, factor: GptqFactor, rowSet?: ArrayLike<number>): GptqResult | FormatGptqResult {
    const { spec, ops } = this.s;
    const fmt = specFormat(spec);
    return fmt ? gptqFormatRows(w, cols, factor, fmt, { clip: spec.clip === true, ops }, rowSet) : gptqQuantizeRows(w, cols, factor, spec, refineOptions(spec as SearchSpec, ops), rowSet);
  }

  /** GPTQ's factor of the input Hessian H [cols, cols] (in act order when the spec says so). */
  private factor(H: F64, cols: number): GptqFactor {
    return gptqFactor(H, cols, { ops: this.s.ops, actOrder: (this.s.spec as SearchSpec).gptqActOrder });
  }

  /** GPTQ of all of w [·, cols] given its input Hessian. */
  private gptq(w: F32, cols: number, H: F64): GptqResult | FormatGptqResult {
    return this.gptqRows(w, cols, this.factor(H, cols));
  }

  qkv(b: Block, xa: F32, codes?: CodeSink): { w: Pick<Block, QkvName>; factorA: GptqFactor } {
    const { N, spec, data, ops } = this.s;
    const d = this.s.cfg.dim;
    const factorA = this.factor(hessian(xa, N, d, data.seqStarts, ops), d);
    const w: Partial<Block> = {};
    for (const name of QKV_LINEARS) w[name] = keepCodes(name, this.gptqRows(b[name], d, factorA), codes);
    return { w: { wq: w.wq!, wk: w.wk!, wv: w.wv! }, factorA };
  }

  qkvRows(b: Block, name: QkvName, rows: Int32Array, w: F32, c: Caches): void {
    const d = this.s.cfg.dim;
    setRows(w, this.gptqRows(b[name], d, c.gptq!.factorA, rows).deq, rows, d);
  }

  wo(b: Block, ctx: F32, codes?: CodeSink): { wo: F32; ctxT: F32; Hctx: F64 } {
    const { cfg, N, data, ops } = this.s;
    const qDim = cfg.nHeads * cfg.headDim;
    const ctxT = transpose(ctx, N, qDim);
    const Hctx = hessianT(ctxT, N, qDim, data.seqStarts, ops);
    return { wo: this.quantizeWo(b, Hctx, codes), ctxT, Hctx };
  }

  woAfter(b: Block, ctx: F32, heads: Int32Array, c: Caches): { wo: F32; ctxT: F32; Hctx: F64 } {
    const { cfg, N, data, ops } = this.s;
    const hd = cfg.headDim;
    const qDim = cfg.nHeads * hd;
    const g = c.gptq!;
    // wo's Hessian changes in the rows and columns of the recomputed heads' context.
    const cols = Array.from(heads).flatMap((h) => Array.from({ length: hd }, (_, i) => h * hd + i));
    const ctxT = g.ctxT.slice();
    for (const col of cols) for (let n = 0; n < N; n++) ctxT[col * N + n] = ctx[n * qDim + col];
    const Hctx = g.Hctx.slice();
    hessianRows(Hctx, ctxT, N, qDim, cols, data.seqStarts, ops);
    return { wo: this.quantizeWo(b, Hctx), ctxT, Hctx };
  }

  private quantizeWo(b: Block, Hctx: F64, codes?: CodeSink): F32 {
    const { cfg } = this.s;
    return keepCodes('wo', this.gptq(b.wo, cfg.nHeads * cfg.headDim, Hctx), codes);
  }

  /** GPTQ of w1/w3 (from xn) then w2 (from the activation of the quantized w1/w3, returned too). */
  ffn(b: Block, xn: F32, _keep: Block | undefined, codes?: CodeSink): { w: Partial<Block>; act: F32; cache: GptqFfnCaches } {
    const { cfg, N, spec, ops, data } = this.s;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const factorX = this.factor(hessian(xn, N, d, data.seqStarts, ops), d);
    const q: Block = { ...b };
    q.w1 = keepCodes('w1', this.gptqRows(b.w1, d, factorX), codes);
    if (b.w3) q.w3 = keepCodes('w3', this.gptqRows(b.w3, d, factorX), codes);
    const act = ffnActivation(cfg, q, xn, N, ops);
    const actT = transpose(act, N, H);
    const Ha = hessianT(actT, N, H, data.seqStarts, ops);
    q.w2 = keepCodes('w2', this.gptq(b.w2, H, Ha), codes);
    return { w: b.w3 ? { w1: q.w1, w3: q.w3, w2: q.w2 } : { w1: q.w1, w2: q.w2 }, act, cache: { factorX, actT, Ha } };
  }

  ffnMove(st: BlockState, b: Block, units: ArrayLike<number>, commit: boolean): number {
    const { cfg, N, spec, data, ops } = this.s;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const { q, c } = st;
    const g = c.gptq!;
    const S = Int32Array.from(units).sort();
    const k = S.length;
    // Rows S of w1/w3 from the factor of their (unchanged) input Hessian.
    const w1q = this.gptqRows(b.w1, d, g.factorX, S).deq;
    const w3q = b.w3 ? this.gptqRows(b.w3, d, g.factorX, S).deq : undefined;
    const actS = temp32('gptqFfnMove.actS', N * k);
    unitActs(this.s, actS, c.xn, w1q, w3q, b.b1, S);
    // The activation with units S replaced, as [N, H] and transposed [H, N].
    const act = tempCopy('gptqFfnMove.act', c.act);
    const actT = tempCopy('gptqFfnMove.actT', g.actT);
    for (let n = 0; n < N; n++) {
      for (let u = 0; u < k; u++) {
        const v = actS[n * k + u];
        act[n * H + S[u]] = v;
        actT[S[u] * N + n] = v;
      }
    }
    const Ha = tempCopy('gptqFfnMove.Ha', g.Ha);
    hessianRows(Ha, actT, N, H, S, data.seqStarts, ops);
    const w2q = this.gptq(b.w2, H, Ha).deq;
    const err = tempCopy('gptqFfnMove.err', g.errBase);
    const loss = addFfnOutput(this.s, err, act, w2q);
    if (commit) {
      c.err.set(err);
      c.act.set(act);
      g.actT.set(actT);
      g.Ha.set(Ha);
      commitUnits(cfg, q, b, S, w1q, w3q);
      q.w2.set(w2q);
      st.loss = loss;
    }
    return loss;
  }
}
