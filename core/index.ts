// Public surface of core/ (each module adds its line).
export * from './errors';
export * from './rng';
export * from './ops';
export * from './forward';
export * from './model/types';
export * from './model/llama2c';
export * from './model/load';
export * from './model/safetensors';
export * from './model/hf';
export * from './export';
export * from './quant/rtn';
export * from './quant/gptq';
export * from './quant/model';
export * from './invariance';
export * from './tokenizer';
export * from './metrics';
export * from './data';
