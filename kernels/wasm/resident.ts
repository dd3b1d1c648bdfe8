/**
 * Pinned weights of a wasm backend (Ops.pin): the arrays a caller pinned, and the copies of
 * them made in the arena's resident region on first use — per shape and kernel, since the
 * same array multiplied as [N, K] goes to dot_t as plain rows and to matmul_t packed into
 * panels for its kcMax. A copy lives until the last pin on its array is released; the
 * caller promises the array does not change meanwhile (the copy is never compared with it).
 * Past `cap` bytes no copy is made: the weight is copied per call, as if unpinned.
 */
import type { F32 } from '../../core/model/types';
import type { Pinned } from '../../core/ops';
import type { Arena } from './arena';
import { PinTable } from '../pinTable';

/** 'rows': a plain copy, for dot_t; a number: packed for matmul_t with that kcMax. */
export type Form = 'rows' | number;

interface Copy {
  K: number;
  N: number;
  form: Form;
  /** Byte offset in the arena. */
  p: number;
  floats: number;
}

export class ResidentWeights {
  private readonly table = new PinTable<Copy>((copies) => {
    for (const c of copies) {
      this.arena.freeResident(c.p, c.floats);
      this.bytes -= 4 * c.floats;
    }
  });
  /** Bytes the copies take. */
  bytes = 0;

  constructor(private readonly arena: Arena, private readonly cap: number) {}

  pin(weights: readonly F32[]): Pinned {
    return this.table.pin(weights);
  }

  /** Byte offset of w's copy as [N, K] in `form`, or null when there is none. */
  lookup(w: F32, K: number, N: number, form: Form): number | null {
    const copies = this.table.copies(w);
    for (const c of copies ?? []) if (c.K === K && c.N === N && c.form === form) return c.p;
    return null;
  }

  /**
   * When w is pinned and its copy fits under the cap: reserves the copy, has `fill` write it
   * at its byte offset, and returns the offset; else null (nothing reserved).
   */
  add(w: F32, K: number, N: number, form: Form, fill: (p: number) => void): number | null {
    const copies = this.table.copies(w);
    if (!copies) return null;
    const floats = (form === 'rows' ? N : (N + 7) & ~7) * K;
    if (this.bytes + 4 * floats > this.cap) return null;
    const p = this.arena.allocResident(floats);
    if (p < 0) return null;
    fill(p);
    copies.push({ K, N, form, p, floats });
    this.bytes += 4 * floats;
    return p;
  }
}
