/**
 * Checking transforms against a config, and constructors that only ever return valid ones.
 * applyTransform re-checks, because transforms also arrive from checkpoints on disk.
 */
import { fail } from '../errors';
import type { ModelConfig } from '../model/types';
import type {
  AttnHeadPerm, AttnQkRot, AttnQkScale, AttnVoRot, AttnVoScale, FfnPerm, FfnRot, FfnScale, NormScale, Transform,
} from './types';

function bad(t: { kind: string }, msg: string): never {
  fail('bad-transform', `${t.kind}: ${msg}`);
}

/** Index arrays must hold integers; converting 1.5 or 2**40 to Int32Array would silently change it. */
function indices(kind: string, field: string, xs: ArrayLike<number>): Int32Array {
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (!Number.isInteger(x) || x < -0x80000000 || x > 0x7fffffff) {
      fail('bad-transform', `${kind}: ${field}[${i}] = ${x} is not an index`);
    }
  }
  return Int32Array.from(xs);
}

/** Every entry of xs in [0, n) and no entry twice. */
function checkDistinct(t: { kind: string }, field: string, xs: ArrayLike<number>, n: number): void {
  const seen = new Uint8Array(n);
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (!Number.isInteger(x) || x < 0 || x >= n) bad(t, `${field}[${i}] = ${x} is outside [0, ${n})`);
    if (seen[x]) bad(t, `${field} lists ${x} twice`);
    seen[x] = 1;
  }
}

/** `from` is a rearrangement of `units` (which are distinct and in [0, n)). */
function checkPerm(t: { kind: string }, units: ArrayLike<number>, from: ArrayLike<number>, n: number, names: [string, string]): void {
  if (units.length !== from.length) bad(t, `${names[0]} has ${units.length} entries but ${names[1]} has ${from.length}`);
  checkDistinct(t, names[0], units, n);
  const state = new Uint8Array(n); // 1: listed in units, 2: also used as a source
  for (let i = 0; i < units.length; i++) state[units[i]] = 1;
  for (let i = 0; i < from.length; i++) {
    const x = from[i];
    if (!Number.isInteger(x) || x < 0 || x >= n) bad(t, `${names[1]}[${i}] = ${x} is outside [0, ${n})`);
    if (state[x] === 0) bad(t, `${names[1]}[${i}] = ${x} is not one of the permuted ${names[0]}`);
    if (state[x] === 2) bad(t, `${names[1]} lists ${x} twice`);
    state[x] = 2;
  }
}

function checkScales(t: { kind: string }, scales: ArrayLike<number>, count: number): void {
  if (scales.length !== count) bad(t, `${count} indices but ${scales.length} scales`);
  for (let i = 0; i < scales.length; i++) {
    const s = scales[i];
    if (!(Number.isFinite(s) && s > 0)) bad(t, `scale ${s} at ${i} is not a finite positive number`);
  }
}

function checkAngles(t: { kind: string }, angles: ArrayLike<number>, count: number): void {
  if (angles.length !== count) bad(t, `${count} pairs but ${angles.length} angles`);
  for (let i = 0; i < angles.length; i++) {
    if (!Number.isFinite(angles[i])) bad(t, `angle ${angles[i]} at ${i} is not finite`);
  }
}

function checkPairs(t: { kind: string }, pairs: ArrayLike<number>, n: number): void {
  if (pairs.length % 2 !== 0) bad(t, `pairs has odd length ${pairs.length}`);
  // Disjoint pairs commute, which is what makes "same pairs, −θ" the inverse.
  checkDistinct(t, 'pairs', pairs, n);
}

function checkHeads(t: { kind: string }, cfg: ModelConfig): void {
  if (!(cfg.nKvHeads >= 1 && cfg.nHeads % cfg.nKvHeads === 0)) {
    bad(t, `nHeads ${cfg.nHeads} is not a multiple of nKvHeads ${cfg.nKvHeads}`);
  }
}

