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
 * With spec.gptqAsym every GPTQ aims at the asymmetric target (core/quant/asymmetric.ts):
 * the FP model's activations under the transformed block (on the block's FP inputs,
 * BlockData.xf) are kept beside the quantized ones, and a move recomputes them, and G, in
 * the heads or units it touches, as it does the quantized ones and the Hessians.
 *
 * On a ggml format (spec.format) every GPTQ is the format's (core/quant/gptqFormat.ts,
 * with the clip search when spec.clip), and the codes kept for export are the packed rows.
 */
import { ffnActivation } from '../core/forward';
import { ffnInput } from '../core/forwardRows';
import type { Block, F32, LinearName } from '../core/model/types';
import { asymmetricMap, asymmetricTargets, crossGramRows, deviationT, gatherRows, inputFactor, type InputFactor } from '../core/quant/asymmetric';
import { gptqFactor, gptqQuantizeRows, type GptqFactor, type GptqResult } from '../core/quant/gptq';
import { gptqFormatRows, type FormatGptqResult } from '../core/quant/gptqFormat';
import { hessianRows } from '../core/quant/hessian';
import { attnInput, attnResidual, context, headProjection, qkv, scatterHeads } from './attnSide';
import { commitUnits, QKV_LINEARS, refineOptions, setRows, specFormat, type BaseQuantizer, type CodeSink, type QkvName, type SearchSpec } from './blockQuant';
import type { BlockSetting, BlockState, Caches, F64, GptqAttnCaches, GptqFfnCaches } from './blockState';
import { addFfnOutput, unitActs } from './ffnSide';
import { temp32, tempCopy } from './temps';

/** The fake-quantized weights of a GPTQ result, its codes (int grid) or packed rows (ggml format) left in `codes` under `name`. */
function keepCodes(name: LinearName, r: GptqResult | FormatGptqResult, codes?: CodeSink): F32 {
  if (codes) codes[name] = 'qz' in r ? r.qz : r;
  return r.deq;
}

export class GptqBase implements BaseQuantizer {
  readonly method = 'gptq';
  /** The share of the asymmetric correction (core/quant/asymmetric.ts); 0: plain GPTQ. */
  private readonly alpha: number;

  constructor(private s: BlockSetting) {
    this.alpha = (s.spec as SearchSpec).gptqAsym ?? 0;
    if (this.alpha !== 0 && !s.data.xf) throw new Error('asymmetric GPTQ needs the block\'s inputs in the FP model (BlockData.xf)');
  }

  /** GPTQ of the rows `rowSet` (all when omitted) of w [·, cols] on the run's grid, from the factor of their input Hessian. */
  private gptqRows(w: F32, cols: number, factor: GptqFactor, rowSet?: ArrayLike<number>): GptqResult | FormatGptqResult {
    const { spec, ops } = this.s;
    const fmt = specFormat(spec);
    return fmt ? gptqFormatRows(w, cols, factor, fmt, { clip: spec.clip === true, ops }, rowSet) : gptqQuantizeRows(w, cols, factor, spec, refineOptions(spec as SearchSpec, ops), rowSet);
  }

  /** GPTQ of the rows `rowSet` (all when omitted) of w, aimed at their asymmetric targets when the map Mᵀ is given. */
  private gptqTo(w: F32, cols: number, factor: GptqFactor, MT: F32 | undefined, rowSet?: ArrayLike<number>): GptqResult | FormatGptqResult {
    if (!MT) return this.gptqRows(w, cols, factor, rowSet);
    return this.gptqRows(asymmetricTargets(w, cols, MT, this.alpha, this.s.ops, rowSet), cols, factor);
  }

  /** GPTQ's factor of the Hessian H [cols, cols] (in act order when the spec says so), keeping H⁻¹ for the asymmetric map. */
  private factor(H: F64, cols: number): GptqFactor {
    return gptqFactor(H, cols, { ops: this.s.ops, actOrder: (this.s.spec as SearchSpec).gptqActOrder, keepInverse: this.alpha !== 0 });
  }

  /** The factor of inputs xq [N, cols] and, asymmetric, the map from their FP counterparts xf. */
  private input(xq: F32, xf: F32 | undefined, cols: number): InputFactor {
    const { N, data, ops } = this.s;
    return inputFactor(xq, this.alpha ? xf : undefined, N, cols, data.seqStarts, { ops, actOrder: (this.s.spec as SearchSpec).gptqActOrder });
  }

