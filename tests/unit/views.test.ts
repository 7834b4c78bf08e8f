// The data behind the "see inside" views: persona meter, separation plot, logit lens, layer × strength
// map and ablation, each checked against a computation by hand on the real models.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auroc } from '../../src/engine/directions/directions.ts';
import { dot, vectorLength } from '../../src/engine/vectors.ts';
import { type Extraction, extractDirections } from '../../src/engine/directions/extract.ts';
import { float16Table } from '../../src/engine/model/float16.ts';
import { directionLogitEffects, directionLogitLens } from '../../src/engine/inside/logit-lens.ts';
import { TensorType, parseModel } from '../../src/engine/onnx/model.ts';
import { contrastiveSetOf, presetById } from '../../src/engine/directions/presets.ts';
import { meterScaleOf, meterValue, tokenProjections } from '../../src/engine/inside/projection.ts';
import type { SteerableModel } from '../../src/engine/model/steerable-model.ts';
import { multiplierFor, scaledDirection } from '../../src/engine/directions/strength.ts';
import { strengthMap } from '../../src/engine/inside/strength-map.ts';
import { loadShared } from '../support/models.ts';
import { sharedGraphPath } from '../support/paths.ts';

const unit = (v: ArrayLike<number>) => Float32Array.from(v, (x) => x / vectorLength(v));
const randomDirection = (size: number, seed: number) => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 12.9898 + seed) * 43758.5453 % 1);

describe('persona meter and separation plot (stories260K, happy − sad)', () => {
  let model: SteerableModel;
  let extraction: Extraction;
  beforeAll(async () => {
    model = await loadShared('stories');
    extraction = await extractDirections(model, contrastiveSetOf(presetById('happy-sad-stories')));
  });
  afterAll(() => model.dispose());

  it("gives each token its residual's projection on the direction, as the hidden states projected by hand", async () => {
    const layer = extraction.recommendedLayer;
    const direction = extraction.layers[layer].direction;
    const ids = model.tokenizer!.encode('Tom was very sad and cried. Then he smiled.');
    const meter = await tokenProjections(model, { contextIds: ids.slice(0, 1), tokenIds: ids.slice(1), layer, direction });
    const hidden = (await model.forward({ tokens: [ids], logits: 'none', hiddenLayers: [layer] })).hidden.get(layer)!;
    const size = model.analysis.hiddenSize;
    expect(meter.map((t) => t.id)).toEqual(ids.slice(1));
    meter.forEach((token, i) => {
      const byHand = dot(hidden.subarray((i + 1) * size, (i + 2) * size), unit(direction));
      expect(token.projection).toBeCloseTo(byHand, 4);
    });
    expect(meter.map((t) => t.text).join('')).toBe(model.tokenizer!.decode(ids, { skipSpecialTokens: true }));
  });

  it('reads generated tokens under their steering: at the steered layer every projection moves by exactly v·û', async () => {
    const layer = extraction.recommendedLayer;
    const { direction, meanResidualNorm, norm } = extraction.layers[layer];
    const vector = scaledDirection(direction, multiplierFor(0.5, { norm, meanResidualNorm }));
    const ids = model.tokenizer!.encode('Once upon a time, there was a little dog.');
    const context = ids.slice(0, 5);
    const tokens = ids.slice(5);
    const plain = await tokenProjections(model, { contextIds: context, tokenIds: tokens, layer, direction });
    const shift = dot(vector, unit(direction));
    for (const steerContext of [true, false]) {
      const steered = await tokenProjections(model, { contextIds: context, tokenIds: tokens, layer, direction, steering: [{ layer, vector }], steerContext });
      steered.forEach((token, i) => expect(token.projection - plain[i].projection).toBeCloseTo(shift, 3));
    }
  });

  it('holds the projections the separation plot draws: the class means differ by the direction length, held-out AUROC as reported', () => {
    for (const layer of extraction.layers) {
      const { positive, negative, heldOutPositive, heldOutNegative } = layer.projections;
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      expect(positive).toHaveLength(extraction.positiveCount);
      expect(heldOutNegative).toHaveLength(extraction.negativeCount);
      // Mean difference: d = mean(pos) − mean(neg), so the projections' means on d/‖d‖ differ by ‖d‖.
      expect(mean(positive) - mean(negative)).toBeCloseTo(layer.norm, 4);
      expect(auroc(heldOutPositive, heldOutNegative)).toBe(layer.auroc);
      const scale = meterScaleOf(layer.projections);
      expect(meterValue(mean(positive), scale)).toBeCloseTo(1, 6);
      expect(meterValue(mean(negative), scale)).toBeCloseTo(-1, 6);
    }
  });

  it("marks sad words below happy ones on the meter", async () => {
    const layer = extraction.recommendedLayer;
    const direction = extraction.layers[layer].direction;
    const scale = meterScaleOf(extraction.layers[layer].projections);
    const read = async (text: string) => {
      const ids = model.tokenizer!.encode(text);
      const meter = await tokenProjections(model, { contextIds: ids.slice(0, 1), tokenIds: ids.slice(1), layer, direction });
      return meter.reduce((sum, t) => sum + meterValue(t.projection, scale), 0) / meter.length;
    };
    expect(await read('Lily was happy. She laughed and played with her friends in the sun.'))
      .toBeGreaterThan(await read('Lily was sad. She cried alone because her dog was lost.'));
  });

  it('maps layers × strengths: coherence is best near strength 0 and breaks down at the ends', async () => {
    const strengths = [-1, -0.5, 0, 0.5, 1];
    const middle = extraction.layers.slice(1, 4);
    const readout = extraction.layers[extraction.recommendedLayer];
    const progress: number[] = [];
    const cells = await strengthMap(model, {
      prompt: 'Once upon a time',
      strengths,
      layers: middle.map((l) => ({ layer: l.layer, vector: l.direction, multiplier: multiplierFor(1, l) })),
      readout: { layer: readout.layer, direction: readout.direction, scale: meterScaleOf(readout.projections) },
      maxNewTokens: 20,
    }, { onProgress: (done) => progress.push(done) });
    expect(cells).toHaveLength(middle.length * strengths.length);
    expect(progress.at(-1)).toBe(cells.length);
    for (const { layer } of middle) {
      const at = (s: number) => cells.find((c) => c.layer === layer && c.strength === s)!;
      // The unsteered model's perplexity of its own greedy text is the floor; steering raises it, most at ±1.
      expect(at(0).perplexity).toBeLessThan(Math.min(at(-0.5).perplexity, at(0.5).perplexity) + 1e-6);
      expect(Math.min(at(-1).perplexity, at(1).perplexity)).toBeGreaterThan(Math.max(at(-0.5).perplexity, at(0.5).perplexity));
      expect(at(0).text).toBe(cells.find((c) => c.layer === middle[0].layer && c.strength === 0)!.text);
    }
  });
});

