import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng';
import { CLIP_AUTO, CLIP_RATIOS, numGroups } from '../../core/quant/rtn';
import { blockLinears, linearShape, type LinearName } from '../../core/model/types';
import { createWasmBackend } from '../../kernels/wasm/backend';
import { rtnLinears } from '../../search/baseRtn';
import type { BlockClips } from '../../search/clipMoves';
import { shippedModel } from '../helpers';

const bitsOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe("the search's RTN through the backend's kernel", () => {
  const model = shippedModel();
  const cfg = model.config;
  const ops = createWasmBackend();

  it('gives the bits of core RTN on every linear of every block, with the clip search, fp16 scales and clip codes', () => {
    const rng = Rng.fromSeed(11);
    for (const spec of [{ bits: 3, group: 32, clip: true, f16Scales: true }, { bits: 2, group: 64, clip: false, f16Scales: false }]) {
      for (let l = 0; l < cfg.nLayers; l++) {
        const b = model.blocks[l];
        const clips: BlockClips = {};
        for (const n of blockLinears(cfg)) {
          const [rows, cols] = linearShape(cfg, n);
          const c = new Uint8Array(rows * numGroups(cols, spec.group)).fill(CLIP_AUTO);
          for (let i = 0; i < c.length; i++) if (rng.float() < 0.3) c[i] = Math.floor(rng.float() * CLIP_RATIOS.length);
          clips[n as LinearName] = c;
        }
        for (const withClips of [undefined, clips]) {
          const core = rtnLinears(cfg, b, spec, { clips: withClips });
          const kernel = rtnLinears(cfg, b, spec, { clips: withClips, ops });
          for (const n of blockLinears(cfg)) expect(bitsOf(kernel[n]!).equals(bitsOf(core[n]!)), `block ${l} ${n}`).toBe(true);
        }
      }
    }
  });
});
