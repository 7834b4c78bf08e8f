/** The page's handle on the engine worker: a comlink proxy with the engine's own types. */
import * as Comlink from 'comlink';
import type { TillerEngine } from '../engine/api.ts';

export type EngineClient = Comlink.Remote<TillerEngine>;

export const ENGINE_WORKER_NAME = 'tiller-engine';

export function startEngine(): EngineClient {
  // Named, to tell it from ONNX Runtime's thread workers (same script) in developer tools and tests.
  const worker = new Worker(new URL('../../workers/engine.worker.ts', import.meta.url), { type: 'module', name: ENGINE_WORKER_NAME });
  return Comlink.wrap<TillerEngine>(worker);
}

export const callback = Comlink.proxy;
