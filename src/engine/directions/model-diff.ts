/**
 * Model diffing, the way the emergent-misalignment research found its persona: the same prompts through a
 * base model and a fine-tune of it, and per layer the mean residual of the fine-tune minus the base's. The
 * difference is fitted and scored like any contrastive direction (fine-tune = positive side, base =
 * negative, separation held out), and saved as a vector file naming both models.
 */
import { fitDirections, recommendLayer } from './directions.ts';
import { type Extraction, hashSet } from './extract.ts';
import { captureHiddenStates } from './hidden-states.ts';
import { type ScoringExample, coherentRange, measuredCoherence, scoreSteerability } from './steerability.ts';
import { type VectorFile, vectorFileFromExtraction } from './vector-file.ts';
import { generate } from '../generation/generate.ts';
import { type LoadOptions, ModelTooLargeError, deviceMemoryBudget, estimateModelMemory, gigabytes, loadModel } from '../model/load.ts';
import type { ModelConfig, SteerableModel } from '../model/steerable-model.ts';
import type { ChatMessage } from '../model/tokenizer.ts';
import type { ModelSource } from '../sources/source.ts';
import { DTYPES, onnxFileForDtype } from '../sources/variants.ts';

export interface DiffRequest {
  /** Neutral prompts: raw texts, or chat conversations (rendered with the chat template). */
  prompts: (string | ChatMessage[])[];
  /** 'mean': each prompt's tokens (a leading BOS left out); 'answer': the fine-tune answers each prompt and
   *  both models read that answer, so the diff is taken where the fine-tune behaves. */
  mode?: 'mean' | 'answer';
  /** Answer mode: answer length (default 48) and sampling seed (default 0). */
  answerTokens?: number;
  seed?: number;
  batchSize?: number;
  /** Score what steering the base with the diff does (default true; see below). */
  steerability?: boolean;
}

export type DiffStage = 'answering' | 'base' | 'fine-tune' | 'continuing' | 'scoring';

export interface DiffControls {
  onProgress?: (stage: DiffStage, done: number, total: number) => void;
  signal?: AbortSignal;
}

/** What differs between two models' shapes, each as "what: a vs b" (sizes either side does not state are skipped). */
function shapeDifferences(a: ModelShape, b: ModelShape): string[] {
  const names: Record<keyof ModelShape, string> = { layerCount: 'layer count', hiddenSize: 'hidden size', vocabSize: 'vocabulary size' };
  return (Object.keys(names) as (keyof ModelShape)[])
    .filter((key) => a[key] !== undefined && b[key] !== undefined && a[key] !== b[key])
    .map((key) => `${names[key]}: ${a[key]} vs ${b[key]}`);
}
interface ModelShape { layerCount?: number; hiddenSize?: number; vocabSize?: number }
const shapeOfConfig = (config: ModelConfig): ModelShape => ({
  layerCount: config.num_hidden_layers, hiddenSize: config.hidden_size, vocabSize: typeof config.vocab_size === 'number' ? config.vocab_size : undefined,
});

function refusePair(baseId: string, fineTuneId: string, differences: string[]): void {
  if (differences.length === 0) return;
  throw new Error(`${fineTuneId} is not a fine-tune of ${baseId}'s architecture (${differences.join('; ')}): ` +
    'compare two models of one architecture, e.g. a model and a fine-tune of it.');
}

/** Refuses a pair that is not one architecture: what differs is named, since a diff between them means nothing. */
export function assertSameArchitecture(base: SteerableModel, fineTune: SteerableModel): void {
  const shape = (model: SteerableModel): ModelShape => ({ layerCount: model.analysis.layerCount, hiddenSize: model.analysis.hiddenSize, vocabSize: model.vocabSize });
  const differences = shapeDifferences(shape(base), shape(fineTune));
  if (!base.tokenizer || !fineTune.tokenizer) differences.push('tokenizer: both models need a tokenizer.json');
  else {
    const probe = 'Once upon a time, the quick brown fox said "héllo" to 42 friends.';
    const [a, b] = [base.tokenizer.encode(probe), fineTune.tokenizer.encode(probe)];
    if (a.join() !== b.join()) differences.push('tokenizer: the two tokenise the same text differently');
  }
  refusePair(base.id, fineTune.id, differences);
}

/**
 * Loads the fine-tune beside `base`: on the base's backend, instrumented for ablation too; refused before
 * anything large is downloaded when config.json states other sizes or both would not fit (the estimate is
 * given), and once loaded when its graph or tokenizer differ.
 */
export async function loadFineTune(base: SteerableModel, source: ModelSource, options: LoadOptions = {}): Promise<SteerableModel> {
  const budget = options.memoryBudget ?? deviceMemoryBudget(base.backend);
  const baseDtype = DTYPES.find((dtype) => onnxFileForDtype(dtype) === base.file) ?? 'fp32';
  const baseBytes = estimateModelMemory(base.config, baseDtype)?.weightBytes ?? 0;
  const fineTune = await loadModel(source, {
    ...options, backend: base.backend, ablation: true, memoryBudget: budget === undefined ? undefined : Math.max(0, budget - baseBytes),
    // The sizes config.json states are compared before the graph is downloaded; the rest once it is loaded.
    beforeDownload: (config) => refusePair(base.id, source.id, shapeDifferences(shapeOfConfig(base.config), shapeOfConfig(config))),
  }).catch((error: unknown) => {
    if (!(error instanceof ModelTooLargeError)) throw error;
    throw new ModelTooLargeError(`Both models must be loaded at once, and ${base.id} already holds about ${gigabytes(baseBytes)}. ${error.message}`);
  });
  try {
    assertSameArchitecture(base, fineTune);
  } catch (error) {
    await fineTune.dispose();
    throw error;
  }
  return fineTune;
}

