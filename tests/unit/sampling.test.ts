import { describe, expect, it } from 'vitest';
import { chooseToken, createRng, type SamplingOptions } from '../../src/engine/generation/sampling.ts';

/** Logits whose softmax at temperature 1 is `probabilities`. */
function logitsFor(probabilities: number[]): Float32Array {
  return Float32Array.from(probabilities, Math.log);
}

function randomLogits(size: number, random: () => number): Float32Array {
  return Float32Array.from({ length: size }, () => (random() - 0.5) * 20);
}

/** Frequency of each token over `draws` samples. */
function frequencies(logits: Float32Array, options: SamplingOptions, draws: number, seed = 1): number[] {
  const random = createRng(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[chooseToken(logits, [], options, random)]++;
  return counts.map((count) => count / draws);
}

describe('createRng', () => {
  it('repeats a sequence for the same seed, in [0, 1)', () => {
    const draw = (seed: number) => Array.from({ length: 1000 }, createRng(seed));
    const first = draw(42);
    expect(draw(42)).toEqual(first);
    expect(draw(43)).not.toEqual(first);
    expect(first.every((value) => value >= 0 && value < 1)).toBe(true);
    expect(new Set(first).size).toBe(1000);
  });
});

describe('chooseToken', () => {
  const noRandom = () => {
    throw new Error('greedy must not draw');
  };

  it('is argmax when greedy, the first one on ties', () => {
    const logits = Float32Array.from([0.1, 3, -2, 3, 1]);
    expect(chooseToken(logits, [], {}, noRandom)).toBe(1);
    expect(chooseToken(logits, [], { temperature: 0, topK: 3, topP: 0.5 }, noRandom)).toBe(1);
  });

  it('with top-k 1 is greedy at any temperature', () => {
    const random = createRng(3);
    for (let trial = 0; trial < 200; trial++) {
      const logits = randomLogits(1000, random);
      if (trial % 2 === 0) logits[700] = logits[200] = 11; // a tie for the maximum
      const greedy = chooseToken(logits, [], {}, noRandom);
      for (const temperature of [0.05, 1, 10]) {
        expect(chooseToken(logits, [], { temperature, topK: 1 }, random)).toBe(greedy);
      }
    }
  });

  it('samples from the softmax at the given temperature', () => {
    const probabilities = [0.5, 0.3, 0.2];
    const logits = logitsFor(probabilities);
    const sharpened = probabilities.map((p) => p ** 2);
    const total = sharpened.reduce((a, b) => a + b);
    const observed = frequencies(logits, { temperature: 0.5 }, 20_000);
    observed.forEach((frequency, id) => expect(frequency).toBeCloseTo(sharpened[id] / total, 1));
    expect(Math.abs(observed[0] - sharpened[0] / total)).toBeLessThan(0.015);
  });

  it('keeps only the nucleus under top-p, renormalised', () => {
    const probabilities = [0.07, 0.5, 0.03, 0.25, 0.15];
    // Cumulative, best first: 0.5, 0.75, 0.9 ≥ 0.8, so the nucleus is tokens 1, 3 and 4.
    const observed = frequencies(logitsFor(probabilities), { temperature: 1, topP: 0.8 }, 40_000);
    expect(observed[0]).toBe(0);
    expect(observed[2]).toBe(0);
    for (const id of [1, 3, 4]) expect(Math.abs(observed[id] - probabilities[id] / 0.9)).toBeLessThan(0.015);
  });

  it('keeps at least one token under a tiny top-p', () => {
    const observed = frequencies(logitsFor([0.2, 0.6, 0.2]), { temperature: 1, topP: 0.01 }, 1000);
    expect(observed).toEqual([0, 1, 0]);
  });

  it('applies top-k before top-p, which renormalises within the k', () => {
    const probabilities = [0.4, 0.3, 0.2, 0.1];
    // Top-2 renormalised: 4/7 and 3/7; top-p 0.5 then keeps token 0 alone.
    expect(frequencies(logitsFor(probabilities), { temperature: 1, topK: 2, topP: 0.5 }, 2000)).toEqual([1, 0, 0, 0]);
    // Top-p 0.6 needs both: 4/7 < 0.6.
    const observed = frequencies(logitsFor(probabilities), { temperature: 1, topK: 2, topP: 0.6 }, 20_000);
    expect(observed[2] + observed[3]).toBe(0);
    expect(Math.abs(observed[0] - 4 / 7)).toBeLessThan(0.015);
  });

  it('stays within the top-k and the nucleus on a large vocabulary', () => {
    const random = createRng(11);
    const logits = randomLogits(150_000, random);
    for (let i = 0; i < 300; i++) logits[Math.floor(random() * logits.length)] += 8; // a few hundred likely tokens
    const ranked = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    const weights = ranked.map((id) => Math.exp(logits[id] - logits[ranked[0]]));
    const total = weights.reduce((a, b) => a + b);
    let nucleusSize = 0;
    for (let mass = 0; mass < 0.9 * total; nucleusSize++) mass += weights[nucleusSize];
    expect(nucleusSize).toBeGreaterThan(64); // exercises more than the first batch

    const top50 = new Set(ranked.slice(0, 50));
    const nucleus = new Set(ranked.slice(0, nucleusSize));
    for (let i = 0; i < 50; i++) {
      expect(top50.has(chooseToken(logits, [], { temperature: 1, topK: 50 }, random))).toBe(true);
      expect(nucleus.has(chooseToken(logits, [], { temperature: 1, topP: 0.9 }, random))).toBe(true);
    }
  });

  it('penalises repeated tokens the way transformers does, without touching the logits', () => {
    const logits = Float32Array.from([2, 1.9, -1]);
    const before = logits.slice();
    expect(chooseToken(logits, [], { repetitionPenalty: 1.3 }, noRandom)).toBe(0);
    // 2 / 1.3 ≈ 1.54 < 1.9: the repeated token loses, however often it was repeated.
    expect(chooseToken(logits, [0, 0, 0], { repetitionPenalty: 1.3 }, noRandom)).toBe(1);
    expect(logits).toEqual(before);
    // Negative logits are multiplied: -1 × 1.5 = -1.5 < -1.2.
    const negative = Float32Array.from([-1, -1.2, -3]);
    expect(chooseToken(negative, [], { repetitionPenalty: 1.5 }, noRandom)).toBe(0);
    expect(chooseToken(negative, [0], { repetitionPenalty: 1.5 }, noRandom)).toBe(1);
  });

  it('draws the same sequence for the same seed, another for another seed', () => {
    const random = createRng(5);
    const rows = Array.from({ length: 200 }, () => randomLogits(500, random));
    const options: SamplingOptions = { temperature: 1.5, topK: 40, topP: 0.95, repetitionPenalty: 1.1 };
    const run = (seed: number) => {
      const draw = createRng(seed);
      const tokens: number[] = [];
      for (const row of rows) tokens.push(chooseToken(row, tokens, options, draw));
      return tokens;
    };
    expect(run(1)).toEqual(run(1));
    expect(run(2)).not.toEqual(run(1));
  });
});
