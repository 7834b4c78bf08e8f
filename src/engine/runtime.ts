/**
 * ONNX Runtime Web, set up once: the WebGPU build (which also carries the WASM CPU provider) in browsers,
 * the plain WASM build in Node (package.json "imports": the WebGPU build's giant asyncify functions keep
 * V8's optimising compiler busy for tens of seconds there), backend detection, and session creation with
 * the KV cache kept on the GPU.
 */
import * as ort from '#onnxruntime';

export { ort };
export type Backend = 'webgpu' | 'wasm';

export interface BackendSupport {
  webgpu: boolean;
  /** fp16 shaders: without them fp16 graphs silently return zeros on WebGPU. */
  shaderF16: boolean;
  adapter?: string;
}

interface GpuLike {
  requestAdapter(): Promise<{ features: { has(name: string): boolean }; info?: { vendor?: string; architecture?: string; description?: string } } | null>;
}

export async function detectBackends(): Promise<BackendSupport> {
  const gpu = (globalThis as { navigator?: { gpu?: GpuLike } }).navigator?.gpu;
  if (!gpu) return { webgpu: false, shaderF16: false };
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter) return { webgpu: false, shaderF16: false };
    const info = adapter.info;
    return {
      webgpu: true,
      shaderF16: adapter.features.has('shader-f16'),
      adapter: [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(' ') || undefined,
    };
  } catch {
    return { webgpu: false, shaderF16: false };
  }
}

interface NodeProcessLike {
  versions?: { node?: string };
  getBuiltinModule?: (name: 'node:v8') => { setFlagsFromString(flags: string): void } | undefined;
}

let configured = false;

function configureOnce(): void {
  if (configured) return;
  configured = true;
  // The engine already runs in its own worker; ORT's proxy worker would only add a hop.
  ort.env.wasm.proxy = false;
  const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
  const cores = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
  const nodeProcess = (globalThis as { process?: NodeProcessLike }).process;
  const isNode = typeof nodeProcess?.versions?.node === 'string';
  // ORT's wasm has megabyte-sized functions: V8's optimising tier spends tens of seconds of a core on them
  // (slowing every run on two cores and holding up process exit), so Node stays on the baseline compiler.
  if (isNode) nodeProcess?.getBuiltinModule?.('node:v8')?.setFlagsFromString('--liftoff-only');
  // Threads need SharedArrayBuffer: cross-origin isolation in browsers; Node always has it.
  ort.env.wasm.numThreads = isolated || isNode ? Math.max(1, Math.min(4, cores)) : 1;
}

export interface SessionFiles {
  graph: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
}

export async function createSession(files: SessionFiles, backend: Backend, gpuOutputs: string[]): Promise<ort.InferenceSession> {
  configureOnce();
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [backend],
    externalData: files.externalData,
    graphOptimizationLevel: 'all',
  };
  if (backend === 'webgpu') {
    options.preferredOutputLocation = Object.fromEntries(gpuOutputs.map((name) => [name, 'gpu-buffer' as const]));
  }
  return ort.InferenceSession.create(files.graph, options);
}