/** A float initializer's values, embedded or in the external data file beside the graph. */
function readInitializer(file: string, name: string): { values: Float32Array; dims: number[] } {
  const bytes = new Uint8Array(readFileSync(file));
  const tensor = parseModel(bytes).graph.initializers.find((t) => t.name === name)!;
  const external = tensor.externalData!;
  const raw = tensor.rawData
    ? bytes.subarray(tensor.rawData.start, tensor.rawData.end)
    : new Uint8Array(readFileSync(path.join(path.dirname(file), external.location))).subarray(external.offset, external.offset + external.length!);
  const copy = raw.slice();
  const values = tensor.dataType === TensorType.FLOAT16
    ? Float32Array.from(new Uint16Array(copy.buffer), (bits) => float16Table()[bits])
    : new Float32Array(copy.buffer);
  return { values, dims: tensor.dims };
}

describe('logit lens: the direction through the final norm and LM head', () => {
  for (const [name, gammaName, tolerance] of [['stories', 'norm.weight', 1e-3], ['builder', 'model.layers.2.final_norm_layernorm.weight', 0.05]] as const) {
    it(`${name}: every token's effect equals W·(γ ⊙ d/rms(d)) computed by hand, and the ranks follow`, async () => {
      const model = await loadShared(name);
      try {
        const file = sharedGraphPath(name);
        const gamma = readInitializer(file, gammaName).values;
        const head = readInitializer(file, model.analysis.lmHead!.node.inputs[1]);
        const [hidden, vocab] = head.dims;
        const direction = randomDirection(hidden, 3);
        const rms = Math.sqrt(dot(direction, direction) / hidden);
        const normed = Float32Array.from(direction, (v, i) => (v / rms) * gamma[i]);
        const byHand = new Float32Array(vocab);
        for (let k = 0; k < hidden; k++) for (let j = 0; j < vocab; j++) byHand[j] += normed[k] * head.values[k * vocab + j];

        const effects = await directionLogitEffects(model, direction);
        const spread = Math.max(...byHand.map(Math.abs));
        for (let j = 0; j < vocab; j++) expect(Math.abs(effects[j] - byHand[j])).toBeLessThan(tolerance * spread);
        const lens = await directionLogitLens(model, direction, 5);
        const ranked = Array.from(byHand.keys()).sort((a, b) => byHand[b] - byHand[a]);
        if (name === 'stories') {
          expect(lens.raised.map((t) => t.id)).toEqual(ranked.slice(0, 5));
          expect(lens.lowered.map((t) => t.id)).toEqual(ranked.slice(-5).reverse());
        }
        expect(lens.raised[0].effect).toBeGreaterThan(0);
        expect(lens.lowered[0].effect).toBeLessThan(0);
        // −d flips every effect.
        const flipped = await directionLogitEffects(model, direction.map((v) => -v));
        for (let j = 0; j < vocab; j += 97) expect(flipped[j]).toBeCloseTo(-effects[j], 1);
      } finally {
        await model.dispose();
      }
    });
  }
});

