/**
 * Input files — models, tokenizers, token and text files — must be regular files (or, for
 * models, directories of them): reading a FIFO blocks the reading thread until someone
 * writes to it, possibly forever, and a device such as /dev/zero never ends. Files are
 * opened non-blocking and checked on the descriptor itself (no window for a swap between
 * check and open), and read up to the size they had when opened.
 */
import { constants as bufferConstants } from 'node:buffer';
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { fail } from './errors';

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isDirectory()) return 'a directory';
  return 'not a regular file';
}

function errnoOf(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return typeof err?.code === 'string' ? err.code : String(err?.message ?? e);
}

/**
 * What `path` is, after following symlinks: 'file' or (when `directory` is allowed) 'dir'.
 * Anything else — FIFO, device, socket — fails with `code`: "<what> <path> is a FIFO …".
 */
export function inputKind(path: string, what: string, code: string, opts: { directory?: boolean } = {}): 'file' | 'dir' {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    return fail(code, `cannot read ${what} ${path}: ${errnoOf(e)}`);
  }
  if (st.isFile()) return 'file';
  if (st.isDirectory() && opts.directory) return 'dir';
  return fail(code, `${what} ${path} is ${kindOf(st)}; expected a regular file${opts.directory ? ' or a directory' : ''}`);
}

/** Opens a regular file for reading; fails with `code` for anything else, without blocking on a FIFO. */
export function openRegularFile(path: string, what: string, code: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    return fail(code, `cannot read ${what} ${path}: ${errnoOf(e)}`);
  }
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch (e) {
    closeSync(fd);
    return fail(code, `cannot read ${what} ${path}: ${errnoOf(e)}`);
  }
  if (!st.isFile()) {
    closeSync(fd);
    return fail(code, `${what} ${path} is ${kindOf(st)}; expected a regular file`);
  }
  return { fd, size: st.size };
}

/** The bytes of a regular file: at most its size when opened (a file that grows meanwhile is not followed). */
export function readRegularFile(path: string, what: string, code: string): Buffer {
  const { fd, size } = openRegularFile(path, what, code);
  try {
    if (size > bufferConstants.MAX_LENGTH) fail(code, `${what} ${path} is ${size} bytes, too large to read`);
    const buf = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      let n: number;
      try {
        n = readSync(fd, buf, off, Math.min(size - off, 1 << 30), off);
      } catch (e) {
        return fail(code, `cannot read ${what} ${path}: ${errnoOf(e)}`);
      }
      if (n === 0) break; // shrank since it was opened
      off += n;
    }
    return off === size ? buf : buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

/**
 * Where JSON text first goes wrong — line, column (1-based) and what was expected there —
 * or null if it is valid. For error messages that must name the place without quoting the
 * file (JSON.parse's own messages quote it). Iterative: nesting depth costs no stack.
 */
export function jsonSyntaxError(text: string): { line: number; column: number; expected: string } | null {
  let i = 0;
  const stack: string[] = [];
  const at = (expected: string) => {
    let line = 1;
    let lineStart = 0;
    for (let k = 0; k < i && k < text.length; k++) {
      if (text.charCodeAt(k) === 10) {
        line++;
        lineStart = k + 1;
      }
    }
    return { line, column: i - lineStart + 1, expected };
  };
  const skipWs = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  /** At a '"': moves past the string; false (with i at the fault) if it is not a valid one. */
  const string = (): boolean => {
    for (i++; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        i++;
        if (text[i] === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) return false;
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? 'x')) return false;
      }
    }
    return false;
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  let state: 'value' | 'valueOrEnd' | 'key' | 'keyOrEnd' | 'after' = 'value';
  for (;;) {
    skipWs();
    const c = text[i];
    if (state === 'valueOrEnd' && c === ']') {
      i++;
      stack.pop();
      state = 'after';
      continue;
    }
    if (state === 'keyOrEnd' && c === '}') {
      i++;
      stack.pop();
      state = 'after';
      continue;
    }
    if (state === 'value' || state === 'valueOrEnd') {
      if (c === '[' || c === '{') {
        i++;
        stack.push(c);
        state = c === '[' ? 'valueOrEnd' : 'keyOrEnd';
        continue;
      }
      if (c === '"') {
        if (!string()) return at('a valid, closed string');
        state = 'after';
        continue;
      }
      NUMBER.lastIndex = i;
      const lit = ['true', 'false', 'null'].find((w) => text.startsWith(w, i));
      if (NUMBER.test(text)) i = NUMBER.lastIndex;
      else if (lit) i += lit.length;
      else return at(state === 'valueOrEnd' ? "a value or ']'" : 'a value (number, string, array, object, true, false or null)');
      state = 'after';
      continue;
    }
    if (state === 'key' || state === 'keyOrEnd') {
      if (c !== '"') return at(state === 'keyOrEnd' ? "a property name in double quotes or '}'" : 'a property name in double quotes');
      if (!string()) return at('a valid, closed string');
      skipWs();
      if (text[i] !== ':') return at("':'");
      i++;
      state = 'value';
      continue;
    }
    // after a value
    const top = stack[stack.length - 1];
    if (top === undefined) return i >= text.length ? null : at('the end of the input');
    const close = top === '[' ? ']' : '}';
    if (c === ',') {
      i++;
      state = top === '[' ? 'value' : 'key';
    } else if (c === close) {
      i++;
      stack.pop();
    } else {
      return at(`',' or '${close}'`);
    }
  }
}

/** "not valid JSON: line 3, column 7: expected …", without quoting the text. */
export function describeJsonError(text: string): string {
  const e = jsonSyntaxError(text);
  return e ? `not valid JSON: line ${e.line}, column ${e.column}: expected ${e.expected}` : 'not valid JSON';
}

/** A JSON file (regular files only); its syntax errors name the place, never the content. */
export function readJsonFile(path: string, what: string, code: string): unknown {
  const text = readRegularFile(path, what, code).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return fail(code, `${path}: ${describeJsonError(text)}`);
  }
}
