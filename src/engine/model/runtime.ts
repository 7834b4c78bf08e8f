/**
 * ONNX Runtime Web, set up once: the WebGPU build (which also carries the WASM CPU provider) in browsers,
 * the plain WASM build in Node (package.json "imports": the WebGPU build's giant asyncify functions keep
 * V8's optimising compiler busy for tens of seconds there), backend detection, and session creation with
 * the KV cache kept on the GPU.
 */
import * as ort from '#onnxruntime';
import { TensorType } from '../onnx/model.ts';
import { ProtoWriter } from '../onnx/proto.ts';
import { encodeNode, encodeTensorValueInfo } from '../onnx/surgery.ts';

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
  if (deviceLoss !== undefined) return { webgpu: false, shaderF16: false };
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

/** The GPU device ONNX Runtime ran on went away (destroyed, driver reset, GPU unplugged): WebGPU cannot be used again in this page. */
export class DeviceLostError extends Error {
  override name = 'DeviceLostError';
}

interface GpuDeviceLike {
  lost: Promise<{ reason?: string; message?: string }>;
}

/** How long a failed WebGPU run waits for the device to report that it was lost, before reporting its own error. */
const LOSS_REPORT_WAIT_MS = 1000;

/** Why ORT's WebGPU device was lost, once it has been; a promise that settles then, for runs that would otherwise wait forever. */
let deviceLoss: string | undefined;
let deviceLost: Promise<never> | undefined;

/** ONNX Runtime creates its one GPUDevice with the first WebGPU session and never replaces it. */
async function watchDeviceLoss(): Promise<void> {
  if (deviceLost) return;
  const device = (await ort.env.webgpu.device) as unknown as GpuDeviceLike | undefined;
  if (!device?.lost) return;
  deviceLost = device.lost.then((info) => {
    deviceLoss = [info.reason, info.message].filter(Boolean).join(': ') || 'unknown reason';
    throw lostError();
  });
  deviceLost.catch(() => undefined);
}

/** Work stopped because the GPU was lost, and the model now runs on WASM instead: the same request can be sent again. */
export class BackendSwitchedError extends Error {
  override name = 'BackendSwitchedError';
}

const lostError = () =>
  new DeviceLostError(`the WebGPU device was lost (${deviceLoss}); WebGPU cannot be used again until the page is reloaded`);

/**
 * session.run, except that on WebGPU a lost device turns into a DeviceLostError: before the run, when the
 * run fails, or when the device goes away while the run waits for the GPU (it might never finish then).
 */
export async function runSession(
  session: ort.InferenceSession,
  backend: Backend,
  feeds: ort.InferenceSession.FeedsType,
  fetches: string[],
): Promise<ort.InferenceSession.ReturnType> {
  if (backend !== 'webgpu') return session.run(feeds, fetches);
  if (deviceLoss !== undefined) throw lostError();
  try {
    return await (deviceLost ? Promise.race([session.run(feeds, fetches), deviceLost]) : session.run(feeds, fetches));
  } catch (error) {
    // A destroyed device fails the run first ("buffer was unmapped…") and reports its loss a moment later.
    if (deviceLoss === undefined && deviceLost) {
      await Promise.race([deviceLost.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, LOSS_REPORT_WAIT_MS))]);
    }
    throw deviceLoss !== undefined ? lostError() : error;
  }
}

let warmedUp: Promise<string | undefined> | undefined;

/**
 * Starts ONNX Runtime's WASM module with a one-node graph. The first session of a page compiles and starts it:
 * about 6 s of the 8 s that loading the 1.3 MB story model takes in headless Chromium on 2 cores. The engine
 * worker calls this when it starts, so that this happens while the visitor reads the page and picks a model.
 * Resolves to why it failed, if it did: the first model load then meets the same problem and reports it.
 */
export function warmUpRuntime(): Promise<string | undefined> {
  warmedUp ??= (async () => {
    configureOnce();
    const session = await ort.InferenceSession.create(identityGraph(), { executionProviders: ['wasm'], logSeverityLevel: 3 });
    await session.release();
    return undefined;
  })().catch((error: unknown) => (error as Error)?.message ?? String(error));
  return warmedUp;
}

/** An ONNX model computing y = Identity(x) on one float: the smallest graph a session accepts. */
function identityGraph(): Uint8Array {
  return new ProtoWriter()
    .int(1, 8) // ir_version
    .message(8, (opset) => opset.string(1, '').int(2, 13))
    .message(7, (graph) => graph
      .bytes(1, encodeNode('Identity', 'warm-up', ['x'], ['y']))
      .string(2, 'warm-up')
      .bytes(11, encodeTensorValueInfo('x', TensorType.FLOAT, [1]))
      .bytes(12, encodeTensorValueInfo('y', TensorType.FLOAT, [1])))
    .finish();
}

export async function createSession(files: SessionFiles, backend: Backend, gpuOutputs: string[]): Promise<ort.InferenceSession> {
  await warmedUp; // one start of the runtime at a time
  configureOnce();
  if (backend === 'webgpu' && deviceLoss !== undefined) throw lostError();
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [backend],
    externalData: files.externalData,
    graphOptimizationLevel: 'all',
    // Errors only: on WebGPU, ORT warns (through console.error) that shape ops run on the CPU, which is by design.
    logSeverityLevel: 3,
  };
  if (backend === 'webgpu') {
    options.preferredOutputLocation = Object.fromEntries(gpuOutputs.map((name) => [name, 'gpu-buffer' as const]));
  }
  const session = await ort.InferenceSession.create(files.graph, options);
  if (backend === 'webgpu') await watchDeviceLoss();
  return session;
}