  /** norm(x_f): the FP model's input of wq/wk/wv under `b`. */
  private fpAttnInput(b: Block): F32 {
    return attnInput(this.s.cfg, b, this.s.data.xf!, this.s.N);
  }

  /**
   * The FP model's attention context under `b` [N, qDim]: all heads, or (into `ctx`, the
   * previous one) the q heads `heads` only, with the bits of all heads.
   */
  private fpContext(b: Block, heads: Int32Array | null, ctx?: F32): F32 {
    const { cfg, N, data, ops } = this.s;
    const { headDim: hd, nHeads, nKvHeads } = cfg;
    const xaF = this.fpAttnInput(b);
    const out = ctx ?? new Float32Array(N * nHeads * hd);
    if (!heads) {
      context(cfg, qkv(cfg, b, xaF, data.seqStarts, ops), data.seqStarts, null, ops, out);
      return out;
    }
    const G = nHeads / nKvHeads;
    const kvHeads = Int32Array.from(new Set(Array.from(heads, (h) => Math.floor(h / G)))).sort();
    const a = { q: new Float32Array(N * nHeads * hd), k: new Float32Array(N * nKvHeads * hd), v: new Float32Array(N * nKvHeads * hd) };
    scatterHeads(a.q, headProjection(cfg, b.wq, b.bq, heads, xaF, data.seqStarts, true, ops), heads, nHeads, hd);
    scatterHeads(a.k, headProjection(cfg, b.wk, b.bk, kvHeads, xaF, data.seqStarts, true, ops), kvHeads, nKvHeads, hd);
    scatterHeads(a.v, headProjection(cfg, b.wv, b.bv, kvHeads, xaF, data.seqStarts, false, ops), kvHeads, nKvHeads, hd);
    context(cfg, a, data.seqStarts, heads, ops, out);
    return out;
  }

  qkv(b: Block, xa: F32, codes?: CodeSink): { w: Pick<Block, QkvName>; factorA: GptqFactor; asymA?: F32 } {
    const d = this.s.cfg.dim;
    const f = this.input(xa, this.alpha ? this.fpAttnInput(b) : undefined, d);
    const w: Partial<Block> = {};
    for (const name of QKV_LINEARS) w[name] = keepCodes(name, this.gptqTo(b[name], d, f.factor, f.MT), codes);
    return { w: { wq: w.wq!, wk: w.wk!, wv: w.wv! }, factorA: f.factor, asymA: f.MT };
  }

  qkvRows(b: Block, name: QkvName, rows: Int32Array, w: F32, c: Caches): void {
    const d = this.s.cfg.dim;
    setRows(w, this.gptqTo(b[name], d, c.gptq!.factorA, c.gptq!.asymA, rows).deq, rows, d);
  }

  wo(b: Block, ctx: F32, codes?: CodeSink): Pick<GptqAttnCaches, 'ctxT' | 'Hctx' | 'ctxF' | 'Gctx'> & { wo: F32 } {
    const { cfg } = this.s;
    const qDim = cfg.nHeads * cfg.headDim;
    const ctxF = this.alpha ? this.fpContext(b, null) : undefined;
    const f = this.input(ctx, ctxF, qDim);
    return { wo: keepCodes('wo', this.gptqTo(b.wo, qDim, f.factor, f.MT), codes), ctxT: f.qT, Hctx: f.factor.H, ctxF, Gctx: f.G };
  }

  woAfter(b: Block, ctx: F32, heads: Int32Array, c: Caches): Pick<GptqAttnCaches, 'ctxT' | 'Hctx' | 'ctxF' | 'Gctx'> & { wo: F32 } {
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
    const factor = this.factor(Hctx, qDim);
    if (!this.alpha) return { wo: this.gptqRows(b.wo, qDim, factor).deq, ctxT, Hctx };
    // so do the FP context's and G's (the FP heads recomputed with the same bits as all of them)
    const ctxF = this.fpContext(b, heads, g.ctxF!.slice());
    const Gctx = g.Gctx!.slice();
    crossGramRows(Gctx, deviationT(ctxF, ctxT, N, qDim), ctxT, N, qDim, cols, ops);
    const MT = asymmetricMap(Gctx, factor.inv!, qDim, ops);
    return { wo: this.gptqTo(b.wo, qDim, factor, MT).deq, ctxT, Hctx, ctxF, Gctx };
  }

