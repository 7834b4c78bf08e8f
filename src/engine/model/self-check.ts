/**
 * The cheap part of `tiller check`, run on every load: on a few fixed random tokens, one steered row
 * beside one unsteered row. It proves on the model the user brought that
 *  - the unsteered row of a batch equals the model run alone (rows are independent, or run separately);
 *  - steering layer L by v moves L's residual by exactly v, and leaves layer L−1's untouched;
 *  - the steered row's logits move (the steered tensor is on the way to the output).
 * Comparing with the unmodified graph needs a second session (double the memory): `tiller check` does that.
 */
import { createRng } from '../generation/sampling.ts';
import { TensorType } from '../onnx/model.ts';
import type { SelfCheckResult, SteerableModel } from './steerable-model.ts';

/** Unit roundoff of the residual's element type. */
export const EPSILON = { [TensorType.FLOAT]: 2 ** -23, [TensorType.FLOAT16]: 2 ** -10 } as Record<number, number>;

export async function selfCheck(model: SteerableModel, options: { seed?: number; tokens?: number } = {}): Promise<SelfCheckResult> {
  const started = performance.now();
  try {
    return await runChecks(model, options, started);
  } catch (error) {
    const message = `steering check could not run: ${(error as Error).message}`;
    return { ok: false, message, checks: [], milliseconds: performance.now() - started };
  }
}

async function runChecks(model: SteerableModel, options: { seed?: number; tokens?: number }, started: number): Promise<SelfCheckResult> {
  const random = createRng(options.seed ?? 4321);
  const tokens = Array.from({ length: options.tokens ?? 4 }, () => Math.floor(random() * model.vocabSize));
  const { layers, hiddenSize } = model.analysis;
  const site = layers[Math.floor(layers.length / 2)];
  const earlier = Math.max(0, site.layer - 1);
  const watched = [...new Set([earlier, site.layer])];

  const alone = await model.forward({ tokens: [tokens], logits: 'last', hiddenLayers: watched });
  const before = alone.hidden.get(site.layer)!;
  const scale = rms(before);
  const vector = Float32Array.from({ length: hiddenSize }, () => (random() * 2 - 1) * scale);
  const pair = await model.forward({
    tokens: [tokens, tokens], logits: 'last', hiddenLayers: watched, steering: [[], [{ layer: site.layer, vector }]],
  });

  const checks: SelfCheckResult['checks'] = [];
  const add = (name: string, error: number, tolerance: number) => checks.push({ name, error, tolerance, ok: error <= tolerance });
  const logits = alone.logits!;
  const rowLogits = (row: number) => pair.logits!.subarray(row * logits.length, (row + 1) * logits.length);
  const rowHidden = (layer: number, row: number) => pair.hidden.get(layer)!.subarray(row * before.length, (row + 1) * before.length);
  const epsilon = EPSILON[site.elemType] ?? EPSILON[TensorType.FLOAT];
  add('the unsteered row of a batch has the logits of the model run alone', maxAbsDiff(rowLogits(0), logits), 64 * epsilon * Math.max(1, maxAbs(logits)));

  const after = rowHidden(site.layer, 1);
  let moveError = 0;
  for (let i = 0; i < after.length; i++) moveError = Math.max(moveError, Math.abs(after[i] - before[i] - vector[i % hiddenSize]));
  add(`steering layer ${site.layer} by v moves its residual by v`, moveError, 8 * epsilon * (maxAbs(before) + maxAbs(vector)));
  if (earlier !== site.layer) {
    const earlierAlone = alone.hidden.get(earlier)!;
    add(`steering layer ${site.layer} leaves layer ${earlier} as it was`, maxAbsDiff(rowHidden(earlier, 1), earlierAlone), 64 * epsilon * Math.max(1, maxAbs(earlierAlone)));
  }
  // Reaching the logits: a vector as long as the residual itself must move them well beyond rounding.
  const moved = maxAbsDiff(rowLogits(1), logits);
  const floor = 8 * epsilon * Math.max(1, maxAbs(logits));
  checks.push({ name: 'the steered row\'s logits move', error: moved, tolerance: floor, ok: moved > floor });

  const failed = checks.filter((check) => !check.ok);
  return {
    ok: failed.length === 0,
    message: failed.length === 0
      ? 'steering verified exact on this model'
      : `steering check failed: ${failed.map((check) => `${check.name} (off by ${check.error.toExponential(2)}, tolerance ${check.tolerance.toExponential(2)})`).join('; ')}`,
    checks,
    milliseconds: performance.now() - started,
  };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

export function maxAbs(values: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i]));
  return max;
}

export function rms(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i] * values[i];
  return Math.sqrt(sum / values.length);
}
