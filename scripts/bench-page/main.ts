/** The bench page: each request runs in a fresh worker (as the app's engine does), which is dropped afterwards to free its memory. */
import * as Comlink from 'comlink';
import { detectBackends } from '../../src/engine/model/runtime.ts';
import type { BenchWorker, PageBenchRequest } from './worker.ts';

export interface BenchPageApi {
  runBench(request: PageBenchRequest): ReturnType<BenchWorker['run']>;
  backendSupport: typeof detectBackends;
}

const api: BenchPageApi = {
  async runBench(request) {
    const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
    try {
      return await Comlink.wrap<BenchWorker>(worker).run(request);
    } finally {
      worker.terminate();
    }
  },
  backendSupport: detectBackends,
};
(globalThis as unknown as { tillerBench: BenchPageApi }).tillerBench = api;