  /** GPTQ of w1/w3 (from xn) then w2 (from the activation of the quantized w1/w3, returned too). */
  ffn(b: Block, xn: F32, _keep: Block | undefined, codes?: CodeSink, attn?: Partial<GptqAttnCaches>): { w: Partial<Block>; act: F32; cache: GptqFfnCaches } {
    const { cfg, N, ops } = this.s;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    let xnF: F32 | undefined;
    if (this.alpha) {
      if (!attn?.ctxF) throw new Error('asymmetric GPTQ: the FFN needs the attention side\'s FP context');
      xnF = ffnInput(cfg, b, attnResidual(cfg, this.s.data.xf!, attn.ctxF, b.wo, b.bo, ops), N);
    }
    const fx = this.input(xn, xnF, d);
    const q: Block = { ...b };
    q.w1 = keepCodes('w1', this.gptqTo(b.w1, d, fx.factor, fx.MT), codes);
    if (b.w3) q.w3 = keepCodes('w3', this.gptqTo(b.w3, d, fx.factor, fx.MT), codes);
    const act = ffnActivation(cfg, q, xn, N, ops);
    const actF = xnF && ffnActivation(cfg, b, xnF, N, ops);
    const fa = this.input(act, actF, H);
    q.w2 = keepCodes('w2', this.gptqTo(b.w2, H, fa.factor, fa.MT), codes);
    const cache: GptqFfnCaches = { factorX: fx.factor, actT: fa.qT, Ha: fa.factor.H };
    if (xnF) Object.assign(cache, { asymX: fx.MT, xnF, actF, Gact: fa.G });
    return { w: b.w3 ? { w1: q.w1, w3: q.w3, w2: q.w2 } : { w1: q.w1, w2: q.w2 }, act, cache };
  }

  ffnMove(st: BlockState, b: Block, units: ArrayLike<number>, commit: boolean): number {
    const { cfg, N, data, ops } = this.s;
    const d = cfg.dim;
    const H = cfg.hiddenDim;
    const { q, c } = st;
    const g = c.gptq!;
    const S = Int32Array.from(units).sort();
    const k = S.length;
    // Rows S of w1/w3 from the factor of their (unchanged) input Hessian.
    const w1q = this.gptqTo(b.w1, d, g.factorX, g.asymX, S).deq;
    const w3q = b.w3 ? this.gptqTo(b.w3, d, g.factorX, g.asymX, S).deq : undefined;
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
    const factor = this.factor(Ha, H);
    let actF: F32 | undefined;
    let Gact: F32 | undefined;
    let MT: F32 | undefined;
    if (this.alpha) {
      // the FP model's units S under b, and G in their rows and columns
      actF = tempCopy('gptqFfnMove.actF', g.actF!);
      const fpS = temp32('gptqFfnMove.fpS', N * k);
      unitActs(this.s, fpS, g.xnF!, gatherRows(b.w1, d, S), b.w3 && gatherRows(b.w3, d, S), b.b1, S);
      for (let n = 0; n < N; n++) for (let u = 0; u < k; u++) actF[n * H + S[u]] = fpS[n * k + u];
      Gact = tempCopy('gptqFfnMove.Gact', g.Gact!);
      crossGramRows(Gact, deviationT(actF, actT, N, H), actT, N, H, S, ops);
      MT = asymmetricMap(Gact, factor.inv!, H, ops);
    }
    const w2q = this.gptqTo(b.w2, H, factor, MT).deq;
    const err = tempCopy('gptqFfnMove.err', g.errBase);
    const loss = addFfnOutput(this.s, err, act, w2q);
    if (commit) {
      c.err.set(err);
      c.act.set(act);
      g.actT.set(actT);
      g.Ha.set(Ha);
      if (actF) g.actF!.set(actF);
      if (Gact) g.Gact!.set(Gact);
      commitUnits(cfg, q, b, S, w1q, w3q);
      q.w2.set(w2q);
      st.loss = loss;
    }
    return loss;
  }
}