/** Per layer, mean residual of `fineTune` minus `base` over the same prompts, with held-out separation of the two. */
export async function diffModels(base: SteerableModel, fineTune: SteerableModel, request: DiffRequest, controls: DiffControls = {}): Promise<Extraction> {
  assertSameArchitecture(base, fineTune);
  const tokenizer = base.tokenizer!;
  const mode = request.mode ?? 'mean';
  if (request.prompts.length < 2) throw new Error(`model diffing needs at least 2 prompts (got ${request.prompts.length}): add neutral prompts, one a line`);
  const examples = request.prompts.map((prompt, index) => {
    const ids = typeof prompt === 'string'
      ? tokenizer.encode(prompt)
      : tokenizer.encode(tokenizer.applyChatTemplate(prompt, { addGenerationPrompt: mode === 'answer' }), { addSpecialTokens: false });
    if (ids.length === 0) throw new Error(`prompt ${index + 1} is empty`);
    // A leading BOS is the same in both models' every prompt: leave it out of the mean (as extraction does).
    const start = ids[0] === tokenizer.bosTokenId && ids.length > 1 ? 1 : 0;
    return { ids, range: [start, ids.length] as [number, number] };
  });

  if (mode === 'answer') {
    for (const [index, example] of examples.entries()) {
      controls.signal?.throwIfAborted();
      const answer = await generate(fineTune, {
        promptIds: example.ids, maxNewTokens: request.answerTokens ?? 48, sampling: { temperature: 0.8, topP: 0.95, seed: request.seed ?? 0 },
      }, { signal: controls.signal });
      controls.signal?.throwIfAborted();
      const answerIds = answer.rows[0].tokenIds;
      example.range = answerIds.length > 0 ? [example.ids.length, example.ids.length + answerIds.length] : example.range;
      example.ids = [...example.ids, ...answerIds];
      controls.onProgress?.('answering', index + 1, examples.length);
    }
  }

  const layers = base.analysis.layers.map((site) => site.layer);
  const capture = (model: SteerableModel, stage: DiffStage) =>
    captureHiddenStates(model, {
      prompts: examples.map((e) => e.ids), ranges: examples.map((e) => e.range), layers, reduce: 'mean', batchSize: request.batchSize,
    }, { signal: controls.signal, onProgress: (done, total) => controls.onProgress?.(stage, done, total) });
  const baseStates = await capture(base, 'base');
  const fineTuneStates = await capture(fineTune, 'fine-tune');
  const fitted = fitDirections(fineTuneStates, baseStates, { method: 'mean' });
  const extraction: Extraction = { ...fitted, mode, promptSetHash: await hashSet({ kind: 'diff', prompts: request.prompts }) };
  if (request.steerability === false) return extraction;

  // Steerability, as for a contrastive direction: how much more likely steering the base at ±s makes the
  // fine-tune's own greedy continuations of the prompts than the base's. Layers where the two models do not
  // differ yet (a fine-tune of later blocks) have no direction to steer with and are left out.
  const scored = fitted.layers.filter((layer) => layer.norm > 0);
  const prompts = examples.slice(0, SCORED_PROMPTS);
  const continuations = async (model: SteerableModel, done: number): Promise<ScoringExample[]> => {
    const continued: ScoringExample[] = [];
    for (const [index, example] of prompts.entries()) {
      const context = example.ids.slice(0, mode === 'answer' ? example.range[0] : example.ids.length);
      const result = await generate(model, { promptIds: context, maxNewTokens: CONTINUATION_TOKENS }, { signal: controls.signal });
      continued.push({ context, continuation: result.rows[0].tokenIds });
      controls.onProgress?.('continuing', done + index + 1, 2 * prompts.length);
    }
    return continued;
  };
  const positive = await continuations(fineTune, 0);
  const negative = await continuations(base, prompts.length);
  const scoring = { positive, negative };
  const onProgress = (done: number, total: number) => controls.onProgress?.('scoring', done, total);
  extraction.steerability = scored.length === 0
    ? { strength: 0.25, layers: [], unsteeredPerplexity: NaN, problem: 'the two models have the same residual at every layer: there is no difference to steer with', milliseconds: 0 }
    : await scoreSteerability(base, scored, scoring, { layers: scored.map((l) => l.layer) }, { signal: controls.signal, onProgress });
  if (extraction.steerability.problem) return extraction;
  extraction.scoringExamples = scoring;
  extraction.recommendedLayer = recommendLayer(fitted.layers, extraction.steerability.layers);
  const recommended = fitted.layers.find((l) => l.layer === extraction.recommendedLayer)!;
  extraction.coherent = await coherentRange(base, recommended, scoring, {
    unsteeredPerplexity: extraction.steerability.unsteeredPerplexity, measured: measuredCoherence(extraction.steerability, recommended.layer),
  }, { signal: controls.signal });
  return extraction;
}

/** Prompts whose continuations are scored, and their length: enough to measure, few enough to stay quick. */
const SCORED_PROMPTS = 16;
const CONTINUATION_TOKENS = 16;

/** The diff as a vector file under the base's name (residual norms pooled over both models), provenance naming both. */
export function vectorFileFromDiff(
  extraction: Extraction,
  base: { id: string; revision?: string; hiddenSize: number },
  fineTune: { id: string; revision?: string },
  prompts: number,
  preset?: string,
): VectorFile {
  return {
    ...vectorFileFromExtraction(extraction, base, preset),
    diff: { base: { id: base.id, revision: base.revision }, fineTune: { id: fineTune.id, revision: fineTune.revision }, prompts },
  };
}
