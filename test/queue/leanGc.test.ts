import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { collectOnOwnThread } from '../../daemon/queue/leanGc';

// V8 aborts the process on a collector flag it cannot take at run time: this file's own
// process sets them, then collects young and old garbage on its main thread and in a thread.
const CHURN = `
  const keep = [];
  let sum = 0;
  for (let i = 0; i < 3000; i++) {
    keep.push(new Float64Array(1 << 13).fill(i));
    if (keep.length > 64) keep.shift();
    const objs = [];
    for (let j = 0; j < 500; j++) objs.push({ j, s: 'x' + j });
    sum += objs.length + keep[0][0];
  }
  return sum;
`;

describe("the worker's collector settings", () => {
  it('leave V8 collecting, on the main thread and in threads started after them', async () => {
    collectOnOwnThread();
    expect(new Function(CHURN)()).toBeGreaterThan(0);
    const w = new Worker(`require('node:worker_threads').parentPort.postMessage((() => {${CHURN}})())`, { eval: true });
    const [sum] = await once(w, 'message');
    expect(sum).toBeGreaterThan(0);
    await w.terminate();
  });
});
