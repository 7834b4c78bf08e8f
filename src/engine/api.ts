/**
 * The engine as one typed API: what the web worker exposes to the page through comlink, and what
 * other front ends can call directly. Holds at most one model; every call that can take long can be
 * cancelled by the job id its caller chose.
 */
import { type GenerateRequest, type GenerateResult, type TokenEvent, generate } from './generation/generate.ts';
import { type CaptureResult, type Reduction, captureHiddenStates } from './directions/hidden-states.ts';
import type { DirectionMethod } from './directions/directions.ts';
import { type ContrastiveSet, type ExtractStage, type ExtractionMode, extractDirections } from './directions/extract.ts';
import { ModelTooLargeError, loadModel } from './model/load.ts';
import { type LogitLens, directionLogitLens } from './inside/logit-lens.ts';
import { type NextToken, type NextTokenRequest, nextTokens } from './generation/next-token.ts';
import { type ProjectionRequest, type TokenProjection, textProjections, tokenProjections } from './inside/projection.ts';
import { type StrengthMapCell, type StrengthMapRequest, strengthMap } from './inside/strength-map.ts';
import { type Backend, type BackendSupport, BackendSwitchedError, DeviceLostError, detectBackends } from './model/runtime.ts';
import { browserCacheAvailable, cachingFetch, clearModelCache, dropCachedFiles, modelCacheSize } from './sources/cache.ts';
import { PickedFilesSource } from './sources/files.ts';
import { FolderUrlSource, HubSource } from './sources/hub.ts';
import type { FileProgress, ModelSource } from './sources/source.ts';
import type { Dtype } from './sources/variants.ts';
import type { ModelInfo, SteerableModel } from './model/steerable-model.ts';
import type { ChatMessage } from './model/tokenizer.ts';
import { type VectorFile, vectorFileFromExtraction } from './directions/vector-file.ts';
import { type DiffRequest, type DiffStage, diffModels, loadFineTune, vectorFileFromDiff } from './directions/model-diff.ts';
import { type CoherentRange, type ScoredDirection, type ScoringExamples, type SteerabilityResult, coherentRange, measuredCoherence } from './directions/steerability.ts';

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
  /** Load even when the memory estimate says the model is too large for this device. */
  allowLargeModel?: boolean;
  /** Instrument every layer for directional ablation too (a little slower per step). */
  ablation?: boolean;
  /** Fuse torch-export attention and rotary at load (default true; false: the graph as published). */
  fuse?: boolean;
}

/** Per-token projections of a text read by the unsteered model, or of token ids with their context. */
export type ProjectTokensRequest = Omit<ProjectionRequest, 'tokenIds' | 'contextIds'> &
  ({ text: string } | Pick<ProjectionRequest, 'tokenIds' | 'contextIds'>);

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

export interface ModelDiffRequest extends DiffRequest {
  /** Preset whose prompts were used, recorded in the vector file. */
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
  /** Reloads the loaded model instrumented for ablation too (from the browser's cache where it was cached). */
  enableAblation(jobId: string, onProgress?: (p: FileProgress) => void): Promise<ModelInfo>;
  /** The persona meter: each token's residual at a layer projected on a direction. */
  projectTokens(jobId: string, request: ProjectTokensRequest): Promise<TokenProjection[]>;
  /** The tokens whose logits a direction raises and lowers most, through the final norm and LM head. */
  logitLens(jobId: string, direction: ArrayLike<number>, top?: number): Promise<LogitLens>;
  /** The coherent strength range at one layer of the last direction computed (its examples stay in memory):
   *  `promptSetHash` names that extraction; another one is refused. */
  coherentRange(jobId: string, request: { promptSetHash: string; direction: ScoredDirection }): Promise<CoherentRange>;
  /** Trait and coherence of short continuations over layers × strengths. */
  strengthMap(jobId: string, request: StrengthMapRequest, onProgress?: (done: number, total: number) => void): Promise<StrengthMapCell[]>;
  /** Loads a second model beside the loaded base (same architecture, both within memory, else refused saying why);
   *  loading another base drops it. */
  loadFineTune(jobId: string, request: LoadRequest, onProgress?: (p: FileProgress) => void): Promise<ModelInfo>;
  fineTuneInfo(): ModelInfo | undefined;
  unloadFineTune(): Promise<void>;
  /** Per layer, the fine-tune's mean residual minus the base's over the same prompts, as a vector file naming both. */
  diff(jobId: string, request: ModelDiffRequest, onProgress?: (stage: DiffStage, done: number, total: number) => void): Promise<VectorFile>;
  /** `generate` on the fine-tune (e.g. unsteered, and with the diff subtracted or ablated). */
  generateFineTune(jobId: string, request: GenerateRequest, onToken?: (event: TokenEvent) => void): Promise<GenerateResult>;
  /** Model files kept by the browser (undefined where there is no Cache Storage, e.g. Node). */
  cacheInfo(): Promise<CacheInfo | undefined>;
  /** Removes cached model files: all, or (keepCurrent) all but the loaded model's. */
  clearCache(options?: { keepCurrent?: boolean }): Promise<void>;
  cancel(jobId: string): void;
  unload(): Promise<void>;
  /** Called when the engine had to move the model to another backend (the GPU was lost), with what happened. */
  onBackendChange(listener: (message: string, info: ModelInfo) => void): void;
}

