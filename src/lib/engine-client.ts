/** The page's handle on the engine worker: a comlink proxy with the engine's own types. */
import * as Comlink from 'comlink';
import type { TillerEngine } from '../engine/api.ts';

export type EngineClient = Comlink.Remote<TillerEngine>;

export function startEngine(): EngineClient {
  const worker = new Worker(new URL('../../workers/engine.worker.ts', import.meta.url), { type: 'module' });
  return Comlink.wrap<TillerEngine>(worker);
}

export const callback = Comlink.proxy;
