/**
 * The slice of the WebAssembly JS API the kernels use, typed here: the project's
 * tsconfig has no DOM lib and @types/node does not declare WebAssembly. Declared
 * locally rather than globally so it cannot clash with a lib added later.
 */
export interface WasmModule {
  readonly __wasmModule?: never;
}

export interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
  grow(pages: number): number;
}

interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (desc: { initial: number; maximum: number; shared: true }) => WasmMemory;
  validate(bytes: Uint8Array): boolean;
}

export const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
