/**
 * The measurements of `npm run bench`, free of Node and DOM so that the same code runs in Node and in the
 * bench page's worker (Chromium, WASM and WebGPU). Every comparison interleaves its sides round by round
 * (A B A B …) so that load from other processes on a shared machine hits both alike; medians are reported.
 */
import { generate } from '../src/engine/generation/generate.ts';
import { captureHiddenStates } from '../src/engine/directions/hidden-states.ts';
import { fitDirections } from '../src/engine/directions/directions.ts';
import { scoreSteerability } from '../src/engine/directions/steerability.ts';
import { extractDirections, textScoringExamples } from '../src/engine/directions/extract.ts';
import { contrastiveSetOf, presetById } from '../src/engine/directions/presets.ts';
import { dot, vectorLength } from '../src/engine/vectors.ts';
import { argmax, createRng } from '../src/engine/generation/sampling.ts';
import type { SteerableModel, SteeringRow } from '../src/engine/model/steerable-model.ts';

export interface BenchPlan {
  /** Greedy decode steps per timing, after an 8-token prompt. */
  steps: number;
  /** Interleaved rounds per comparison; medians count. */
  repeats: number;
  /** Rows of the batched-strengths comparison. */
  batchRows: number[];
  /** Prompts (8–24 tokens) of the capture comparison. */
  capturePrompts: number;
  /** New tokens per generate() call in the Transformers.js comparison. */
  generateTokens: number;
  /** Seconds of decoding before anything is timed: browsers compile ONNX Runtime's WASM with their optimising
   *  tier in the background for tens of seconds, and whatever ran before that finished would look slow. */
  warmupSeconds?: number;
  /** Examples per side (8–24 tokens) of the extraction vs steerability comparison (0: skip it). */
  scoringExamples?: number;
  /** Only these measurements (default: all), where a backend is too slow for the rest. */
  only?: BenchItem[];
}

export type BenchItem = 'againstTransformersJs' | 'batchedStrengths' | 'capture' | 'steerability' | 'fusion';

/** A model folder the bench runs (under the folder served as /models/ to the page). */
export interface BenchModel {
  /** Folder name under the models root; also the Transformers.js model id. */
  folder: string;
  /** The graph inside the folder. */
  file: string;
  dtype: 'fp32' | 'fp16' | 'q4' | 'q4f16';
  /** Weights beside the graph, for Transformers.js (the engine reads the names from the graph). */
  externalData?: { name: string; path: string };
  description: string;
  synthetic: boolean;
}

/** Transformers.js on one model: `generate` runs greedily after `promptIds` and returns only the new tokens;
 *  `runs.ms` adds up the time its sessions spent in run(). */
export interface TransformersModel {
  generate: (promptIds: number[], newTokens: number) => Promise<number[]>;
  runs: { ms: number };
}

export const TARGETS = { steeringOverhead: 0.97, againstTransformersJs: 1.1, fourRowsTime: 1.6, steerabilityVsExtraction: 3 } as const;

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Runs each side once per round, in turn (reversed every other round, so that a drift in speed favours no
 *  side), after one untimed round (first runs of a shape are slow); returns each side's values. */
export async function interleave<K extends string>(repeats: number, sides: Record<K, () => Promise<number>>): Promise<Record<K, number[]>> {
  const keys = Object.keys(sides) as K[];
  const values = Object.fromEntries(keys.map((key) => [key, [] as number[]])) as Record<K, number[]>;
  for (const key of keys) await sides[key]();
  for (let round = 0; round < repeats; round++) {
    for (const key of round % 2 ? [...keys].reverse() : keys) values[key].push(await sides[key]());
  }
  return values;
}

const PROMPT = Array.from({ length: 8 }, (_, i) => 10 + i);

/** Decode steps per second (each step one token per row) after the prompt, every row with its steering. */
export async function decodeStepsPerSecond(model: SteerableModel, rows: SteeringRow[] | undefined, steps: number): Promise<number> {
  const batch = rows?.length ?? 1;
  let result = await model.forward({ tokens: Array.from({ length: batch }, () => PROMPT), steering: rows, keepCache: true });
  const started = performance.now();
  for (let step = 0; step < steps; step++) {
    const logits = result.logits!;
    const vocab = logits.length / batch;
    const next = Array.from({ length: batch }, (_, row) => [argmax(logits.subarray(row * vocab, (row + 1) * vocab))]);
    result = await model.forward({ tokens: next, past: result.cache, steering: rows, keepCache: true });
  }
  model.releaseCache(result.cache);
  return (steps * 1000) / (performance.now() - started);
}

