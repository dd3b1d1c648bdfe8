import { afterEach, describe, expect, it, vi } from 'vitest';
import { backendNames, chooseBackend, freshBackend, getBackend, probeGpu, registerBackend } from '../../kernels';
import os from 'node:os';
import { isMainThread } from 'node:worker_threads';
import { createJsBackend } from '../../kernels/js';
import type { WasmBackend } from '../../kernels/wasm/backend';

describe('backend registry', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.resetModules();
  });

  it('registers js, wasm and gpu and gives one instance per name', () => {
    expect(backendNames().slice(0, 3)).toEqual(['js', 'wasm', 'gpu']);
    expect(getBackend('wasm')).toBe(getBackend('wasm'));
    expect(getBackend('js').name).toBe('js');
    expect(() => getBackend('cuda')).toThrow(/unknown backend 'cuda'/);
  });

  it('a fresh backend is a new instance of the chosen kind, with the same results, disposed by its caller', () => {
    const shared = getBackend(chooseBackend().name);
    const fresh = freshBackend();
    expect(fresh).not.toBe(shared);
    expect(fresh.name).toBe(shared.name);
    const x = Float32Array.from({ length: 8 * 16 }, (_, i) => Math.sin(i));
    const w = Float32Array.from({ length: 4 * 16 }, (_, i) => Math.cos(i));
    const [a, b] = [new Float32Array(32), new Float32Array(32)];
    shared.matmulT(a, x, w, 8, 16, 4);
    fresh.matmulT(b, x, w, 8, 16, 4);
    expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    fresh.dispose?.();
  });

  it('takes new registrations', () => {
    registerBackend('js-copy', () => ({ ...createJsBackend(), name: 'js-copy' }));
    expect(getBackend('js-copy').name).toBe('js-copy');
  });

  it('chooses wasm unless a hardware GL renderer is found, and says why', () => {
    const probe = probeGpu();
    const c = chooseBackend();
    if (!probe.available || probe.software) {
      expect(c.name).toBe('wasm');
      expect(c.reason).toMatch(probe.available ? /software/ : /no GPU/);
    } else {
      expect(['wasm', 'gpu']).toContain(c.name);
      expect(c.measured).toBeDefined();
    }
    if (probe.available) {
      expect(probe.mode).not.toBe('CPUKernel'); // gpu.js's silent CPU fallback never counts
      expect(probe.renderer).toBeTruthy();
    }
  });

  it('the registered wasm backend: INVARX_WASM_THREADS threads, else one per core on the main thread', async () => {
    vi.stubEnv('INVARX_WASM_THREADS', '3');
    const fresh = await import('../../kernels/registry');
    expect(fresh.defaultWasmThreads()).toBe(3);
    const wasm = fresh.getBackend('wasm') as WasmBackend;
    expect(wasm.threads).toBe(3);
    wasm.dispose?.();
    vi.stubEnv('INVARX_WASM_THREADS', '0');
    expect(() => fresh.defaultWasmThreads()).toThrow(/INVARX_WASM_THREADS/);
    vi.stubEnv('INVARX_WASM_THREADS', '');
    expect(fresh.defaultWasmThreads()).toBe(isMainThread ? os.availableParallelism() : 1);
  });

  it('obeys INVARX_BACKEND', async () => {
    vi.stubEnv('INVARX_BACKEND', 'js');
    const fresh = await import('../../kernels/registry');
    expect(fresh.chooseBackend()).toEqual({ name: 'js', reason: 'INVARX_BACKEND' });
    expect(fresh.getBackend().name).toBe('js');
  });
});
