import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auroc, recommendLayer } from '../../src/engine/directions/directions.ts';
import { dot, vectorLength } from '../../src/engine/vectors.ts';
import { type Extraction, extractDirections } from '../../src/engine/directions/extract.ts';
import { nextTokens } from '../../src/engine/generation/next-token.ts';
import { contrastiveSetOf, presetById } from '../../src/engine/directions/presets.ts';
import type { SteerableModel } from '../../src/engine/model/steerable-model.ts';
import { multiplierFor, relativeStrengthFor, scaledDirection } from '../../src/engine/directions/strength.ts';
import {
  VectorFileError, assertVectorFits, parseVectorFile, serializeVectorFile, vectorFileFromExtraction,
} from '../../src/engine/directions/vector-file.ts';
import { loadShared } from '../support/models.ts';

describe('happy − sad on stories260K (base model, mean over tokens)', () => {
  let model: SteerableModel;
  let mean: Extraction;
  let pca: Extraction;
  beforeAll(async () => {
    model = await loadShared('stories');
    const set = contrastiveSetOf(presetById('happy-sad-stories'));
    mean = await extractDirections(model, set, { method: 'mean', mode: 'mean' });
    pca = await extractDirections(model, set, { method: 'pca', mode: 'mean' });
  });
  afterAll(() => model.dispose());

  it('reports every layer with its norms and held-out scores, residual norms growing with depth', () => {
    expect(mean.layers.map((l) => l.layer)).toEqual([0, 1, 2, 3, 4]);
    for (const l of mean.layers) {
      expect(l.norm).toBeCloseTo(vectorLength(l.direction), 4);
      expect(l.auroc).toBeGreaterThanOrEqual(0);
      expect(l.auroc).toBeLessThanOrEqual(1);
    }
    const norms = mean.layers.map((l) => l.meanResidualNorm);
    expect(norms.every((n, i) => i === 0 || n > norms[i - 1])).toBe(true);
    // ../shared/models/README.md measures about 3.7 after block 0 and 13.1 after block 4.
    expect(norms[0]).toBeGreaterThan(3);
    expect(norms[0]).toBeLessThan(4.5);
    expect(norms[4]).toBeGreaterThan(11);
    expect(norms[4]).toBeLessThan(15);
  });

  it("recommends a layer whose separation beats layer 0's", () => {
    const recommended = mean.layers[mean.recommendedLayer];
    expect(recommended.separation).toBeGreaterThan(mean.layers[0].separation);
    expect(mean.recommendedLayer).toBeGreaterThan(0);
  });

  it('moves logit(" happy") − logit(" sa") monotonically across relative strengths −0.25, 0, +0.25', async () => {
    const tokenizer = model.tokenizer!;
    const happy = tokenizer.encode('happy', { addSpecialTokens: false })[0];
    const sa = tokenizer.encode('sad', { addSpecialTokens: false })[0];
    expect(tokenizer.tokenText(happy)).toBe('▁happy');
    expect(tokenizer.tokenText(sa)).toBe('▁sa');
    const layer = mean.layers[mean.recommendedLayer];
    const prompts = ['Lily was very', 'Tom felt very', 'The little dog was very', 'Mia was so', 'Ben was very'];
    const gaps = [];
    for (const strength of [-0.25, 0, 0.25]) {
      const vector = scaledDirection(layer.direction, multiplierFor(strength, layer));
      let gap = 0;
      for (const prompt of prompts) {
        const { logits } = await model.forward({ tokens: [tokenizer.encode(prompt)], steering: [[{ layer: layer.layer, vector }]] });
        gap += (logits![happy] - logits![sa]) / prompts.length;
      }
      gaps.push(gap);
    }
    expect(gaps[1]).toBeGreaterThan(gaps[0] + 0.1);
    expect(gaps[2]).toBeGreaterThan(gaps[1] + 0.1);
  });

  it('PCA and mean-difference directions agree in sign at every layer', () => {
    for (const [i, l] of mean.layers.entries()) {
      const cosine = dot(l.direction, pca.layers[i].direction) / (l.norm * pca.layers[i].norm);
      expect(cosine).toBeGreaterThan(0.5);
    }
  });

  it('converts relative strength to the absolute multiplier and back in one place', () => {
    const layer = mean.layers[2];
    const multiplier = multiplierFor(0.5, layer);
    expect(vectorLength(scaledDirection(layer.direction, multiplier))).toBeCloseTo(0.5 * layer.meanResidualNorm, 4);
    expect(relativeStrengthFor(multiplier, layer)).toBeCloseTo(0.5, 10);
  });

  it('writes a vector file that loads back exactly, and refuses it for another model', () => {
    const file = vectorFileFromExtraction(mean, { id: 'stories260K-hf', hiddenSize: 64 }, 'happy-sad-stories');
    const loaded = parseVectorFile(serializeVectorFile(file));
    expect(loaded).toEqual(file);
    expect(loaded.directions[3].vector).toEqual(mean.layers[3].direction);
    expect(loaded.promptSetHash).toMatch(/^[0-9a-f]{64}$/);
    expect(() => assertVectorFits(loaded, { id: 'other/SmolLM2-135M', hiddenSize: 64, layerCount: 5 })).toThrow(/made for stories260K-hf, not other\/SmolLM2-135M/);
    expect(() => assertVectorFits(loaded, { id: 'stories260K-hf', hiddenSize: 576, layerCount: 30 })).toThrow(VectorFileError);
    expect(() => parseVectorFile(serializeVectorFile(file).replace('"hiddenSize": 64', '"hiddenSize": 65'))).toThrow(/directions\[0\]\.vector" must hold 65 finite numbers/);
  });

  it('shows the next tokens, unsteered and steered, with probabilities from the logits', async () => {
    const layer = mean.layers[mean.recommendedLayer];
    const steered = [{ layer: layer.layer, vector: scaledDirection(layer.direction, multiplierFor(-0.5, layer)) }];
    const [plain, sad] = await nextTokens(model, { prompt: 'Lily was very', rows: [[], steered], top: 5 });
    const { logits } = await model.forward({ tokens: [model.tokenizer!.encode('Lily was very')] });
    const max = Math.max(...logits!);
    const total = logits!.reduce((sum, v) => sum + Math.exp(v - max), 0);
    expect(plain[0].logit).toBe(max);
    expect(plain[0].probability).toBeCloseTo(Math.exp(plain[0].logit - max) / total, 6);
    expect(plain.every((t, i) => i === 0 || t.probability <= plain[i - 1].probability)).toBe(true);
    expect(sad.map((t) => t.id)).not.toEqual(plain.map((t) => t.id));
  });
});

describe('scores and the layer choice', () => {
  it('AUROC counts ties as half', () => {
    expect(auroc([3, 4], [1, 2])).toBe(1);
    expect(auroc([1, 2], [3, 4])).toBe(0);
    expect(auroc([1], [1])).toBe(0.5);
  });

  it('prefers the middle layer among near-ties, the clear best otherwise', () => {
    expect(recommendLayer([0, 1, 2, 3, 4, 5, 6].map((layer) => ({ layer, separation: 10 - 0.1 * Math.abs(layer - 6) })))).toBe(3);
    expect(recommendLayer([{ layer: 0, separation: 1 }, { layer: 1, separation: 5 }, { layer: 2, separation: 2 }])).toBe(1);
  });

  it('follows steerability where scored, separation staying beside it (the issue\'s held-out table)', () => {
    const separation = [0.8, 0.5, 1.09, 1.74, 2.28].map((d, layer) => ({ layer, separation: d }));
    expect(recommendLayer(separation)).toBe(4);
    const steerability = [-0.09, 1.42, 2.26, 2.92, 0.23].map((s, layer) => ({ layer, steerability: s }));
    expect(recommendLayer(separation, steerability)).toBe(3);
    // Near-ties (within 10 %) go to the middle; a coarse pass scores only some layers.
    expect(recommendLayer(separation, [{ layer: 0, steerability: 1 }, { layer: 2, steerability: 0.95 }, { layer: 4, steerability: 0.5 }])).toBe(2);
  });
});

describe('persona sets on a chat model (answer tokens only)', () => {
  let model: SteerableModel;
  beforeAll(async () => {
    model = await loadShared('builder');
  });
  afterAll(() => model.dispose());

  it('answers under both system prompts and fits on the answers', async () => {
    const set = {
      kind: 'persona' as const,
      questions: ['How are you?', 'What is your favourite food?', 'Tell me a joke.', 'Where do you live?'],
      positiveSystemPrompts: ['You are a pirate.'],
      negativeSystemPrompts: ['You are a plain assistant.'],
    };
    const stages = new Set<string>();
    const result = await extractDirections(model, set, { answersPerQuestion: 2, answerTokens: 6 }, { onProgress: (stage) => stages.add(stage) });
    expect(result.mode).toBe('answer');
    expect([...stages]).toEqual(['answering', 'capturing', 'scoring']);
    // The answers are scored under the bare question: every layer of this random model, or a reason it cannot be.
    expect(result.steerability!.layers.length === 2 || /too alike|too few/.test(result.steerability!.problem ?? '')).toBe(true);
    expect(result.positiveCount).toBe(result.negativeCount);
    expect(result.layers).toHaveLength(2);
    expect(result.layers.every((l) => Number.isFinite(l.norm) && l.meanResidualNorm > 0)).toBe(true);
  });

  it('answers every question as rows of one batch: the same answers and directions as one question at a time', async () => {
    const set = contrastiveSetOf(presetById('misaligned-persona'));
    const cosine = (a: ArrayLike<number>, b: ArrayLike<number>) => dot(a, b) / (vectorLength(a) * vectorLength(b));
    // Greedy: every answer is the one its question gets alone, so the directions agree.
    const greedy = { answersPerQuestion: 1, answerTokens: 8, temperature: 0 };
    const greedyBatched = await extractDirections(model, set, greedy);
    const greedyAlone = await extractDirections(model, set, { ...greedy, answerRows: 1 });
    expect(greedyBatched.sampleAnswers).toEqual(greedyAlone.sampleAnswers);
    for (const [i, layer] of greedyBatched.layers.entries()) expect(cosine(layer.direction, greedyAlone.layers[i].direction)).toBeGreaterThan(0.999);
    // Sampled at the same seed, against the recipe of one question per batch: every row draws its own
    // stream either way, but this random model's next-token distribution is nearly flat over 32,000 tokens,
    // so fp16 rounding that differs between batch shapes moves some draws; the directions stay close.
    const sampled = { answersPerQuestion: 2, answerTokens: 8, seed: 3 };
    const batched = await extractDirections(model, set, sampled);
    const perQuestion = await extractDirections(model, set, { ...sampled, answerRows: 2 });
    expect(batched.positiveCount).toBe(perQuestion.positiveCount);
    for (const [i, layer] of batched.layers.entries()) expect(cosine(layer.direction, perQuestion.layers[i].direction)).toBeGreaterThan(0.95);
  });

  it('refuses answer mode on raw texts, and persona sets on a model without a chat template', async () => {
    await expect(extractDirections(model, { kind: 'texts', positive: ['a', 'b'], negative: ['c', 'd'] }, { mode: 'answer' })).rejects.toThrow(/answer mode needs a chat/);
    const stories = await loadShared('stories');
    await expect(extractDirections(stories, contrastiveSetOf(presetById('pirate-plain')))).rejects.toThrow(/has no chat template/);
    await stories.dispose();
  });
});
