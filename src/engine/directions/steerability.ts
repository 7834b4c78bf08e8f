/**
 * How much steering at a layer changes what the model does, not only how well the layer separates: steer
 * layer L at +s and at −s and measure, teacher-forced, how much more likely the model finds the positive
 * examples' continuations than the negative ones (mean log-probability per token). The same passes give the
 * examples' perplexity under steering (coherence), and a grid search gives the largest strength that keeps
 * it within 1.5× of unsteered. Takes any per-layer directions with their residual scales (an extraction's,
 * or one computed from a fine-tune) and token ids, so callers decide what the examples are.
 */
import type { SteerableModel, SteeringRow } from '../model/steerable-model.ts';
import { yieldToEventLoop } from '../generation/yield.ts';
import { directionMultiplier, scaledDirection } from './strength.ts';

/** One example: `context` is read, `continuation` scored (each token predicted from everything before it). */
export interface ScoringExample {
  context: number[];
  continuation: number[];
}

export interface ScoringExamples {
  positive: ScoringExample[];
  negative: ScoringExample[];
}

/** A direction at one layer, with the scale that makes strengths relative (absent: strengths are multipliers). */
export interface ScoredDirection {
  layer: number;
  direction: ArrayLike<number>;
  norm: number;
  meanResidualNorm?: number;
}

export interface LayerSteerability {
  layer: number;
  /** Nats per token: (positive − negative mean log-probability) under +s minus the same under −s. */
  steerability: number;
  /** The examples' perplexity under +s and under −s, each over the unsteered perplexity. */
  perplexityRatio: { positive: number; negative: number };
}

export interface SteerabilityResult {
  /** The relative strength s that was applied as +s and −s. */
  strength: number;
  /** Scored layers, in layer order (a coarse pass and its refinement on deep models). */
  layers: LayerSteerability[];
  /** Perplexity of all examples' continuations, unsteered. */
  unsteeredPerplexity: number;
  /** Why the scores cannot choose a layer (too few or too uniform examples), when they cannot. */
  problem?: string;
  milliseconds: number;
}

export interface SteerabilityOptions {
  /** Relative strength (default 0.25). */
  strength?: number;
  /** Layers to score (default: every layer on models up to 8 layers; every 2nd or 3rd on deeper ones, then
   *  the neighbours of the best). */
  layers?: number[];
  /** Most logits (rows × positions × vocabulary) one forward pass may return (default 2²⁴ floats, 64 MB). */
  logitsBudget?: number;
  /** Most examples scored per side, spread evenly over the list (default 16: persona sets answer each
   *  question twice, and every example costs a forward pass per layer and sign). */
  maxExamples?: number;
}

