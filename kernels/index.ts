// Public surface of kernels/ (DESIGN §6): one Backend interface, a registry that picks one.
export type { Backend, QuantSpec } from './backend';
export {
  registerBackend, backendNames, getBackend, bestBackend, freshBackend, chooseBackend, defaultWasmThreads,
  type BackendChoice, type BackendFactory,
} from './registry';
export { createJsBackend, quantDequantRef, sqErrRef } from './js';
export { createWasmBackend, type WasmBackend, type WasmBackendOptions } from './wasm/backend';
export { fusedMadd, relaxedSimd } from './wasm/module';
export { createGpuBackend, probeGpu, type GpuProbe } from './gpu';
