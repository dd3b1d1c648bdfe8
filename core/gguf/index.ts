// Public surface of core/gguf: the GGUF writer and reader and the llama model writer.
export * from './types';
export * from './writer';
export * from './reader';
export * from './llama';
