import { afterEach, describe, expect, it, vi } from 'vitest';
import { backendNames, chooseBackend, getBackend, probeGpu, registerBackend } from '../../kernels';
import { createJsBackend } from '../../kernels/js';

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

  it('obeys INVARX_BACKEND', async () => {
    vi.stubEnv('INVARX_BACKEND', 'js');
    const fresh = await import('../../kernels/registry');
    expect(fresh.chooseBackend()).toEqual({ name: 'js', reason: 'INVARX_BACKEND' });
    expect(fresh.getBackend().name).toBe('js');
  });
});
