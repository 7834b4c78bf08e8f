/** The engine in its own thread: the page talks to it through comlink and never blocks. */
import * as Comlink from 'comlink';
import { type TillerEngine, createEngine } from '../src/engine/api.ts';
import { detectBackends, warmUpRuntime } from '../src/engine/model/runtime.ts';
import { ENGINE_WORKER_NAME } from '../src/lib/engine-worker-name.ts';

/**
 * Callbacks the page passes (progress, tokens) arrive as comlink proxies, each holding a MessagePort on both
 * sides until released: release them when the call they belong to has settled, or every generation leaks one.
 */
function releasingCallbacks(engine: TillerEngine): TillerEngine {
  return new Proxy(engine, {
    get(target, key, receiver) {
      const member = Reflect.get(target, key, receiver);
      if (typeof member !== 'function') return member;
      return (...args: unknown[]) => {
        const result = member.apply(target, args);
        if (result instanceof Promise) {
          const release = () => args.forEach((arg) => typeof arg === 'function' && (arg as Partial<Comlink.ProxyMarked & { [Comlink.releaseProxy]: () => void }>)[Comlink.releaseProxy]?.());
          result.then(release, release);
        }
        return result;
      };
    },
  });
}

Comlink.expose(releasingCallbacks(createEngine()));
// ONNX Runtime's thread workers run this same script (the bundle is inlined here): only the engine warms up,
// and only where WebGPU is absent (the WASM-only laptops of a workshop). With WebGPU, a warmed-up runtime made
// the generation that restarts on WASM after a lost GPU device hang in 2 of 4 runs of reliability test 3.
if ((self as { name?: string }).name === ENGINE_WORKER_NAME) {
  void detectBackends()
    .then(({ webgpu }) => (webgpu ? undefined : warmUpRuntime()))
    .then((problem) => problem && console.warn(`ONNX Runtime did not start ahead of the first model: ${problem}`));
}