/**
 * The fields each kind must have, and the typed array each must be: index fields Int32Array,
 * value fields Float64Array (plain arrays are accepted too, e.g. from JSON). Anything else
 * is refused because it is usually a decoding mistake — msgpackr without `moreTypes: true`
 * turns typed arrays into byte Buffers, which would otherwise be read as indices.
 */
const FIELDS: Record<Transform['kind'], [string, typeof Int32Array | typeof Float64Array][]> = {
  'ffn-perm': [['units', Int32Array], ['from', Int32Array]],
  'ffn-scale': [['units', Int32Array], ['scales', Float64Array]],
  'ffn-rot': [['pairs', Int32Array], ['angles', Float64Array]],
  'attn-head-perm': [['groups', Int32Array], ['from', Int32Array]],
  'attn-vo-rot': [['pairs', Int32Array], ['angles', Float64Array]],
  'attn-vo-scale': [['channels', Int32Array], ['scales', Float64Array]],
  'attn-qk-rot': [['ropePairs', Int32Array], ['angles', Float64Array]],
  'attn-qk-scale': [['ropePairs', Int32Array], ['scales', Float64Array]],
  'norm-scale': [['channels', Int32Array], ['scales', Float64Array]],
};

/** Throws InvarxError('bad-transform') unless t is a well-formed transform for cfg. */
export function validateTransform(cfg: ModelConfig, t: Transform): void {
  const fields = typeof t === 'object' && t !== null && Object.hasOwn(FIELDS, t.kind) ? FIELDS[t.kind] : undefined;
  if (!fields) fail('bad-transform', `unknown transform kind ${JSON.stringify((t as { kind?: unknown } | null)?.kind)}`);
  for (const [f, type] of fields) {
    const v = (t as unknown as Record<string, unknown>)[f];
    if (!(v instanceof type || Array.isArray(v))) bad(t, `field ${f} is missing or not a ${type.name}`);
  }
  const H = cfg.hiddenDim;
  const hd = cfg.headDim;
  switch (t.kind) {
    case 'ffn-perm':
      return checkPerm(t, t.units, t.from, H, ['units', 'from']);
    case 'ffn-scale':
      checkDistinct(t, 'units', t.units, H);
      return checkScales(t, t.scales, t.units.length);
    case 'ffn-rot':
      checkPairs(t, t.pairs, H);
      return checkAngles(t, t.angles, t.pairs.length / 2);
    case 'attn-head-perm':
      checkHeads(t, cfg);
      return checkPerm(t, t.groups, t.from, cfg.nKvHeads, ['groups', 'from']);
    case 'attn-vo-rot':
      checkHeads(t, cfg);
      checkPairs(t, t.pairs, cfg.nKvHeads * hd);
      for (let i = 0; i < t.pairs.length; i += 2) {
        if (Math.floor(t.pairs[i] / hd) !== Math.floor(t.pairs[i + 1] / hd)) {
          bad(t, `channels ${t.pairs[i]} and ${t.pairs[i + 1]} are in different kv heads`);
        }
      }
      return checkAngles(t, t.angles, t.pairs.length / 2);
    case 'attn-vo-scale':
      checkHeads(t, cfg);
      checkDistinct(t, 'channels', t.channels, cfg.nKvHeads * hd);
      return checkScales(t, t.scales, t.channels.length);
    case 'attn-qk-rot':
    case 'attn-qk-scale':
      checkHeads(t, cfg);
      if (hd % 2 !== 0) bad(t, `headDim ${hd} is odd, so it has no RoPE pairs`);
      checkDistinct(t, 'ropePairs', t.ropePairs, (cfg.nKvHeads * hd) / 2);
      if (t.kind === 'attn-qk-rot') return checkAngles(t, t.angles, t.ropePairs.length);
      return checkScales(t, t.scales, t.ropePairs.length);
    case 'norm-scale':
      if (t.site !== 'attn' && t.site !== 'ffn') bad(t, `site must be 'attn' or 'ffn', not ${JSON.stringify(t.site)}`);
      checkDistinct(t, 'channels', t.channels, cfg.dim);
      return checkScales(t, t.scales, t.channels.length);
    default:
      fail('bad-transform', `unknown transform kind ${JSON.stringify((t as { kind: unknown }).kind)}`);
  }
}