export function createEngine(): TillerEngine {
  let model: SteerableModel | undefined;
  /** Model diffing's second model, beside `model` (its base). */
  let fineTune: SteerableModel | undefined;
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
  // A lost GPU takes the WebGPU session with it: the last load is repeated on WASM, so the app stays usable.
  let lastLoad: LoadRequest | undefined;
  const backendListeners: ((message: string, info: ModelInfo) => void)[] = [];
  const recoverFrom = async (error: unknown, signal: AbortSignal): Promise<unknown> => {
    if (!(error instanceof DeviceLostError) || !lastLoad) return error;
    await model?.dispose().catch(() => undefined); // the session's GPU buffers went with the device
    model = undefined;
    const recovered = await replaceModel({ ...lastLoad, backend: 'wasm', allowLargeModel: true }, signal);
    const message = `${error.message}. ${recovered.id} was reloaded on WASM (slower, but it works): the work was stopped and restarts there.`;
    for (const listener of backendListeners) listener(message, recovered.info);
    return new BackendSwitchedError(message);
  };
  const withModelJob = <T>(jobId: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> =>
    withJob(jobId, async (signal) => {
      try {
        return await run(signal);
      } catch (error) {
        throw await recoverFrom(error, signal);
      }
    });
  // The last extraction's scored examples, for the coherent range at layers other than the recommended one.
  let lastScoring: { promptSetHash: string; examples: ScoringExamples; steerability: SteerabilityResult } | undefined;
  let lastCacheError: string | undefined;
  let currentUrlPrefix: string | undefined;
  /** Files the current load took from the cache: if the model then fails to load, they are dropped and fetched again. */
  const cacheHits = new Set<string>();
  const fetchModelFile = browserCacheAvailable()
    ? cachingFetch(globalThis.fetch, { onCacheError: (error) => (lastCacheError = error.message), onHit: (url) => cacheHits.add(url) })
    : globalThis.fetch;
  const sourceFor = (location: ModelLocation): ModelSource => {
    switch (location.kind) {
      case 'hub': return new HubSource(location.repo, { baseUrl: location.baseUrl, revision: location.revision, fetch: fetchModelFile });
      case 'url': return new FolderUrlSource(location.url, { onnxFiles: location.onnxFiles, fetch: fetchModelFile });
      case 'files': return new PickedFilesSource(location.files);
    }
  };
  /**
   * Loads `request`, and only once it is ready releases the model it replaces: a load that fails or is
   * cancelled leaves the working model in place, and on WebGPU the device stays in use by a live session
   * throughout (releasing the last session first would tear down the device the new one is about to use).
   */
  const replaceModel = async (request: LoadRequest, signal: AbortSignal, onProgress?: (p: FileProgress) => void): Promise<SteerableModel> => {
    const source = sourceFor(request.location);
    const load = () => loadModel(source, {
      dtype: request.dtype, backend: request.backend, onProgress, signal, allowLargeModel: request.allowLargeModel, ablation: request.ablation, fuse: request.fuse,
    });
    cacheHits.clear();
    const loadedNow = await load().catch(async (error: unknown) => {
      // A cached copy that does not parse (cut off, or stored from a broken server) would fail every load: drop it and download once more.
      if (signal.aborted || error instanceof ModelTooLargeError || cacheHits.size === 0) throw error;
      await dropCachedFiles(cacheHits);
      cacheHits.clear();
      return load();
    });
    const previous = model;
    // A fine-tune belongs to the base it was compared with.
    const previousFineTune = fineTune;
    fineTune = undefined;
    model = loadedNow;
    lastLoad = request;
    lastScoring = undefined;
    await previousFineTune?.dispose().catch(() => undefined);
    await previous?.dispose().catch(() => undefined);
    // Where the model's files live in the cache, so that "clear old models" can keep them.
    currentUrlPrefix = source instanceof HubSource || source instanceof FolderUrlSource ? source.urlFor('config.json').slice(0, -'config.json'.length) : undefined;
    return loadedNow;
  };

  return {
    backends: detectBackends,

    load: (jobId, request, onProgress) => {
      cancelAll();
      return withJob(jobId, async (signal) => (await replaceModel(request, signal, onProgress)).info);
    },

    info: () => model?.info,

    tokenize: (text) => {
      const tokenizer = loaded().tokenizer;
      if (!tokenizer) throw new Error(`${loaded().id} has no tokenizer`);
      return tokenizer.encode(text);
    },

    generate: (jobId, request, onToken) => withModelJob(jobId, (signal) => generate(loaded(), request, { onToken, signal })),

    captureHiddenStates: (jobId, request, onProgress) =>
      withModelJob(jobId, (signal) => {
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
      withModelJob(jobId, async (signal) => {
        const current = loaded();
        // A cancelled answering stage ends its generations early and can fail later for want of answers: say cancelled.
        const extraction = await extractDirections(current, request.set, { method: request.method, mode: request.mode }, { onProgress, signal })
          .catch((error: unknown) => {
            if (signal.aborted) throw new DOMException(`${jobId} was cancelled`, 'AbortError');
            throw error;
          });
        // Cancelled after the directions were fitted: they are returned, with what scoring measured.
        if (signal.aborted && !extraction.scoringCancelled) throw new DOMException(`${jobId} was cancelled`, 'AbortError');
        const scores = extraction.steerability;
        lastScoring = extraction.scoringExamples && scores && !scores.problem
          ? { promptSetHash: extraction.promptSetHash, examples: extraction.scoringExamples, steerability: scores }
          : undefined;
        return vectorFileFromExtraction(extraction, current.info, request.preset);
      }),

    nextTokens: (jobId, request) => withModelJob(jobId, () => nextTokens(loaded(), request)),

    enableAblation: (jobId, onProgress) =>
      withJob(jobId, async (signal) => {
        const current = loaded();
        if (current.info.ablation || !lastLoad) return current.info;
        return (await replaceModel({ ...lastLoad, backend: current.backend, allowLargeModel: true, ablation: true }, signal, onProgress)).info;
      }),

    projectTokens: (jobId, request) =>
      withModelJob(jobId, () => ('text' in request ? textProjections(loaded(), request) : tokenProjections(loaded(), request))),

    logitLens: (jobId, direction, top) => withModelJob(jobId, () => directionLogitLens(loaded(), direction, top)),

    coherentRange: (jobId, request) =>
      withModelJob(jobId, (signal) => {
        if (!lastScoring || lastScoring.promptSetHash !== request.promptSetHash) {
          throw new Error('the examples this direction was scored on are no longer in memory: compute the direction again to measure other layers');
        }
        const { examples, steerability } = lastScoring;
        return coherentRange(loaded(), request.direction, examples, {
          unsteeredPerplexity: steerability.unsteeredPerplexity, measured: measuredCoherence(steerability, request.direction.layer),
        }, { signal });
      }),

    strengthMap: (jobId, request, onProgress) => withModelJob(jobId, (signal) => strengthMap(loaded(), request, { onProgress, signal })),

    loadFineTune: (jobId, request, onProgress) =>
      withJob(jobId, async (signal) => {
        const base = loaded();
        await fineTune?.dispose();
        fineTune = undefined;
        fineTune = await loadFineTune(base, sourceFor(request.location), {
          // A fine-tune is fused (or not) as its base was, unless the request says otherwise.
          dtype: request.dtype, onProgress, signal, allowLargeModel: request.allowLargeModel, fuse: request.fuse ?? lastLoad?.fuse,
        });
        return fineTune.info;
      }),

    fineTuneInfo: () => fineTune?.info,

    unloadFineTune: () =>
      withJob('unload-fine-tune', async () => {
        await fineTune?.dispose();
        fineTune = undefined;
      }),

    diff: (jobId, request, onProgress) =>
      withModelJob(jobId, async (signal) => {
        const base = loaded();
        if (!fineTune) throw new Error('no fine-tune is loaded: load the second model first');
        const extraction = await diffModels(base, fineTune, request, { onProgress, signal });
        return vectorFileFromDiff(extraction, base.info, fineTune.info, request.prompts.length, request.preset);
      }),

    generateFineTune: (jobId, request, onToken) =>
      withModelJob(jobId, (signal) => {
        if (!fineTune) throw new Error('no fine-tune is loaded: load the second model first');
        return generate(fineTune, request, { onToken, signal });
      }),

    cacheInfo: async () => {
      const size = await modelCacheSize();
      return size && { ...size, lastError: lastCacheError };
    },

    clearCache: async (options) => {
      await clearModelCache(options?.keepCurrent ? currentUrlPrefix : undefined);
      lastCacheError = undefined;
    },

    cancel: (jobId) => jobs.get(jobId)?.abort(),

    onBackendChange: (listener) => {
      backendListeners.push(listener);
    },

    unload: () => {
      cancelAll();
      lastLoad = undefined;
      return withJob('unload', async () => {
        await fineTune?.dispose();
        fineTune = undefined;
        await model?.dispose();
        model = undefined;
      });
    },
  };
}
