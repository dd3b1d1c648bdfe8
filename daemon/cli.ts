/**
 * `invarx` command line: one entry point; each verb lives in its own module under
 * daemon/commands/ and registers itself here. User mistakes (InvarxError) print one line
 * and exit 1; anything else is a bug and keeps its stack trace.
 */
import { Command } from 'commander';
import { InvarxError } from '../core/errors';
import { register as registerRun } from './commands/run';
import { register as registerGenerate } from './commands/generate';
import { register as registerEval } from './commands/eval';
import { register as registerDaemon } from './commands/daemon';
import { register as registerClient } from './commands/client';
import { register as registerGenModel } from './commands/genModel';
import { register as registerWorker } from './commands/worker';
import { register as registerSweep } from './commands/sweep';
import { register as registerExportGguf } from './commands/exportGguf';

const program = new Command('invarx')
  .description('Better 2-4 bit quantization of transformer LMs by search over model invariances')
  .showHelpAfterError()
  .configureOutput({ outputError: (str, write) => write(str) });

// Each command module: `export function register(program: Command): void`.
const commands: Array<(p: Command) => void> = [registerRun, registerGenerate, registerEval, registerDaemon, registerClient, registerGenModel, registerWorker, registerExportGguf, registerSweep];
for (const register of commands) register(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof InvarxError || e instanceof RangeError) {
    process.stderr.write(`invarx: ${e.message}\n`);
    process.exit(1);
  }
  throw e;
});