/** A steering vector of moderate size for `model`'s middle layer. */
export function benchSteering(model: SteerableModel) {
  const layer = Math.floor(model.analysis.layerCount / 2);
  const vector = Float32Array.from({ length: model.analysis.hiddenSize }, (_, i) => Math.sin(i) * 0.5);
  return { layer, vector };
}

/** 1. Unmodified graph vs the instrumented one (every layer instrumented) at zero steering and with one layer steered. */
export async function measureSteeringOverhead(original: SteerableModel, instrumented: SteerableModel, plan: BenchPlan) {
  const { layer, vector } = benchSteering(instrumented);
  const steered = [[{ layer, vector }]];
  const rates = await interleave(plan.repeats, {
    unmodified: () => decodeStepsPerSecond(original, undefined, plan.steps),
    instrumentedZero: () => decodeStepsPerSecond(instrumented, undefined, plan.steps),
    instrumentedSteered: () => decodeStepsPerSecond(instrumented, steered, plan.steps),
  });
  const tokensPerSecond = { unmodified: median(rates.unmodified), instrumentedZero: median(rates.instrumentedZero), instrumentedSteered: median(rates.instrumentedSteered) };
  return { steeredLayer: layer, tokensPerSecond, ratio: tokensPerSecond.instrumentedSteered / tokensPerSecond.unmodified, target: TARGETS.steeringOverhead };
}

/** 3. k strengths as rows of one batch: time per step relative to one row, and the speed-up over k separate runs. */
export async function measureBatchedStrengths(model: SteerableModel, plan: BenchPlan) {
  const { layer, vector } = benchSteering(model);
  const sides = Object.fromEntries(plan.batchRows.map((rows) => {
    const strengths = Array.from({ length: rows }, (_, i) => [{ layer, vector: vector.map((v) => v * i) }]);
    return [String(rows), () => decodeStepsPerSecond(model, strengths, plan.steps)];
  }));
  const rates = await interleave(plan.repeats, sides);
  const oneRow = median(rates[String(plan.batchRows[0])]);
  const rows = plan.batchRows.map((count) => {
    const stepsPerSecond = median(rates[String(count)]);
    return { rows: count, stepsPerSecond, timeVsOneRow: oneRow / stepsPerSecond, speedupVsSeparateRuns: (count * stepsPerSecond) / oneRow };
  });
  const four = rows.find((r) => r.rows === 4);
  return { rows, fourRowsTimeVsOne: four?.timeVsOneRow, target: TARGETS.fourRowsTime };
}

/** 4. Prompts per second through hidden-state capture at every layer, batched (16) vs one at a time. */
export async function measureCapture(model: SteerableModel, plan: BenchPlan) {
  const random = createRng(7);
  const vocab = model.vocabSize;
  const prompts = Array.from({ length: plan.capturePrompts }, () => Array.from({ length: 8 + Math.floor(random() * 17) }, () => Math.floor(random() * vocab)));
  const layers = model.analysis.layers.map((site) => site.layer);
  const rate = async (batchSize: number) => {
    const started = performance.now();
    await captureHiddenStates(model, { prompts, layers, reduce: 'mean', batchSize });
    return (prompts.length * 1000) / (performance.now() - started);
  };
  const rates = await interleave(plan.repeats, { batched: () => rate(16), single: () => rate(1) });
  const batched = median(rates.batched);
  const single = median(rates.single);
  return { prompts: prompts.length, batched, single, ratio: batched / single };
}

/**
 * 6. The steerability pass (every layer, or a coarse pass and its refinement on deep models, at ±0.25) vs the
 * extraction it follows (capture at every layer and the fit), on the same random examples: seconds and ratio.
 */
