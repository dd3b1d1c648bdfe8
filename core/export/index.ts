// Public surface of core/export: packed GPTQ checkpoints and full-precision exports.
export * from './pack';
export * from './gptq';
export * from './fp';
