import { Worker } from 'node:worker_threads';
import nodeEndpoint from 'comlink/dist/umd/node-adapter.js';
import { describe, expect, it } from 'vitest';
import { CANCEL_GRACE_MS, EngineRestartedError, type EngineWorker, startEngine } from '../../src/lib/engine-client.ts';

/**
 * A stand-in engine in a real thread: `load` spins forever in a synchronous loop (as a hostile template did
 * before it had a budget), `generate` waits politely for a slow answer, and every fresh thread says hello.
 */
const ENGINE_SOURCE = `
  const Comlink = require('comlink');
  const nodeEndpoint = require('comlink/dist/umd/node-adapter.js');
  const { parentPort } = require('node:worker_threads');
  const started = Date.now();
  Comlink.expose({
    load() { for (;;) {} },
    generate(jobId, ms) { return new Promise((resolve) => setTimeout(() => resolve('done'), ms)); },
    info() { return { started }; },
    cancel() {},
  }, nodeEndpoint(parentPort));
`;

function threadWorker(threads: Worker[]): () => EngineWorker {
  return () => {
    const thread = new Worker(ENGINE_SOURCE, { eval: true });
    threads.push(thread);
    const endpoint = nodeEndpoint(thread);
    return Object.assign(endpoint, { terminate: () => void thread.terminate() });
  };
}

describe('the page restarts an engine that ignores Cancel (issue 14)', () => {
  it('terminates a wedged worker a few seconds after Cancel, fails its calls, says so and answers again', async () => {
    const threads: Worker[] = [];
    const messages: string[] = [];
    const engine = startEngine((message) => messages.push(message), threadWorker(threads));
    const first = (await engine.info()) as unknown as { started: number };
    const wedgedExit = new Promise((resolve) => threads[0].once('exit', resolve));
    const load = engine.load('load', { model: 'x' } as never);
    const failed = load.catch((error: Error) => error);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const cancelledAt = performance.now();
    void engine.cancel('load');
    const error = await failed;
    const waited = performance.now() - cancelledAt;
    expect(error).toBeInstanceOf(EngineRestartedError);
    expect((error as Error).message).toMatch(/"load" ignored Cancel for 4 s\), so it was restarted: load the model again/);
    expect(waited).toBeGreaterThanOrEqual(CANCEL_GRACE_MS - 50);
    expect(waited).toBeLessThan(CANCEL_GRACE_MS + 2000);
    expect(messages).toEqual([(error as Error).message]);
    expect(threads).toHaveLength(2);
    // The wedged thread is gone, and the fresh one answers.
    await wedgedExit;
    const second = (await engine.info()) as unknown as { started: number };
    expect(second.started).toBeGreaterThan(first.started);
    threads[1].terminate();
  }, 20_000);

  it('leaves a worker alone that answers while a cancelled job finishes late', async () => {
    const threads: Worker[] = [];
    const messages: string[] = [];
    const engine = startEngine((message) => messages.push(message), threadWorker(threads));
    const slow = engine.generate('live', (CANCEL_GRACE_MS + 1000) as never);
    void engine.cancel('live');
    expect(await slow).toBe('done');
    expect(messages).toEqual([]);
    expect(threads).toHaveLength(1);
    threads[0].terminate();
  }, 20_000);
});