export async function measureSteerability(model: SteerableModel, plan: BenchPlan) {
  const random = createRng(11);
  const vocab = model.vocabSize;
  const side = () => Array.from({ length: plan.scoringExamples ?? 0 }, () => Array.from({ length: 8 + Math.floor(random() * 17) }, () => Math.floor(random() * vocab)));
  const [positive, negative] = [side(), side()];
  const layers = model.analysis.layers.map((site) => site.layer);
  let directions: ReturnType<typeof fitDirections> | undefined;
  let scoredLayers = 0;
  const times = await interleave(1, { // one timed round after the untimed one: each side takes seconds on a 135M model
    extraction: async () => {
      const started = performance.now();
      const capture = (prompts: number[][]) => captureHiddenStates(model, { prompts, layers, reduce: 'mean' });
      directions = fitDirections(await capture(positive), await capture(negative));
      return performance.now() - started;
    },
    steerability: async () => {
      const started = performance.now();
      // Scored as the app scores text sets: the first tokens after the part a pair shares.
      const result = await scoreSteerability(model, directions!.layers, textScoringExamples(positive, negative));
      scoredLayers = result.layers.length;
      return performance.now() - started;
    },
  });
  const extraction = median(times.extraction) / 1000;
  const steerability = median(times.steerability) / 1000;
  return { examplesPerSide: positive.length, scoredLayers, extractionSeconds: extraction, steerabilitySeconds: steerability, ratio: steerability / extraction, target: TARGETS.steerabilityVsExtraction };
}

/**
 * 7. "Compute direction" with the misaligned-persona preset on a chat model (the page's defaults: two sampled
 * answers of 48 tokens per question and side, then capture): every answer a row of one batch vs one question
 * at a time (its two samples side by side, the recipe before batching), at the same seed. Runs once each:
 * it takes seconds to minutes. The directions' cosine at every layer says whether they are the same.
 */
export async function measurePersonaExtraction(model: SteerableModel) {
  const set = contrastiveSetOf(presetById('misaligned-persona'));
  const timed = async (answerRows?: number) => {
    const started = performance.now();
    const extraction = await extractDirections(model, set, { answerRows, seed: 0 });
    return { seconds: (performance.now() - started) / 1000, extraction };
  };
  const perQuestion = await timed(2);
  const batched = await timed();
  const cosines = batched.extraction.layers.map((layer, i) => {
    const other = perQuestion.extraction.layers[i].direction;
    return dot(layer.direction, other) / (vectorLength(layer.direction) * vectorLength(other));
  });
  return {
    questions: set.kind === 'persona' ? set.questions.length : 0,
    secondsBatched: batched.seconds,
    secondsOneQuestionAtATime: perQuestion.seconds,
    speedup: perQuestion.seconds / batched.seconds,
    cosineByLayer: cosines,
  };
}

/** Wraps `session.run` to add up the milliseconds spent inside it: the rest of a generation is its loop's own time. */
export function timeSessionRuns(session: { run: (...args: never[]) => Promise<unknown> }, total = { ms: 0 }): { ms: number } {
  const run = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>;
  (session as { run: unknown }).run = async (...args: unknown[]) => {
    const started = performance.now();
    try {
      return await run(...args);
    } finally {
      total.ms += performance.now() - started;
    }
  };
  return total;
}

/**
 * 2. Our generation loop (`generate`, instrumented graph, one unsteered row) vs Transformers.js `generate()` on
 * the unmodified graph: same prompt, greedy, same number of new tokens, prefill included on both sides.
 * `model` must not stop at an EOS token (no eos ids), as Transformers.js is held to the count by min_new_tokens.
 */
