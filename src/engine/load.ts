/**
 * From a model source to a steerable session: read the config and tokenizer, pick the ONNX variant,
 * fetch the external data files the graph names, analyse, instrument, create the session.
 */
import { type AnalysisHints, type GraphAnalysis, analyseGraph } from './onnx/analysis.ts';
import { parseModel } from './onnx/model.ts';
import { instrumentModel } from './onnx/surgery.ts';
import { type Backend, createSession, detectBackends } from './runtime.ts';
import { type ModelSource, type ProgressCallback, ModelFileError } from './sources/source.ts';
import { DTYPES, type Dtype, dtypePreference, needsShaderF16, onnxFileForDtype, pickDtype } from './sources/variants.ts';
import { type Instrumentation, type ModelConfig, SteerableModel } from './steerable-model.ts';
import { TextTokenizer } from './tokenizer.ts';

export interface LoadOptions {
  dtype?: Dtype;
  /** 'auto' picks WebGPU where there is an adapter, WASM otherwise. */
  backend?: Backend | 'auto';
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
}

export interface PreparedGraph {
  analysis: GraphAnalysis;
  graph: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
  instrumentation: Instrumentation;
}

/** Analyse and instrument one .onnx file; `readExternal` fetches each data file the graph names. */
export async function prepareGraph(
  bytes: Uint8Array,
  fileName: string,
  readExternal: (location: string) => Promise<Uint8Array>,
  hints: AnalysisHints = {},
): Promise<PreparedGraph> {
  const model = parseModel(bytes, fileName);
  const analysis = analyseGraph(model, { ...hints, fileName });
  const externalData: PreparedGraph['externalData'] = [];
  for (const location of analysis.externalDataFiles) {
    externalData.push({ path: location, data: await readExternal(location) });
  }
  const baseName = fileName.split('/').pop()!;
  const surgery = instrumentModel(model, analysis, { fileName: baseName });
  // Embedded weights now live in the original bytes, referenced as external data: no second copy.
  if (surgery.selfReference) externalData.push({ path: surgery.selfReference, data: bytes });
  return {
    analysis,
    graph: surgery.bytes,
    externalData,
    instrumentation: { steeringInputs: surgery.steeringInputs, hiddenOutputs: surgery.hiddenOutputs, logitsFrom: surgery.logitsFrom },
  };
}

export async function resolveBackend(backend: LoadOptions['backend']): Promise<Backend> {
  if (backend && backend !== 'auto') return backend;
  return (await detectBackends()).webgpu ? 'webgpu' : 'wasm';
}

export async function openSession(prepared: PreparedGraph, backend: Backend) {
  const gpuOutputs = prepared.analysis.kv.flatMap((entry) => [entry.keyOutput, entry.valueOutput]);
  return createSession({ graph: prepared.graph, externalData: prepared.externalData }, backend, gpuOutputs);
}

const decodeJson = (bytes: Uint8Array, file: string, id: string): Record<string, unknown> => {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch (error) {
    throw new ModelFileError('not-onnx', file, `${file} of ${id} is not valid JSON (${(error as Error).message}): download it again.`);
  }
};

/** Multimodal configs (Gemma-3, Qwen-VL) keep the decoder's sizes under text_config. */
export function textConfigOf(config: Record<string, unknown>): ModelConfig {
  const text = config.text_config;
  return typeof text === 'object' && text !== null ? { ...config, ...(text as ModelConfig) } : config;
}

/** The ONNX graph a model folder or Hub repository offers, with its config and a reader for its data files. */
export interface ModelGraphFiles {
  config: ModelConfig;
  /** Path of the chosen graph, e.g. onnx/model_q4.onnx. */
  file: string;
  bytes: Uint8Array;
  /** Reads an external data file the graph names (a location beside the graph). */
  readExternal: (location: string) => Promise<Uint8Array>;
}

export async function readModelGraph(
  source: ModelSource,
  options: { dtype?: Dtype; preferred?: readonly Dtype[]; onProgress?: ProgressCallback; signal?: AbortSignal } = {},
): Promise<ModelGraphFiles> {
  const { onProgress, signal } = options;
  const configBytes = await source.readOptionalFile('config.json', onProgress, signal);
  if (!configBytes) {
    throw new ModelFileError('missing', 'config.json',
      `${source.id} has no config.json: a model folder needs config.json beside onnx/ (the Transformers.js layout). ` +
        'Download the whole model repository, not only the .onnx file.');
  }
  const config = textConfigOf(decodeJson(configBytes, 'config.json', source.id));
  const dtype = options.dtype ?? pickDtype(await source.listOnnxFiles(), config, options.preferred);
  const file = onnxFileForDtype(dtype);
  const bytes = await source.readFile(file, onProgress, signal).catch((error: unknown) => {
    if (error instanceof ModelFileError && error.kind === 'missing' && !options.dtype) {
      throw new ModelFileError('missing', file, `${error.message}. Tiller chose the ${dtype} variant; ` +
        `this model may publish others (${DTYPES.filter((d) => d !== dtype).join(', ')}): choose one as the dtype`);
    }
    throw error;
  });
  const folder = file.slice(0, file.lastIndexOf('/') + 1);
  const readExternal = async (location: string) => {
    try {
      return await source.readFile(folder + location, onProgress, signal);
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

  const prepared = await prepareGraph(bytes, file, readExternal, { numHiddenLayers: config.num_hidden_layers, hiddenSize: config.hidden_size });
  const session = await openSession(prepared, backend);
  return new SteerableModel(
    source.id, file, session, prepared.analysis, prepared.instrumentation,
    tokenizer, config, generationConfig, backend,
  );
}
