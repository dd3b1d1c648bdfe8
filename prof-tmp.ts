import pino from 'pino';
import { createSearchJob } from './search/run';
import { DEFAULT_CONFIG } from './search/config';
const log = pino({ level: 'info' }, pino.destination(2));
const t0 = performance.now();
const job = await createSearchJob({ ...DEFAULT_CONFIG, model: process.argv[2], calibTokens: '/tmp/tok2.json', evalTokens: '/tmp/tok2.json', bits: 4, group: 128, steps: Number(process.argv[3] ?? 12), patience: 0, workers: 2 } as any,
  { log, tuning: { calibSeqs: 2, validSeqs: 1, evalSeqs: 2, blockSteps: 3, scaleInit: process.argv[4] === 'init' }, onPhase: (p) => console.error('phase', p, ((performance.now() - t0) / 1000).toFixed(1)) });
while (!job.done) {
  const s = performance.now();
  await job.step();
  console.error('step', job.progress().step, ((performance.now() - s) / 1000).toFixed(2), 's');
}
console.error('total', ((performance.now() - t0) / 1000).toFixed(1));
await job.close();
