/**
 * From a model source to a steerable session: read the config and tokenizer, pick the ONNX variant,
 * fetch the external data files the graph names, analyse, instrument, create the session.
 */
import { type AnalysisHints, type GraphAnalysis, analyseGraph } from '../onnx/analysis.ts';
import { parseModel } from '../onnx/model.ts';
import { instrumentModel } from '../onnx/surgery.ts';
import { type FusionOptions, planFusion } from '../onnx/fusion.ts';
import { type Backend, type ort, createSession, detectBackends } from './runtime.ts';
import { type ModelSource, type ProgressCallback, ModelFileError } from '../sources/source.ts';
import { DTYPES, type Dtype, dtypePreference, needsShaderF16, onnxFileForDtype, pickDtype } from '../sources/variants.ts';
import { type FusionReport, type Instrumentation, type ModelConfig, SteerableModel } from './steerable-model.ts';
import { TextTokenizer } from './tokenizer.ts';
import { decoderConfigOf } from './config.ts';
import { selfCheck } from './self-check.ts';
import { type FusionProbe, compareProbes, probeLogits } from './fusion-check.ts';

type InferenceSession = ort.InferenceSession;

export interface LoadOptions {
  dtype?: Dtype;
  /** 'auto' picks WebGPU where there is an adapter, WASM otherwise. */
  backend?: Backend | 'auto';
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Load even when the memory estimate exceeds the device's budget. */
  allowLargeModel?: boolean;
  /** Bytes this device can spend on a model; default: from navigator.deviceMemory (browsers), none in Node. */
  memoryBudget?: number;
  /** Also instrument every layer for directional ablation (off by default: it costs a little per step). */
  ablation?: boolean;
  /** Called with config.json and the chosen dtype before the graph is downloaded; may throw to stop the load. */
  beforeDownload?: (config: ModelConfig, dtype: Dtype) => void;
  /** Fuse torch-flavour attention and rotary into ONNX Runtime's MultiHeadAttention and RotaryEmbedding
   *  (default true); checked against the graph as published at load, which is used instead where they differ. */
  fuse?: boolean;
}

export interface PreparedGraph {
  analysis: GraphAnalysis;
  graph: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
  instrumentation: Instrumentation;
  /** The same instrumentation with contrib-op fusions, where any pattern matched (same inputs and outputs). */
  fused?: { graph: Uint8Array; applied: string[] };
}

/** Analyse and instrument one .onnx file; `readExternal` fetches each data file the graph names. With
 *  `ablation`, every layer also gets an ablation input (a few small ops per layer and step); with `fusion`,
 *  a fused copy is made too where attention, rotary or RMSNorm matches (fusion.ts). */
export async function prepareGraph(
  bytes: Uint8Array,
  fileName: string,
  readExternal: (location: string, maxBytes?: number) => Promise<Uint8Array>,
  hints: AnalysisHints = {},
  ablation = false,
  fusion?: FusionOptions,
): Promise<PreparedGraph> {
  const model = parseModel(bytes, fileName);
  const analysis = analyseGraph(model, { ...hints, fileName });
  const externalData: PreparedGraph['externalData'] = [];
  for (const location of analysis.externalDataFiles) {
    const tensors = model.graph.initializers.filter((tensor) => tensor.externalData?.location === location);
    const extent = (tensor: (typeof tensors)[number]) => tensor.externalData!.offset + (tensor.externalData!.length ?? NaN);
    // The graph says how large the file is when every tensor in it has a length: a download stops there.
    const implied = tensors.every((tensor) => Number.isFinite(extent(tensor))) ? Math.max(...tensors.map(extent)) : undefined;
    const data = await readExternal(location, implied);
    // ONNX Runtime reports a tensor beyond the end of its file in its own words: say which file and what to do.
    const outside = tensors.find((tensor) => extent(tensor) > data.length || tensor.externalData!.offset > data.length || tensor.externalData!.offset < 0);
    if (outside) {
      const { offset, length } = outside.externalData!;
      throw new ModelFileError('truncated', location,
        `${fileName} places ${outside.name} at bytes ${offset}…${offset + (length ?? 0)} of ${location}, which has ${data.length} bytes: ` +
          'the graph and its data file do not belong together; download both again');
    }
    externalData.push({ path: location, data });
  }
  const baseName = fileName.split('/').pop()!;
  const surgeryOptions = { fileName: baseName, ablateLayers: ablation ? analysis.layers.map((site) => site.layer) : [] };
  const surgery = instrumentModel(model, analysis, surgeryOptions);
  // Embedded weights now live in the original bytes, referenced as external data: no second copy.
  if (surgery.selfReference) externalData.push({ path: surgery.selfReference, data: bytes });
  const plan = fusion && planFusion(model, analysis, fusion);
  return {
    analysis,
    graph: surgery.bytes,
    externalData,
    instrumentation: {
      steeringInputs: surgery.steeringInputs, ablationInputs: surgery.ablationInputs, hiddenOutputs: surgery.hiddenOutputs, logitsFrom: surgery.logitsFrom,
    },
    fused: plan && plan.applied.length > 0
      ? { graph: instrumentModel(model, analysis, { ...surgeryOptions, fusion: plan }).bytes, applied: plan.applied }
      : undefined,
  };
}

