/**
 * The engine as one typed API: what the web worker exposes to the page through comlink, and what
 * other front ends can call directly. Holds at most one model; every call that can take long can be
 * cancelled by the job id its caller chose.
 */
import { type GenerateRequest, type GenerateResult, type TokenEvent, generate } from './generate.ts';
import { type CaptureResult, type Reduction, captureHiddenStates } from './hidden-states.ts';
import type { DirectionMethod } from './directions.ts';
import { type ContrastiveSet, type ExtractStage, type ExtractionMode, extractDirections } from './extract.ts';
import { loadModel } from './load.ts';
import { type NextToken, type NextTokenRequest, nextTokens } from './next-token.ts';
import { type Backend, type BackendSupport, detectBackends } from './runtime.ts';
import { browserCacheAvailable, cachingFetch, clearModelCache, modelCacheSize } from './sources/cache.ts';
import { PickedFilesSource } from './sources/files.ts';
import { FolderUrlSource, HubSource } from './sources/hub.ts';
import type { FileProgress, ModelSource } from './sources/source.ts';
import type { Dtype } from './sources/variants.ts';
import type { ModelInfo, SteerableModel } from './steerable-model.ts';
import type { ChatMessage } from './tokenizer.ts';
import { type VectorFile, vectorFileFromExtraction } from './vector-file.ts';

export type ModelLocation =
  /** A Hub repository, or any server laid out like the Hub (`{baseUrl}/{repo}/resolve/{revision}/…`). */
  | { kind: 'hub'; repo: string; baseUrl?: string; revision?: string }
  /** A model folder served as plain files, e.g. the app's own `/models/<name>`. */
  | { kind: 'url'; url: string; onnxFiles?: string[] }
  /** Files the user picked (a model folder), paths relative to the folder. */
  | { kind: 'files'; files: { path: string; file: Blob }[] };

export interface LoadRequest {
  location: ModelLocation;
  dtype?: Dtype;
  backend?: Backend | 'auto';
}

export interface CaptureTextRequest {
  /** Raw texts, or chat conversations rendered with the chat template. */
  prompts: (string | ChatMessage[])[];
  layers: number[];
  reduce: Reduction;
  ranges?: ([number, number] | undefined)[];
  batchSize?: number;
}

export interface ExtractRequest {
  set: ContrastiveSet;
  method?: DirectionMethod;
  mode?: ExtractionMode;
  /** Preset id, recorded in the vector file. */
  preset?: string;
}

export interface CacheInfo {
  files: number;
  bytes: number;
  /** Why the last download could not be stored (e.g. the storage quota), if one could not. */
  lastError?: string;
}

export interface TillerEngine {
  backends(): Promise<BackendSupport>;
  load(jobId: string, request: LoadRequest, onProgress?: (p: FileProgress) => void): Promise<ModelInfo>;
  info(): ModelInfo | undefined;
  tokenize(text: string): number[];
  generate(jobId: string, request: GenerateRequest, onToken?: (event: TokenEvent) => void): Promise<GenerateResult>;
  captureHiddenStates(jobId: string, request: CaptureTextRequest, onProgress?: (done: number, total: number) => void): Promise<CaptureResult>;
  /** Directions at every layer from a contrastive set, as a vector file ready to save or steer with. */
  extract(jobId: string, request: ExtractRequest, onProgress?: (stage: ExtractStage, done: number, total: number) => void): Promise<VectorFile>;
  nextTokens(jobId: string, request: NextTokenRequest): Promise<NextToken[][]>;
  /** Model files kept by the browser (undefined where there is no Cache Storage, e.g. Node). */
  cacheInfo(): Promise<CacheInfo | undefined>;
  clearCache(): Promise<void>;
  cancel(jobId: string): void;
  unload(): Promise<void>;
}

export function createEngine(): TillerEngine {
  let model: SteerableModel | undefined;
  const jobs = new Map<string, AbortController>();
  // ONNX Runtime sessions take one run at a time, and a model must not be released under a running job:
  // all model work goes through this queue, one job after another.
  let queue: Promise<unknown> = Promise.resolve();

  const loaded = (): SteerableModel => {
    if (!model) throw new Error('no model is loaded: load one first');
    return model;
  };
  const withJob = <T>(jobId: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    jobs.get(jobId)?.abort(); // a newer request under the same id supersedes the older one
    const controller = new AbortController();
    jobs.set(jobId, controller);
    const job = queue.then(() => {
      if (controller.signal.aborted) throw new DOMException(`${jobId} was cancelled`, 'AbortError');
      return run(controller.signal);
    });
    queue = job.catch(() => undefined);
    return job.finally(() => {
      if (jobs.get(jobId) === controller) jobs.delete(jobId);
    });
  };
  const cancelAll = () => {
    for (const controller of jobs.values()) controller.abort();
  };
  let lastCacheError: string | undefined;
  const fetchModelFile = browserCacheAvailable()
    ? cachingFetch(globalThis.fetch, (error) => (lastCacheError = error.message))
    : globalThis.fetch;
  const sourceFor = (location: ModelLocation): ModelSource => {
    switch (location.kind) {
      case 'hub': return new HubSource(location.repo, { baseUrl: location.baseUrl, revision: location.revision, fetch: fetchModelFile });
      case 'url': return new FolderUrlSource(location.url, { onnxFiles: location.onnxFiles, fetch: fetchModelFile });
      case 'files': return new PickedFilesSource(location.files);
    }
  };

  return {
    backends: detectBackends,

    load: (jobId, request, onProgress) => {
      cancelAll();
      return withJob(jobId, async (signal) => {
        // Release the old model first: on WASM both would share one heap while the new one loads.
        await model?.dispose();
        model = undefined;
        model = await loadModel(sourceFor(request.location), { dtype: request.dtype, backend: request.backend, onProgress, signal });
        return model.info;
      });
    },

    info: () => model?.info,

    tokenize: (text) => {
      const tokenizer = loaded().tokenizer;
      if (!tokenizer) throw new Error(`${loaded().id} has no tokenizer`);
      return tokenizer.encode(text);
    },

    generate: (jobId, request, onToken) => withJob(jobId, (signal) => generate(loaded(), request, { onToken, signal })),

    captureHiddenStates: (jobId, request, onProgress) =>
      withJob(jobId, (signal) => {
        const current = loaded();
        const tokenizer = current.tokenizer;
        if (!tokenizer) throw new Error(`${current.id} has no tokenizer`);
        const prompts = request.prompts.map((prompt) =>
          typeof prompt === 'string'
            ? tokenizer.encode(prompt)
            : tokenizer.encode(tokenizer.applyChatTemplate(prompt, { addGenerationPrompt: false }), { addSpecialTokens: false }),
        );
        return captureHiddenStates(current, { ...request, prompts }, { onProgress, signal });
      }),

    extract: (jobId, request, onProgress) =>
      withJob(jobId, async (signal) => {
        const current = loaded();
        const extraction = await extractDirections(current, request.set, { method: request.method, mode: request.mode }, { onProgress, signal });
        return vectorFileFromExtraction(extraction, current.info, request.preset);
      }),

    nextTokens: (jobId, request) => withJob(jobId, () => nextTokens(loaded(), request)),

    cacheInfo: async () => {
      const size = await modelCacheSize();
      return size && { ...size, lastError: lastCacheError };
    },

    clearCache: async () => {
      await clearModelCache();
      lastCacheError = undefined;
    },

    cancel: (jobId) => jobs.get(jobId)?.abort(),

    unload: () => {
      cancelAll();
      return withJob('unload', async () => {
        await model?.dispose();
        model = undefined;
      });
    },
  };
}