function identity(n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

function checked<T extends Transform>(cfg: ModelConfig, t: T): T {
  validateTransform(cfg, t);
  return t;
}

/**
 * FFN unit permutation: new unit units[k] = old unit from[k]. Without `units`, `from` is a
 * full permutation of all hiddenDim units (new unit j = old unit from[j]).
 */
export function ffnPerm(cfg: ModelConfig, from: ArrayLike<number>, units?: ArrayLike<number>): FfnPerm {
  const k = 'ffn-perm';
  return checked(cfg, { kind: k, units: units ? indices(k, 'units', units) : identity(from.length), from: indices(k, 'from', from) });
}

export function ffnScale(cfg: ModelConfig, units: ArrayLike<number>, scales: ArrayLike<number>): FfnScale {
  return checked(cfg, { kind: 'ffn-scale', units: indices('ffn-scale', 'units', units), scales: Float64Array.from(scales) });
}

/** pairs = [a0, b0, a1, b1, …] (all units distinct), one angle per pair. */
export function ffnRot(cfg: ModelConfig, pairs: ArrayLike<number>, angles: ArrayLike<number>): FfnRot {
  return checked(cfg, { kind: 'ffn-rot', pairs: indices('ffn-rot', 'pairs', pairs), angles: Float64Array.from(angles) });
}

/** New KV group groups[k] = old group from[k]; without `groups`, `from` permutes all nKvHeads groups. */
export function attnHeadPerm(cfg: ModelConfig, from: ArrayLike<number>, groups?: ArrayLike<number>): AttnHeadPerm {
  const k = 'attn-head-perm';
  return checked(cfg, { kind: k, groups: groups ? indices(k, 'groups', groups) : identity(from.length), from: indices(k, 'from', from) });
}

/** pairs = [a0, b0, …] of KV channels (g*headDim + d), both of a pair in one kv head. */
export function attnVoRot(cfg: ModelConfig, pairs: ArrayLike<number>, angles: ArrayLike<number>): AttnVoRot {
  return checked(cfg, { kind: 'attn-vo-rot', pairs: indices('attn-vo-rot', 'pairs', pairs), angles: Float64Array.from(angles) });
}

export function attnVoScale(cfg: ModelConfig, channels: ArrayLike<number>, scales: ArrayLike<number>): AttnVoScale {
  return checked(cfg, { kind: 'attn-vo-scale', channels: indices('attn-vo-scale', 'channels', channels), scales: Float64Array.from(scales) });
}

/** ropePairs: g*(headDim/2) + i for RoPE pair i of kv head g; one angle each. */
export function attnQkRot(cfg: ModelConfig, ropePairs: ArrayLike<number>, angles: ArrayLike<number>): AttnQkRot {
  return checked(cfg, { kind: 'attn-qk-rot', ropePairs: indices('attn-qk-rot', 'ropePairs', ropePairs), angles: Float64Array.from(angles) });
}

export function attnQkScale(cfg: ModelConfig, ropePairs: ArrayLike<number>, scales: ArrayLike<number>): AttnQkScale {
  return checked(cfg, { kind: 'attn-qk-scale', ropePairs: indices('attn-qk-scale', 'ropePairs', ropePairs), scales: Float64Array.from(scales) });
}

/** Input-channel scale through the norm of `site`: norm channel × s, reader columns ÷ s. */
export function normScale(cfg: ModelConfig, site: NormScale['site'], channels: ArrayLike<number>, scales: ArrayLike<number>): NormScale {
  return checked(cfg, { kind: 'norm-scale', site, channels: indices('norm-scale', 'channels', channels), scales: Float64Array.from(scales) });
}
