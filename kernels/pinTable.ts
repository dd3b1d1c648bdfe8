/**
 * Pinned arrays (Ops.pin) counted by reference, each with the copies a backend made of it;
 * when an array's last pin is released, `drop` gets its copies. The wasm arena's resident
 * copies (kernels/wasm/resident.ts) and the native kernel's packed ones
 * (kernels/native/native.ts) are both kept this way.
 */
import type { F32 } from '../core/model/types';
import type { Pinned } from '../core/ops';

export class PinTable<C> {
  private readonly pins = new Map<F32, { refs: number; copies: C[] }>();

  constructor(private readonly drop: (copies: C[]) => void) {}

  pin(weights: readonly F32[]): Pinned {
    const list = [...new Set(weights)];
    for (const w of list) {
      const e = this.pins.get(w);
      if (e) e.refs++;
      else this.pins.set(w, { refs: 1, copies: [] });
    }
    let live = true;
    return {
      release: () => {
        if (!live) return;
        live = false;
        for (const w of list) {
          const e = this.pins.get(w)!;
          if (--e.refs > 0) continue;
          this.pins.delete(w);
          this.drop(e.copies);
        }
      },
    };
  }

  /** The copies of w while it is pinned (add to the list to keep one), else undefined. */
  copies(w: F32): C[] | undefined {
    return this.pins.get(w)?.copies;
  }
}
