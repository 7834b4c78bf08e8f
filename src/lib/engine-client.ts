/**
 * The page's handle on the engine worker: a comlink proxy with the engine's own types, and a way out of a
 * wedged worker. Work in the worker runs on one thread; a job stuck in a synchronous loop (a hostile file the
 * engine has no budget for yet) hears no Cancel. When a cancelled job is still running after
 * CANCEL_GRACE_MS and the worker does not even answer a ping, the worker is terminated and a fresh one
 * started: its calls fail with EngineRestartedError, and `onRestart` says what happened.
 */
import * as Comlink from 'comlink';
import type { TillerEngine } from '../engine/api.ts';
import { ENGINE_WORKER_NAME } from './engine-worker-name.ts';

export type EngineClient = Comlink.Remote<TillerEngine>;
export type EngineWorker = Comlink.Endpoint & { terminate(): void };

export { ENGINE_WORKER_NAME };
export const CANCEL_GRACE_MS = 4000;

export class EngineRestartedError extends Error {
  override name = 'EngineRestartedError';
}

function engineWorker(): EngineWorker {
  // Named, to tell it from ONNX Runtime's thread workers (same script) in developer tools and tests.
  return new Worker(new URL('../../workers/engine.worker.ts', import.meta.url), { type: 'module', name: ENGINE_WORKER_NAME });
}

export function startEngine(onRestart: (message: string) => void = () => undefined, createWorker: () => EngineWorker = engineWorker): EngineClient {
  let worker = createWorker();
  let remote = Comlink.wrap<TillerEngine>(worker);
  /** Calls in flight under each job id, by the function that fails them if the worker is replaced. */
  const inFlight = new Map<string, Set<(error: Error) => void>>();
  /** Listeners a fresh worker must be given again. */
  const backendListeners: Parameters<TillerEngine['onBackendChange']>[0][] = [];

  const restart = (jobId: string) => {
    worker.terminate();
    worker = createWorker();
    remote = Comlink.wrap<TillerEngine>(worker);
    for (const listener of backendListeners) void remote.onBackendChange(listener);
    const message = `The engine stopped answering ("${jobId}" ignored Cancel for ${CANCEL_GRACE_MS / 1000} s), so it was restarted: load the model again.`;
    const error = new EngineRestartedError(message);
    const failing = [...inFlight.values()].flatMap((calls) => [...calls]);
    inFlight.clear();
    for (const fail of failing) fail(error);
    onRestart(message);
  };

  const cancel = (jobId: string) => {
    const ping = remote.cancel(jobId);
    const calls = inFlight.get(jobId);
    if (!calls?.size) return ping;
    const cancelled = [...calls];
    let answered = false;
    void ping.then(() => (answered = true), () => undefined);
    setTimeout(() => {
      // A job still running behind a worker that answers (a queued job, a slow download) is not wedged.
      if (!answered && cancelled.some((call) => inFlight.get(jobId)?.has(call))) restart(jobId);
    }, CANCEL_GRACE_MS);
    return ping;
  };

  const call = (method: keyof TillerEngine, args: unknown[]): Promise<unknown> => {
    if (method === 'cancel') return cancel(args[0] as string);
    if (method === 'onBackendChange') backendListeners.push(args[0] as (typeof backendListeners)[number]);
    // Every method but tokenize takes its job id first.
    const jobId = method !== 'tokenize' && typeof args[0] === 'string' ? args[0] : '';
    return new Promise((resolve, reject) => {
      const calls = inFlight.get(jobId) ?? new Set();
      inFlight.set(jobId, calls.add(reject));
      const settle = () => calls.delete(reject);
      (remote[method] as (...a: unknown[]) => Promise<unknown>)(...args).then(resolve, reject).finally(settle);
    });
  };

  // `then` stays undefined, so the client is never mistaken for a promise.
  return new Proxy({} as EngineClient, {
    get: (_target, method) => (typeof method === 'string' && method !== 'then' ? (...args: unknown[]) => call(method as keyof TillerEngine, args) : undefined),
  });
}

export const callback = Comlink.proxy;