describe('ablation: the direction removed from the residual', () => {
  for (const name of ['stories', 'builder'] as const) {
    it(`${name}: leaves every position's residual orthogonal to the direction, at one layer or a range; zeros change nothing`, async () => {
      const model = await loadShared(name, { ablation: true });
      try {
        expect(model.info.ablation).toBe(true);
        const size = model.analysis.hiddenSize;
        const last = model.analysis.layerCount - 1;
        const direction = randomDirection(size, 7);
        const u = unit(direction);
        const tokens = [5, 17, 33, 61, 80, 99];
        const layers = [...Array(model.analysis.layerCount).keys()];
        const fp16 = model.info.residualDtype === 'float16';
        const run = (steering?: { layer: number; vector: Float32Array; operation?: 'add' | 'ablate' }[]) =>
          model.forward({ tokens: [tokens], steering: steering && [steering], logits: 'last', hiddenLayers: layers });
        const plain = await run();
        for (const range of [[0], [last], layers]) {
          // Ablation after an addition at the same layer: the added part along u goes too.
          const ablated = await run(range.flatMap((layer) => [
            { layer, vector: direction.map((v) => v * 0.5) },
            { layer, vector: direction, operation: 'ablate' as const },
          ]));
          for (const layer of range) {
            const residual = ablated.hidden.get(layer)!;
            for (let p = 0; p < tokens.length; p++) {
              const at = residual.subarray(p * size, (p + 1) * size);
              expect(Math.abs(dot(at, u))).toBeLessThan((fp16 ? 2e-2 : 1e-4) * vectorLength(at));
            }
            // What the layer removed is exactly the component along u of what it would have made.
            const before = plain.hidden.get(layer)!;
            if (range.length === 1) {
              const p = tokens.length - 1;
              const original = Float32Array.from(before.subarray(p * size, (p + 1) * size), (v, i) => v + 0.5 * direction[i]);
              const expected = original.map((v, i) => v - dot(original, u) * u[i]);
              const got = residual.subarray(p * size, (p + 1) * size);
              expect(vectorLength(got.map((v, i) => v - expected[i]))).toBeLessThan((fp16 ? 2e-2 : 1e-4) * vectorLength(expected));
            }
          }
          expect(ablated.logits).not.toEqual(plain.logits);
        }
        // Rows that ablate nothing are the plain model, bit for bit.
        const zero = await run([]);
        expect(zero.logits).toEqual(plain.logits);
      } finally {
        await model.dispose();
      }
    });
  }

  it('refuses two ablations at one layer, a zero direction, and a model loaded without ablation', async () => {
    const model = await loadShared('stories');
    const size = model.analysis.hiddenSize;
    try {
      expect(model.info.ablation).toBe(false);
      await expect(model.forward({ tokens: [[1, 2]], steering: [[{ layer: 1, vector: new Float32Array(size).fill(1), operation: 'ablate' }]] }))
        .rejects.toThrow(/without ablation inputs/);
    } finally {
      await model.dispose();
    }
    const ablating = await loadShared('stories', { ablation: true });
    try {
      const ones = new Float32Array(size).fill(1);
      await expect(ablating.forward({ tokens: [[1, 2]], steering: [[{ layer: 1, vector: new Float32Array(size), operation: 'ablate' }]] }))
        .rejects.toThrow(/zero length/);
      await expect(ablating.forward({ tokens: [[1, 2]], steering: [[{ layer: 1, vector: ones, operation: 'ablate' }, { layer: 1, vector: ones, operation: 'ablate' }]] }))
        .rejects.toThrow(/two directions at layer 1/);
    } finally {
      await ablating.dispose();
    }
  });
});