export async function measureAgainstTransformersJs(model: SteerableModel, transformers: TransformersModel, plan: BenchPlan) {
  const newTokens = plan.generateTokens;
  let ours: number[] = [];
  let theirs: number[] = [];
  // Where the time goes: inside ONNX Runtime's run() (the same runtime on both sides), or in the loop around it.
  const ourRuns = timeSessionRuns(model.session);
  const split = { tiller: [] as number[], transformersJs: [] as number[] };
  const timed = async (side: keyof typeof split, runs: { ms: number }, generateTokens: () => Promise<void>) => {
    const [started, before] = [performance.now(), runs.ms];
    await generateTokens();
    const elapsed = performance.now() - started;
    split[side].push((elapsed - (runs.ms - before)) / newTokens);
    return (newTokens * 1000) / elapsed;
  };
  const rates = await interleave(plan.repeats, {
    tiller: () => timed('tiller', ourRuns, async () => {
      ours = (await generate(model, { promptIds: PROMPT, maxNewTokens: newTokens })).rows[0].tokenIds;
    }),
    transformersJs: () => timed('transformersJs', transformers.runs, async () => {
      theirs = await transformers.generate(PROMPT, newTokens);
    }),
  });
  const firstDifference = ours.findIndex((token, i) => token !== theirs[i]);
  const tiller = median(rates.tiller);
  const transformersJs = median(rates.transformersJs);
  return {
    newTokens,
    tokensPerSecond: { tiller, transformersJs },
    ratio: tiller / transformersJs,
    target: TARGETS.againstTransformersJs,
    /** Milliseconds per token outside session.run (the loop's own cost; the first, untimed round included). */
    loopMsPerToken: { tiller: median(split.tiller), transformersJs: median(split.transformersJs) },
    runMsPerToken: { tiller: 1000 / tiller - median(split.tiller), transformersJs: 1000 / transformersJs - median(split.transformersJs) },
    sameTokens: ours.length === theirs.length && firstDifference < 0,
    firstDifference: firstDifference < 0 && ours.length === theirs.length ? undefined : firstDifference < 0 ? Math.min(ours.length, theirs.length) : firstDifference,
  };
}

/**
 * 9. The fused graph (attention, rotary and RMSNorm as fused ops, onnx/fusion.ts) against the same instrumentation
 * unfused: decode tokens/s with the middle layer steered, and whether greedy decoding gives the same tokens.
 */
export async function measureFusion(fused: SteerableModel, unfused: SteerableModel, applied: string[], plan: BenchPlan) {
  const { layer, vector } = benchSteering(fused);
  const steered = [[{ layer, vector }]];
  const rates = await interleave(plan.repeats, {
    fused: () => decodeStepsPerSecond(fused, steered, plan.steps),
    unfused: () => decodeStepsPerSecond(unfused, steered, plan.steps),
  });
  const greedy = async (model: SteerableModel) => (await generate(model, { promptIds: PROMPT, maxNewTokens: 16, rows: steered })).rows[0].tokenIds;
  const [ours, reference] = [await greedy(fused), await greedy(unfused)];
  const tokensPerSecond = { fused: median(rates.fused), unfused: median(rates.unfused) };
  return { applied, tokensPerSecond, ratio: tokensPerSecond.fused / tokensPerSecond.unfused, sameTokens: ours.join() === reference.join() };
}

/** Items 1–4, 6 and 9 on one model (item 1 unless `only` names items, the others as the plan says): `original` is the unmodified graph, `instrumented` the edited one as the engine runs it (fused where fusion applied; `unfused` then beside it), no EOS ids. */
export async function measureModel(
  original: SteerableModel, instrumented: SteerableModel, plan: BenchPlan, transformers?: TransformersModel,
  unfused?: { model: SteerableModel; applied: string[] },
) {
  const wanted = (item: NonNullable<BenchPlan['only']>[number]) => !plan.only || plan.only.includes(item);
  for (const started = performance.now(); performance.now() - started < (plan.warmupSeconds ?? 0) * 1000; ) {
    await decodeStepsPerSecond(original, undefined, plan.steps);
  }
  return {
    steering: plan.only && plan.only.length > 0 ? undefined : await measureSteeringOverhead(original, instrumented, plan),
    againstTransformersJs: transformers && wanted('againstTransformersJs') ? await measureAgainstTransformersJs(instrumented, transformers, plan) : undefined,
    batchedStrengths: wanted('batchedStrengths') ? await measureBatchedStrengths(instrumented, plan) : undefined,
    capture: wanted('capture') ? await measureCapture(instrumented, plan) : undefined,
    steerability: wanted('steerability') && plan.scoringExamples ? await measureSteerability(instrumented, plan) : undefined,
    fusion: unfused && wanted('fusion') ? await measureFusion(instrumented, unfused.model, unfused.applied, plan) : undefined,
  };
}

export type ModelMeasurements = Awaited<ReturnType<typeof measureModel>>;
