/**
 * The `submit` verb's arguments, checked for shape before anything is stored.
 *
 * Only shape is checked here (types, known keys, absolute paths): whether the values make
 * a possible run (bits in range, a readable model, token ids inside the vocabulary) is the
 * search's to say when the job starts, and a job it refuses ends `failed` with the search's
 * one-line message. (`invarx submit` also runs the search's validation first, so a CLI user
 * hears about an impossible setting at once.)
 *
 * Paths must be absolute: the daemon's working directory is not the client's, so the
 * client resolves them. They are only ever read (model, tokenizer, token files).
 */
import { isAbsolute } from 'node:path';
import { DEFAULT_CONFIG, DEFAULT_TUNING, type SearchTuning } from '../search/config';
import type { RunConfig } from '../search/contract';
import { runConfigFromOptions } from './commands/runOptions';
import { ProtocolError, describeValue } from './protocol';

const NUMBERS = ['bits', 'group', 'steps', 'timeBudget', 'seed', 'candidates', 'workers', 'patience', 'memoryBudget'] as const;
const PATHS = ['model', 'tokenizer', 'calibTokens', 'evalTokens', 'calibText', 'evalText'] as const;
const KEYS = new Set<string>([...NUMBERS, ...PATHS, 'base', 'invariances', 'format', 'embed']);
const MAX_PATH = 4096;

function bad(message: string): never {
  throw new ProtocolError('bad-args', message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v) && !(v instanceof Map);
}

/** An absolute path without NULs (a NUL would truncate the path in the OS call). */
export function absolutePath(name: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') bad(`${name} must be a non-empty string`);
  if (v.length > MAX_PATH) bad(`${name} is longer than ${MAX_PATH} characters`);
  if (v.includes('\0')) bad(`${name} contains a NUL character`);
  if (!isAbsolute(v)) bad(`${name} must be an absolute path (clients resolve paths; the daemon's working directory is not theirs), got ${describeValue(v)}`);
  return v;
}

export interface SubmitArgs {
  config: RunConfig;
  tuning?: Partial<SearchTuning>;
}

export function parseSubmitArgs(args: Record<string, unknown>): SubmitArgs {
  for (const k of Object.keys(args)) if (k !== 'config' && k !== 'tuning') bad(`unknown submit argument ${describeValue(k)}`);
  const c = args.config;
  if (!isRecord(c)) bad('submit needs args.config, a map with the options of `invarx run`');
  for (const k of Object.keys(c)) if (!KEYS.has(k)) bad(`unknown config key ${describeValue(k)}`);
  const config: Record<string, unknown> = { ...DEFAULT_CONFIG };
  config.model = absolutePath('config.model', c.model);
  for (const k of PATHS.filter((p) => p !== 'model')) {
    if (c[k] !== undefined && c[k] !== null) config[k] = absolutePath(`config.${k}`, c[k]);
  }
  for (const k of NUMBERS) {
    const v = c[k];
    if (v === undefined) {
      if (k === 'bits' || k === 'group') bad(`config.${k} is required`);
      continue;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) bad(`config.${k} must be a finite number`);
    config[k] = v;
  }
  if (c.base !== undefined) {
    if (typeof c.base !== 'string' || c.base.length > 32) bad('config.base must be a short string');
    config.base = c.base;
  }
  for (const k of ['format', 'embed'] as const) {
    if (c[k] === undefined) continue;
    if (typeof c[k] !== 'string' || (c[k] as string).length > 32) bad(`config.${k} must be a short string`);
    config[k] = c[k];
  }
  if (c.invariances !== undefined) {
    const inv = c.invariances;
    if (!Array.isArray(inv) || inv.length > 64 || !inv.every((x) => typeof x === 'string' && x.length <= 64)) {
      bad('config.invariances must be an array of invariance names');
    }
    config.invariances = [...inv];
  }
  const out: SubmitArgs = { config: canonicalRunConfig(config as unknown as RunConfig) };
  if (args.tuning !== undefined && args.tuning !== null) out.tuning = parseTuning(args.tuning);
  return out;
}

/** Search tuning overrides (advanced; part of the job's identity like the config). */
export function parseTuning(t: unknown): Partial<SearchTuning> {
  if (!isRecord(t)) bad('tuning must be a map');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(t)) {
    if (!Object.hasOwn(DEFAULT_TUNING, k)) bad(`unknown tuning key ${describeValue(k)} (known: ${Object.keys(DEFAULT_TUNING).join(', ')})`);
    const want = typeof DEFAULT_TUNING[k as keyof SearchTuning];
    if (typeof v !== want || (typeof v === 'number' && !Number.isFinite(v))) bad(`tuning.${k} must be a ${want === 'number' ? 'finite number' : want}`);
    out[k] = v;
  }
  return out as Partial<SearchTuning>;
}

/**
 * The config with the keys, in the order and with the explicit `undefined`s, of the one
 * `invarx run` builds from its options. The export's transforms.msgpack packs the config
 * object as it is, so this is what makes a daemon job's export byte-identical to
 * `invarx run --out` with the same options (and the same after a restart, when the config
 * comes back from config.json without its undefined keys). The order is read off
 * runConfigFromOptions itself, so it follows any change there.
 */
export function canonicalRunConfig(c: RunConfig): RunConfig {
  const probe = runConfigFromOptions({
    model: 'm', bits: '3', group: '32', base: 'rtn', steps: '1', timeBudget: '0', seed: '1',
    invariances: 'all', candidates: '1', workers: '1', patience: '0',
  });
  const src = c as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(probe)) out[k] = src[k];
  for (const k of Object.keys(src)) if (!(k in out)) out[k] = src[k];
  return out as unknown as RunConfig;
}

/** The `export` verb's options: `force` (boolean) and the client's `umask` (default 022). */
export function exportOptions(args: Record<string, unknown>): { force: boolean; umask: number } {
  const { force = false, umask = 0o022 } = args;
  if (typeof force !== 'boolean') bad('force must be true or false');
  if (typeof umask !== 'number' || !Number.isInteger(umask) || umask < 0 || umask > 0o777) bad('umask must be an integer from 0 to 0o777');
  return { force, umask };
}