export interface SteerabilityControls {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** Fewer scorable examples per side than this and the score is noise. */
export const MIN_SCORING_EXAMPLES = 3;
/** Below this best score (nats per token) no layer measurably steers the examples: the set is too uniform. */
export const MIN_STEERABILITY = 0.01;
/** The coherent range: perplexity at most this many times the unsteered one, on this grid of strengths. */
export const COHERENCE_LIMIT = 1.5;
export const STRENGTH_GRID = Array.from({ length: 20 }, (_, i) => Math.round((i + 1) * 5) / 100);

export async function scoreSteerability(
  model: SteerableModel,
  directions: ScoredDirection[],
  examples: ScoringExamples,
  options: SteerabilityOptions = {},
  controls: SteerabilityControls = {},
): Promise<SteerabilityResult> {
  const started = performance.now();
  const strength = options.strength ?? 0.25;
  const { positive, negative } = scorable(examples, options.maxExamples);
  const byLayer = new Map(directions.map((d) => [d.layer, d]));
  const unscored = (problem: string): SteerabilityResult => ({ strength, layers: [], unsteeredPerplexity: NaN, problem, milliseconds: performance.now() - started });
  if (positive.length < MIN_SCORING_EXAMPLES || negative.length < MIN_SCORING_EXAMPLES) {
    return unscored(`too few examples to measure steering: ${positive.length} positive and ${negative.length} negative with text to score; give at least ${MIN_SCORING_EXAMPLES} per side (a dozen is better)`);
  }
  if (directions.some((d) => !(d.norm > 0))) {
    return unscored('the two example sets gave the same mean residual (a zero-length direction): make the positive and negative examples differ in the trait');
  }

  const all = [...positive, ...negative];
  const scoreLayers = async (layers: number[], total: number, doneBefore: number) => {
    const rows: ScoringRow[] = [];
    for (const layer of layers) {
      for (const sign of [1, -1]) {
        const direction = byLayer.get(layer)!;
        const steering: SteeringRow = [{ layer, vector: scaledDirection(direction.direction, directionMultiplier(sign * strength, direction)) }];
        for (const example of all) rows.push({ example, steering });
      }
    }
    const logProbabilities = await meanLogProbabilities(model, rows, options.logitsBudget, {
      signal: controls.signal,
      onProgress: (done) => controls.onProgress?.(doneBefore + done, total),
    });
    // Rows were laid out layer by layer: +s for every example, then −s.
    return layers.map((layer, index): LayerSteerability => {
      const at = (sign: number) => logProbabilities.slice((2 * index + (sign > 0 ? 0 : 1)) * all.length, (2 * index + (sign > 0 ? 1 : 2)) * all.length);
      const [up, down] = [at(1), at(-1)];
      const advantage = (values: number[]) => mean(values.slice(0, positive.length)) - mean(values.slice(positive.length));
      return {
        layer,
        steerability: advantage(up) - advantage(down),
        perplexityRatio: { positive: Math.exp(unsteeredLogProbability - mean(up)), negative: Math.exp(unsteeredLogProbability - mean(down)) },
      };
    });
  };

  const allLayers = options.layers ?? directions.map((d) => d.layer);
  for (const layer of allLayers) if (!byLayer.has(layer)) throw new Error(`no direction for layer ${layer} to score`);
  const stride = options.layers ? 1 : allLayers.length > 12 ? 3 : allLayers.length > 8 ? 2 : 1;
  const coarse = allLayers.filter((_, i) => i % stride === 0);
  // Progress counts rows: the unsteered pass, the coarse pass and (deep models) the refinement's most.
  const total = all.length * (1 + 2 * coarse.length + (stride > 1 ? 2 * 2 * (stride - 1) : 0));
  const unsteeredLogProbability = mean(await meanLogProbabilities(model, all.map((example) => ({ example })), options.logitsBudget, {
    signal: controls.signal,
    onProgress: (done) => controls.onProgress?.(done, total),
  }));
  const scored = await scoreLayers(coarse, total, all.length);
  if (stride > 1) {
    const best = scored.reduce((a, b) => (b.steerability > a.steerability ? b : a));
    const index = allLayers.indexOf(best.layer);
    const around = allLayers.slice(Math.max(0, index - stride + 1), index + stride).filter((layer) => !coarse.includes(layer));
    scored.push(...(await scoreLayers(around, total, all.length * (1 + 2 * coarse.length))));
    scored.sort((a, b) => a.layer - b.layer);
  }
  controls.onProgress?.(total, total);
  const bestScore = Math.max(...scored.map((l) => l.steerability));
  return {
    strength,
    layers: scored,
    unsteeredPerplexity: Math.exp(-unsteeredLogProbability),
    problem: bestScore < MIN_STEERABILITY
      ? `steering does not move these examples at any layer (best ${bestScore.toFixed(3)} nats per token at ±${strength}): the positive and negative examples are too alike; make them differ clearly in the trait`
      : undefined,
    milliseconds: performance.now() - started,
  };
}

/** The steerability pass's measurement at one layer, as a point of the coherent-range search. */
export function measuredCoherence(result: SteerabilityResult, layer: number): { strength: number; perplexityRatio: number } | undefined {
  const scored = result.layers.find((l) => l.layer === layer);
  return scored && { strength: result.strength, perplexityRatio: Math.max(scored.perplexityRatio.positive, scored.perplexityRatio.negative) };
}

export interface CoherentRange {
  layer: number;
  /** Largest grid strength whose +s and −s both keep perplexity within the limit (0: not even the smallest). */
  strength: number;
  /** The grid strengths tried, with the worse of the two perplexity ratios. */
  tried: { strength: number; perplexityRatio: number }[];
}

/**
 * The coherent range at one layer: a binary search over STRENGTH_GRID (perplexity grows with |s|), each step
 * one batch of every example under +s and −s.
 */
export async function coherentRange(
  model: SteerableModel,
  direction: ScoredDirection,
  examples: ScoringExamples,
  options: Pick<SteerabilityOptions, 'logitsBudget' | 'maxExamples'> & {
    unsteeredPerplexity?: number;
    /** A grid strength already measured at this layer (the steerability pass's ±s): the search starts from it. */
    measured?: { strength: number; perplexityRatio: number };
  } = {},
  controls: SteerabilityControls = {},
): Promise<CoherentRange> {
  const { positive, negative } = scorable(examples, options.maxExamples);
  const all = [...positive, ...negative];
  if (all.length === 0) throw new Error('no examples with text to score: cannot measure coherence');
  const unsteered = options.unsteeredPerplexity
    ?? Math.exp(-mean(await meanLogProbabilities(model, all.map((example) => ({ example })), options.logitsBudget, { signal: controls.signal })));
  const tried: CoherentRange['tried'] = [];
  let [ok, failed] = [-1, STRENGTH_GRID.length]; // grid indices: ok coherent (−1: zero), failed not (past the end: untested)
  if (options.measured && STRENGTH_GRID.includes(options.measured.strength)) {
    tried.push(options.measured);
    if (options.measured.perplexityRatio <= COHERENCE_LIMIT) ok = STRENGTH_GRID.indexOf(options.measured.strength);
    else failed = STRENGTH_GRID.indexOf(options.measured.strength);
  }
  const steps = Math.ceil(Math.log2(failed - ok));
  for (let step = 1; failed - ok > 1; step++) {
    const index = Math.floor((ok + failed) / 2);
    const strength = STRENGTH_GRID[index];
    const rows: ScoringRow[] = [];
    for (const sign of [1, -1]) {
      const steering: SteeringRow = [{ layer: direction.layer, vector: scaledDirection(direction.direction, directionMultiplier(sign * strength, direction)) }];
      for (const example of all) rows.push({ example, steering });
    }
    const values = await meanLogProbabilities(model, rows, options.logitsBudget, { signal: controls.signal });
    const ratio = Math.max(Math.exp(-mean(values.slice(0, all.length))), Math.exp(-mean(values.slice(all.length)))) / unsteered;
    tried.push({ strength, perplexityRatio: ratio });
    if (ratio <= COHERENCE_LIMIT) ok = index;
    else failed = index;
    controls.onProgress?.(step, steps);
  }
  return { layer: direction.layer, strength: ok < 0 ? 0 : STRENGTH_GRID[ok], tried: tried.sort((a, b) => a.strength - b.strength) };
}

/** The examples with text to score, at most `max` per side, spread evenly over each list. */
export function scorable(examples: ScoringExamples, max = 16): ScoringExamples {
  const pick = (list: ScoringExample[]) => {
    const usable = list.filter((e) => e.continuation.length > 0 && e.context.length > 0);
    return usable.length <= max ? usable : Array.from({ length: max }, (_, i) => usable[Math.floor((i * usable.length) / max)]);
  };
  return { positive: pick(examples.positive), negative: pick(examples.negative) };
}

/** Rows per forward pass at most: one layer of a text set (16 + 16 examples × 2 signs), two of persona answers (8 + 8). */
const MAX_ROWS = 64;

interface ScoringRow {
  example: ScoringExample;
  steering?: SteeringRow;
}

/**
 * Each row's mean log-probability per continuation token, teacher-forced. Rows are sorted by length and
 * right-padded (causal: padding changes nothing read), as many per forward pass as the logits budget allows.
 * The last continuation token is predicted, never read, so it is not fed.
 */
async function meanLogProbabilities(model: SteerableModel, rows: ScoringRow[], logitsBudget = 1 << 24, controls: SteerabilityControls = {}): Promise<number[]> {
  const vocab = model.vocabSize;
  const lengthOf = (row: ScoringRow) => row.example.context.length + row.example.continuation.length - 1;
  const order = rows.map((_, index) => index).sort((a, b) => lengthOf(rows[a]) - lengthOf(rows[b]));
  const result = new Array<number>(rows.length);
  let first = 0;
  while (first < order.length) {
    await yieldToEventLoop();
    if (controls.signal?.aborted) throw new DOMException('the steerability score was cancelled', 'AbortError');
    // The longest row so far sets the width; add rows while the batch's logits fit the budget, and at most
    // MAX_ROWS: a pass is one session.run, which neither progress nor Cancel can enter.
    let end = first + 1;
    while (end < order.length && end - first < MAX_ROWS && (end + 1 - first) * lengthOf(rows[order[end]]) * vocab <= logitsBudget) end++;
    const members = order.slice(first, end);
    const width = lengthOf(rows[members[members.length - 1]]);
    const tokens = members.map((index) => {
      const ids = [...rows[index].example.context, ...rows[index].example.continuation.slice(0, -1)];
      return [...ids, ...new Array(width - ids.length).fill(ids[ids.length - 1])];
    });
    // Logits only from the first position that predicts a scored token: contexts are read, not scored.
    const from = Math.min(...members.map((index) => rows[index].example.context.length)) - 1;
    const { logits } = await model.forward({ tokens, steering: members.map((index) => rows[index].steering ?? []), logits: 'all', logitsFrom: from });
    const positions = width - from;
    members.forEach((index, row) => {
      const { context, continuation } = rows[index].example;
      let sum = 0;
      for (let i = 0; i < continuation.length; i++) {
        // The token at position context.length + i is predicted at the position before it.
        const position = context.length + i - 1 - from;
        const offset = (row * positions + position) * vocab;
        sum += logSoftmaxAt(logits!, offset, vocab, continuation[i]);
      }
      result[index] = sum / continuation.length;
    });
    controls.onProgress?.(end, order.length);
    first = end;
  }
  return result;
}

function logSoftmaxAt(logits: Float32Array, offset: number, vocab: number, token: number): number {
  let max = -Infinity;
  for (let i = offset; i < offset + vocab; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = offset; i < offset + vocab; i++) sum += Math.exp(logits[i] - max);
  return logits[offset + token] - max - Math.log(sum);
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}
