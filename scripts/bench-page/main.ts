/** The bench page: each request runs in a fresh worker (as the app's engine does), which is dropped afterwards to free its memory. */
import * as Comlink from 'comlink';
import { detectBackends } from '../../src/engine/model/runtime.ts';
import type { BenchWorker, PageBenchRequest } from './worker.ts';

export interface BenchPageApi {
  runBench(request: PageBenchRequest): ReturnType<BenchWorker['run']>;
  loadToReady(...args: Parameters<BenchWorker['loadToReady']>): ReturnType<BenchWorker['loadToReady']>;
  backendSupport: typeof detectBackends;
}

/** Runs one call in a fresh worker, dropped afterwards. */
async function inFreshWorker<T>(call: (worker: Comlink.Remote<BenchWorker>) => Promise<T>): Promise<T> {
  const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
  try {
    return await call(Comlink.wrap<BenchWorker>(worker));
  } finally {
    worker.terminate();
  }
}

const api: BenchPageApi = {
  runBench: (request) => inFreshWorker((worker) => worker.run(request)),
  loadToReady: (folder, warmUpFirst) => inFreshWorker((worker) => worker.loadToReady(folder, warmUpFirst)),
  backendSupport: detectBackends,
};
(globalThis as unknown as { tillerBench: BenchPageApi }).tillerBench = api;
