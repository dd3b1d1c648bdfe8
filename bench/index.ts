/**
 * `npm run bench` (node dist/bench.js [module …]): runs the listed bench modules in order;
 * each prints one JSON line per figure (see bench/emit.ts). Add a module by appending it
 * to BENCHES; pass names on the command line to run only those.
 */
import type { BenchModule } from './emit';
import { candidatesBench } from './candidates';
import { exportBench } from './export';
import { factorBench } from './factor';
import { matmulBench } from './matmul';
import { normPassBench } from './normPass';
import { ablationBench, qualityBench } from './quality';
import { resumeBench } from './resume';
import { sampleBench } from './sample';
import { scaleBench } from './scale';
import { searchBench } from './search';
import { sweepBench } from './sweep';

const BENCHES: BenchModule[] = [matmulBench, searchBench, qualityBench, ablationBench, sampleBench, scaleBench, exportBench, sweepBench, resumeBench, candidatesBench, factorBench, normPassBench];

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !BENCHES.some((b) => b.name === w));
if (unknown.length > 0) {
  process.stderr.write(`unknown bench ${unknown.join(', ')} (have: ${BENCHES.map((b) => b.name).join(', ')})\n`);
  process.exit(2);
}
for (const b of BENCHES) {
  if (wanted.length === 0 ? !b.byNameOnly : wanted.includes(b.name)) await b.run();
}
// helper threads of the wasm backends are unref'd; nothing else keeps the process up