export async function resolveBackend(backend: LoadOptions['backend']): Promise<Backend> {
  if (backend && backend !== 'auto') return backend;
  return (await detectBackends()).webgpu ? 'webgpu' : 'wasm';
}

/** A session of the prepared graph as instrumented (`graph` replaces it: the fused copy). */
export async function openSession(prepared: PreparedGraph, backend: Backend, graph = prepared.graph) {
  const gpuOutputs = prepared.analysis.kv.flatMap((entry) => [entry.keyOutput, entry.valueOutput]);
  return createSession({ graph, externalData: prepared.externalData }, backend, gpuOutputs);
}

const decodeJson = (bytes: Uint8Array, file: string, id: string): Record<string, unknown> => {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ModelFileError('not-onnx', file, `${file} of ${id} is not valid JSON (${(error as Error).message}): download it again.`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelFileError('not-onnx', file, `${file} of ${id} holds ${JSON.stringify(json)?.slice(0, 40)}, not a JSON object of settings: download it again.`);
  }
  return json as Record<string, unknown>;
};

/** Sizes that, when a config.json gives them, must be whole numbers ≥ 1 (a context of 0 would cut every prompt to nothing). */
const CONFIG_SIZES = ['hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'vocab_size', 'max_position_embeddings', 'intermediate_size'];

function checkConfigSizes(config: Record<string, unknown>, id: string): void {
  for (const key of CONFIG_SIZES) {
    const value = config[key];
    if (value === undefined || value === null || (Number.isSafeInteger(value) && (value as number) >= 1)) continue;
    throw new ModelFileError('not-onnx', 'config.json', `config.json of ${id} gives ${key} = ${JSON.stringify(value)}, but it must be a whole number ≥ 1: fix config.json or download it again.`);
  }
}

/** The ONNX graph a model folder or Hub repository offers, with its config and a reader for its data files. */
export interface ModelGraphFiles {
  config: ModelConfig;
  /** Path of the chosen graph, e.g. onnx/model_q4.onnx. */
  file: string;
  bytes: Uint8Array;
  /** Reads an external data file the graph names (a location beside the graph). */
  readExternal: (location: string, maxBytes?: number) => Promise<Uint8Array>;
}

// ---- memory: estimated from config.json, before anything large is downloaded ----

/** Bytes per weight of the big matrices, and of the embedding (quantised exports keep it in fp32 or fp16). */
const WEIGHT_BYTES: Record<Dtype, { matrix: number; embedding: number }> = {
  fp32: { matrix: 4, embedding: 4 },
  fp16: { matrix: 2, embedding: 2 },
  q8: { matrix: 1, embedding: 4 },
  int8: { matrix: 1, embedding: 4 },
  uint8: { matrix: 1, embedding: 4 },
  // 4 bits plus a scale per block of 32.
  q4: { matrix: 0.56, embedding: 4 },
  q4f16: { matrix: 0.56, embedding: 2 },
  bnb4: { matrix: 0.56, embedding: 4 },
};
/** ONNX Runtime's WASM build has a 32-bit heap: the weights and the run's buffers must fit in 4 GiB. */
const WASM_HEAP_BYTES = 4 * 1024 ** 3;

const positive = (value: unknown): number | undefined => (typeof value === 'number' && value > 0 ? value : undefined);

export interface MemoryEstimate {
  parameters: number;
  /** The weights as downloaded. */
  weightBytes: number;
  /** The most memory a load holds at once: the downloaded bytes and ONNX Runtime's copy of them. */
  peakBytes: number;
}

/** Parameter count and bytes of a decoder from its config.json (a Llama-style gated MLP), or undefined if the config lacks sizes. */
export function estimateModelMemory(config: ModelConfig, dtype: Dtype): MemoryEstimate | undefined {
  const hidden = positive(config.hidden_size);
  const layers = positive(config.num_hidden_layers);
  const vocab = positive(config.vocab_size);
  if (!hidden || !layers || !vocab) return undefined;
  const heads = positive(config.num_attention_heads) ?? 1;
  const headDim = positive(config.head_dim) ?? hidden / heads;
  const kvHeads = positive(config.num_key_value_heads) ?? heads;
  const intermediate = positive(config.intermediate_size) ?? 4 * hidden;
  const attention = 2 * hidden * heads * headDim + 2 * hidden * kvHeads * headDim;
  const matrices = layers * (attention + 3 * hidden * intermediate);
  const embeddings = vocab * hidden * (config.tie_word_embeddings === false ? 2 : 1);
  const bytes = WEIGHT_BYTES[dtype];
  const weightBytes = Math.round(matrices * bytes.matrix + embeddings * bytes.embedding);
  return { parameters: matrices + embeddings, weightBytes, peakBytes: 2 * weightBytes };
}

/** What a tab may use: half the device's memory (navigator.deviceMemory, in GiB), and within WASM's heap on WASM. */
export function deviceMemoryBudget(backend: Backend): number | undefined {
  const gib = (globalThis as { navigator?: { deviceMemory?: number } }).navigator?.deviceMemory;
  const device = typeof gib === 'number' && gib > 0 ? (gib * 1024 ** 3) / 2 : undefined;
  return backend === 'wasm' && device !== undefined ? Math.min(device, WASM_HEAP_BYTES) : device;
}

/** The estimate exceeds what this device can hold: nothing large was downloaded yet. */
export class ModelTooLargeError extends Error {
  override name = 'ModelTooLargeError';
}

const count = (n: number) => (n < 1e9 ? `${Number((n / 1e6).toPrecision(2))}M` : `${Number((n / 1e9).toPrecision(2))}B`);
export const gigabytes = (bytes: number) => (bytes < 1e9 ? `${Math.ceil(bytes / 1e6)} MB` : `${(bytes / 1e9).toFixed(1)} GB`);

function checkMemory(config: ModelConfig, dtype: Dtype, backend: Backend, id: string, budget: number | undefined): void {
  const estimate = estimateModelMemory(config, dtype);
  if (!estimate || budget === undefined || estimate.peakBytes <= budget) return;
  throw new ModelTooLargeError(
    `${id} (${dtype}, about ${count(estimate.parameters)} parameters) needs about ${gigabytes(estimate.peakBytes)} of memory ` +
      `while loading (${gigabytes(estimate.weightBytes)} of weights), more than this device can spare on ${backend} (about ${gigabytes(budget)}). ` +
      'Nothing large was downloaded. Choose a smaller model or a smaller variant (q4), or load it anyway if you know the device has the memory.',
  );
}

export async function readModelGraph(
  source: ModelSource,
  options: {
    dtype?: Dtype;
    preferred?: readonly Dtype[];
    onProgress?: ProgressCallback;
    signal?: AbortSignal;
    /** Called with the config and the chosen dtype before the graph is downloaded; may throw to stop. */
    beforeDownload?: (config: ModelConfig, dtype: Dtype) => void;
  } = {},
): Promise<ModelGraphFiles> {
  const { onProgress, signal } = options;
  const configBytes = await source.readOptionalFile('config.json', onProgress, signal);
  if (!configBytes) {
    throw new ModelFileError('missing', 'config.json',
      `${source.id} has no config.json: a model folder needs config.json beside onnx/ (the Transformers.js layout). ` +
        'Download the whole model repository, not only the .onnx file.');
  }
  const config = decoderConfigOf(decodeJson(configBytes, 'config.json', source.id));
  checkConfigSizes(config, source.id);
  const dtype = options.dtype ?? pickDtype(await source.listOnnxFiles(), config, options.preferred);
  options.beforeDownload?.(config, dtype);
  const file = onnxFileForDtype(dtype);
  const bytes = await source.readFile(file, onProgress, signal).catch((error: unknown) => {
    if (error instanceof ModelFileError && error.kind === 'missing' && !options.dtype) {
      throw new ModelFileError('missing', file, `${error.message}. Tiller chose the ${dtype} variant; ` +
        `this model may publish others (${DTYPES.filter((d) => d !== dtype).join(', ')}): choose one as the dtype`);
    }
    throw error;
  });
  const folder = file.slice(0, file.lastIndexOf('/') + 1);
  const readExternal = async (location: string, maxBytes?: number) => {
    try {
      return await source.readFile(folder + location, onProgress, signal, maxBytes);
    } catch (error) {
      if (error instanceof ModelFileError && error.kind === 'missing') {
        throw new ModelFileError('missing', folder + location,
          `${folder + location} is missing from ${source.id}: ${file} keeps its weights there, so download it too.`);
      }
      throw error;
    }
  };
  return { config, file, bytes, readExternal };
}

/** How to fuse a model with this config.json: its query head count (the graph's KV cache gives only the KV heads). */
export function fusionOptionsFor(config: ModelConfig): FusionOptions {
  return { heads: config.num_attention_heads };
}

export async function loadModel(source: ModelSource, options: LoadOptions = {}): Promise<SteerableModel> {
  const { onProgress, signal } = options;
  const backend = await resolveBackend(options.backend);
  const shaderF16 = backend === 'webgpu' && (await detectBackends()).shaderF16;
  if (backend === 'webgpu' && options.dtype && needsShaderF16(options.dtype) && !shaderF16) {
    throw new Error(`the ${options.dtype} variant needs WebGPU's shader-f16 feature, which this GPU lacks (fp16 graphs would silently return zeros): ` +
      'load q4 or fp32 instead, or use the WASM backend');
  }
  const { config, file, bytes, readExternal } = await readModelGraph(source, {
    dtype: options.dtype, preferred: dtypePreference(backend, shaderF16), onProgress, signal,
    beforeDownload: (config, dtype) => {
      options.beforeDownload?.(config, dtype);
      if (!options.allowLargeModel) checkMemory(config, dtype, backend, source.id, options.memoryBudget ?? deviceMemoryBudget(backend));
    },
  });
  const readJson = async (name: string) => {
    const json = await source.readOptionalFile(name, onProgress, signal);
    return json ? decodeJson(json, name, source.id) : undefined;
  };
  const generationConfig = ((await readJson('generation_config.json')) ?? {}) as ModelConfig;
  const tokenizerJson = await readJson('tokenizer.json');
  const tokenizerConfig = (await readJson('tokenizer_config.json')) ?? {};
  const chatTemplateBytes = await source.readOptionalFile('chat_template.jinja', onProgress, signal);
  const tokenizer = tokenizerJson
    ? TextTokenizer.fromFiles({
        tokenizerJson,
        tokenizerConfig,
        chatTemplateJinja: chatTemplateBytes && new TextDecoder().decode(chatTemplateBytes),
      })
    : undefined;

  const hints = { numHiddenLayers: config.num_hidden_layers, hiddenSize: config.hidden_size };
  const fusion = options.fuse === false ? undefined : fusionOptionsFor(config);
  const prepared = await prepareGraph(bytes, file, readExternal, hints, options.ablation, fusion);
  const modelOf = (session: InferenceSession) => new SteerableModel(
    source.id, file, session, prepared.analysis, prepared.instrumentation,
    tokenizer, config, generationConfig, backend,
  );
  const { session, report } = await openCheckedSession(prepared, backend, modelOf);
  const model = modelOf(session);
  model.fusion = report;
  // Every model a user brings is checked once: the result goes to the model panel and `tiller inspect`.
  model.selfCheck = await selfCheck(model);
  return model;
}

/**
 * A session of the fused graph where fusion applied and it computes what the graph as published computes
 * (probed on a short left-padded batch and a decode step); otherwise one of the graph as published, with
 * the reason. On WASM the two sessions are open one after the other, never together: a load never holds
 * the weights twice in ONNX Runtime.
 */
export async function openCheckedSession(
  prepared: PreparedGraph, backend: Backend, modelOf: (session: InferenceSession) => SteerableModel,
): Promise<{ session: InferenceSession; report: FusionReport }> {
  const fused = prepared.fused;
  if (!fused) return { session: await openSession(prepared, backend), report: { applied: [] } };
  const fellBack = (reason: string) => `fused ${fused.applied.join(', ')}, but ${reason}: using the graph as published`;
  const published = await openSession(prepared, backend);
  let reference: FusionProbe;
  try {
    reference = await probeLogits(modelOf(published));
  } catch (error) {
    return { session: published, report: { applied: [], fellBack: fellBack(`the check did not run on the published graph (${(error as Error).message})`) } };
  }
  // On WebGPU the published session lives until the fused one exists: releasing the last session would tear
  // down the device the next one is about to use (api.ts, replaceModel).
  const releasePublished = () => published.release();
  if (backend !== 'webgpu') await releasePublished();
  let session: InferenceSession | undefined;
  let reason: string;
  try {
    session = await openSession(prepared, backend, fused.graph);
    if (backend === 'webgpu') await releasePublished();
    const comparison = compareProbes(reference, await probeLogits(modelOf(session)));
    if (comparison.ok) return { session, report: { applied: fused.applied, maxLogitError: comparison.error } };
    reason = `its logits differ from the published graph's by ${comparison.error.toExponential(2)} (tolerance ${comparison.tolerance.toExponential(2)})`;
  } catch (error) {
    reason = `it did not run (${(error as Error).message})`;
  }
  const report = { applied: [], fellBack: fellBack(reason) };
  if (backend === 'webgpu') {
    const kept = session ? await openSession(prepared, backend) : published;
    await session?.release();
    return { session: kept, report };
  }
  await session?.release();
  return { session: await openSession(prepared, backend), report };
}
