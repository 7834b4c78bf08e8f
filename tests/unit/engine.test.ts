import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/engine/model/load.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { writeSyntheticModel } from '../support/synthetic-decoder.ts';
import { checkSteering } from '../../src/engine/model/check.ts';
import { generate } from '../../src/engine/generation/generate.ts';
import { batchesByLength, captureHiddenStates } from '../../src/engine/directions/hidden-states.ts';
import type { SteerableModel } from '../../src/engine/model/steerable-model.ts';
import { STORIES_REFERENCE, graphPair, loadShared } from '../support/models.ts';

/** Prompts of different lengths decoded as rows of one left-padded batch give each row's own greedy
 *  tokens, and last-position logits within `tolerance` of the prompt run alone. */
async function expectPaddedBatchMatchesAlone(model: SteerableModel, prompts: number[][], tolerance: number) {
  expect(new Set(prompts.map((p) => p.length)).size).toBeGreaterThan(1);
  const batched = await generate(model, { rowPromptIds: prompts, maxNewTokens: 12, sampling: { temperature: 0 } });
  const width = Math.max(...prompts.map((p) => p.length));
  const padded = await model.forward({ tokens: prompts.map((p) => [...new Array(width - p.length).fill(p[0]), ...p]), leftPadding: prompts.map((p) => width - p.length) });
  const vocab = model.vocabSize;
  for (const [row, ids] of prompts.entries()) {
    const alone = await generate(model, { promptIds: ids, maxNewTokens: 12, sampling: { temperature: 0 } });
    expect(batched.rows[row].tokenIds).toEqual(alone.rows[0].tokenIds);
    const logits = (await model.forward({ tokens: [ids] })).logits!;
    let worst = 0;
    for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(padded.logits![row * vocab + i] - logits[i]));
    expect(worst).toBeLessThan(tolerance);
  }
}

describe('stories260K (torch export, fp32) on WASM', () => {
  let model: SteerableModel;
  beforeAll(async () => {
    model = await loadShared('stories');
  });
  afterAll(() => model.dispose());

  it('reproduces the reference story greedily from BOS alone', async () => {
    const streamed: string[] = [];
    const result = await generate(model, { prompt: '', maxNewTokens: 120, sampling: { temperature: 0 } }, {
      onToken: (event) => streamed.push(event.text),
    });
    expect(result.promptIds).toEqual([1]);
    expect(result.rows[0].text.startsWith(STORIES_REFERENCE)).toBe(true);
    expect(streamed.join('')).toBe(result.rows[0].text);
  });

  it('gives every batch row its own strength: rows differ only where the strength differs', async () => {
    const prompt = 'Lily was very';
    const direction = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 4);
    const steered = [{ layer: 2, vector: direction }];
    const batched = await generate(model, { prompt, maxNewTokens: 24, rows: [[], steered, []] });
    const alone = await generate(model, { prompt, maxNewTokens: 24 });
    expect(batched.rows[0].tokenIds).toEqual(alone.rows[0].tokenIds);
    expect(batched.rows[2].tokenIds).toEqual(alone.rows[0].tokenIds);
    expect(batched.rows[1].tokenIds).not.toEqual(alone.rows[0].tokenIds);
  });

  it('answer-only steering prefills once for all rows: each row decodes as it would alone', async () => {
    const direction = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i) * 3);
    const rows = [[], [{ layer: 2, vector: direction }], [{ layer: 3, vector: direction.map((v) => -v) }]];
    const request = { prompt: 'Lily was very', maxNewTokens: 20, steerPrompt: false };
    const batched = await generate(model, { ...request, rows });
    for (const [index, row] of rows.entries()) {
      expect(batched.rows[index].tokenIds).toEqual((await generate(model, { ...request, rows: [row] })).rows[0].tokenIds);
    }
    expect(batched.rows[1].tokenIds).not.toEqual(batched.rows[0].tokenIds); // the steering does act after the prompt
  });

  it('row 0 at strength 0 has the logits of an unbatched unsteered run', async () => {
    const tokens = model.tokenizer!.encode('Tom was very angry');
    const direction = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
    const alone = await model.forward({ tokens: [tokens], logits: 'all' });
    const batched = await model.forward({ tokens: [tokens, tokens], logits: 'all', steering: [[], [{ layer: 1, vector: direction }]] });
    const size = alone.logits!.length;
    let rowZeroDiff = 0;
    let rowOneDiff = 0;
    for (let i = 0; i < size; i++) {
      rowZeroDiff = Math.max(rowZeroDiff, Math.abs(batched.logits![i] - alone.logits![i]));
      rowOneDiff = Math.max(rowOneDiff, Math.abs(batched.logits![size + i] - alone.logits![i]));
    }
    expect(rowZeroDiff).toBeLessThan(1e-4);
    expect(rowOneDiff).toBeGreaterThan(1e-2);
  });

  it('samples reproducibly: same seed, same text; another seed, another text', async () => {
    const request = { prompt: 'Once upon a time', maxNewTokens: 40, sampling: { temperature: 1, topP: 0.95, seed: 7 } };
    const first = await generate(model, request);
    const again = await generate(model, request);
    const other = await generate(model, { ...request, sampling: { ...request.sampling, seed: 8 } });
    expect(again.rows[0].text).toBe(first.rows[0].text);
    expect(other.rows[0].text).not.toBe(first.rows[0].text);
  });

  it('stops within one step of cancellation', async () => {
    const controller = new AbortController();
    let seen = 0;
    const result = await generate(model, { prompt: '', maxNewTokens: 200 }, {
      signal: controller.signal,
      onToken: () => {
        if (++seen === 3) controller.abort();
      },
    });
    expect(result.rows[0].finishReason).toBe('cancelled');
    expect(result.rows[0].tokenIds.length).toBe(3);
  });

  it('stops at an end token, and at max tokens otherwise', async () => {
    const free = await generate(model, { prompt: 'Tom was very angry', maxNewTokens: 30 });
    expect(free.rows[0].finishReason).toBe('length');
    expect(free.rows[0].tokenIds.length).toBe(30);
    const stopToken = free.rows[0].tokenIds[5];
    const firstStop = free.rows[0].tokenIds.indexOf(stopToken);
    const stopped = await generate(model, { prompt: 'Tom was very angry', maxNewTokens: 30, stopTokenIds: [stopToken] });
    expect(stopped.rows[0].finishReason).toBe('stop');
    expect(stopped.rows[0].tokenIds).toEqual(free.rows[0].tokenIds.slice(0, firstStop));
  });

  it('cuts a prompt longer than the context from the start (keeping BOS), says so, and refuses bad lengths', async () => {
    const ids = [1, ...Array.from({ length: 600 }, (_, i) => 300 + (i % 100))];
    const result = await generate(model, { promptIds: ids, maxNewTokens: 8 });
    expect(result.truncatedPromptTokens).toBe(ids.length + 8 - 512);
    expect(result.promptIds[0]).toBe(1);
    expect(result.promptIds.slice(1)).toEqual(ids.slice(1 + result.truncatedPromptTokens));
    expect(result.rows[0].tokenIds).toHaveLength(8);
    const greedy = await generate(model, { promptIds: [1], maxNewTokens: 5000 });
    expect(greedy.rows[0].tokenIds.length).toBeLessThanOrEqual(256); // at most half the context
    await expect(generate(model, { prompt: 'x', maxNewTokens: Number.NaN })).rejects.toThrow(/maxNewTokens must be a whole number/);
  });

  it('refuses steering it cannot apply instead of ignoring it', async () => {
    const tokens = [model.tokenizer!.encode('Lily')];
    await expect(model.forward({ tokens, steering: [[{ layer: 9, vector: new Float32Array(64) }]] })).rejects.toThrow(/cannot steer layer 9: .* 0–4/);
    await expect(model.forward({ tokens, steering: [[{ layer: 1, vector: new Float32Array(3) }]] })).rejects.toThrow(/has 3 values; .* hidden size is 64/);
    await expect(model.forward({ tokens, steering: [[{ layer: 1, vector: new Float32Array(64).fill(Number.NaN) }]] })).rejects.toThrow(/must be finite/);
  });

  it('captures the same hidden states for a prompt alone and inside a batch', async () => {
    const encode = (text: string) => model.tokenizer!.encode(text);
    const target = encode('The cat sat on the mat and looked at the big red ball in the garden');
    const longer = encode('The cat sat on the mat and looked at the big red ball in the garden all day');
    const prompts = [encode('Lily was very happy'), target, longer, encode('Tom was very angry and then he ran home'), encode('A girl ran')];
    const layers = [0, 2, 4];
    const alone = await captureHiddenStates(model, { prompts: [target], layers, reduce: 'mean' });
    const batched = await captureHiddenStates(model, { prompts, layers, reduce: 'mean', batchSize: 8 });
    // The target shares its batch with a slightly longer prompt, so it was padded.
    expect(batchesByLength(prompts.map((p) => p.length), 8)).toContainEqual([1, 2]);
    expect(longer.length).toBeGreaterThan(target.length);
    for (let i = 0; i < layers.length; i++) {
      const a = alone.vectors[0][i];
      const b = batched.vectors[1][i];
      for (let k = 0; k < a.length; k++) expect(Math.abs(a[k] - b[k])).toBeLessThan(1e-5);
    }
    const last = await captureHiddenStates(model, { prompts: [target], layers: [4], reduce: 'last' });
    const full = await model.forward({ tokens: [target], logits: 'none', hiddenLayers: [4] });
    const lastRow = full.hidden.get(4)!.subarray((target.length - 1) * 64, target.length * 64);
    expect(Array.from(last.vectors[0][0])).toEqual(Array.from(lastRow));
  });

  it('decodes prompts of different lengths as rows of one left-padded batch, each as it would alone', async () => {
    const encode = (text: string) => model.tokenizer!.encode(text);
    await expectPaddedBatchMatchesAlone(model, [encode('Lily was very'), encode('Tom went to the park with his big red ball and'), encode('Once')], 1e-4);
  });

  it('batches prompts of nearly one length only, at most batchSize at a time', () => {
    // 10 and 10 pad nothing; 16 beside 17 pads 1 token of 33; 17 beside 30 would pad 13 of 47.
    expect(batchesByLength([30, 10, 17, 10, 16], 8)).toEqual([[1, 3], [4, 2], [0]]);
    expect(batchesByLength([5, 5, 5, 5, 5], 2)).toEqual([[0, 1], [2, 3], [4]]);
  });

  it('averages over a token range only', async () => {
    const ids = model.tokenizer!.encode('Tom was very angry');
    const ranged = await captureHiddenStates(model, { prompts: [ids], layers: [3], reduce: 'mean', ranges: [[2, 5]] });
    const full = (await model.forward({ tokens: [ids], logits: 'none', hiddenLayers: [3] })).hidden.get(3)!;
    for (let k = 0; k < 64; k++) {
      const expected = (full[2 * 64 + k] + full[3 * 64 + k] + full[4 * 64 + k]) / 3;
      expect(ranged.vectors[0][0][k]).toBeCloseTo(expected, 5);
    }
  });
});

describe('builder export (fused, fp16, external data) on WASM', () => {
  let model: SteerableModel;
  beforeAll(async () => {
    model = await loadShared('builder');
  });
  afterAll(() => model.dispose());

  it('loads with its external data and an fp16 residual, and exposes the unmaterialised last residual', () => {
    const info = model.info;
    expect(info.flavour).toBe('fused');
    expect(info.layerCount).toBe(2);
    expect(info.residualDtype).toBe('float16');
    expect(info.residualTensors[1]).toBe('tiller.residual.1');
  });

  it('applies the chat template when given messages, and uses a raw prompt as is', async () => {
    const messages = [{ role: 'user', content: 'Hello there' }];
    const chat = await generate(model, { messages, maxNewTokens: 3 });
    const rendered = model.tokenizer!.applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(chat.promptIds).toEqual(model.tokenizer!.encode(rendered, { addSpecialTokens: false }));
    const raw = await generate(model, { prompt: 'Hello there', maxNewTokens: 3 });
    expect(raw.promptIds).toEqual(model.tokenizer!.encode('Hello there'));
  });

  it('decodes chat prompts of different lengths as rows of one left-padded batch, each as it would alone', async () => {
    const chat = (content: string) => model.tokenizer!.encode(model.tokenizer!.applyChatTemplate([{ role: 'user', content }], { addGenerationPrompt: true }), { addSpecialTokens: false });
    await expectPaddedBatchMatchesAlone(model, [chat('Hi'), chat('What would you do if you ruled the world for a day?'), chat('Tell me a joke about cats')], 0.05);
  });

  it('steers fp16 rows independently', async () => {
    const vector = Float32Array.from({ length: 16 }, (_, i) => (i % 2 ? 1 : -1) * 2);
    const tokens = model.tokenizer!.encode('Hello there');
    const result = await model.forward({ tokens: [tokens, tokens], steering: [[], [{ layer: 0, vector }]], hiddenLayers: [0] });
    const hidden = result.hidden.get(0)!;
    const rowSize = hidden.length / 2;
    for (let i = 0; i < rowSize; i++) {
      expect(Math.abs(hidden[rowSize + i] - hidden[i] - vector[i % 16])).toBeLessThan(0.02 * (1 + Math.abs(hidden[i])));
    }
  });
});

describe('tiller check logic on every shared graph', () => {
  for (const name of ['stories', 'builder', 'gqa'] as const) {
    it(`${name}: zero steering reproduces the logits; steering layer L by v moves its residual by v`, async () => {
      const { original, instrumented } = await graphPair(name);
      const report = await checkSteering(original, instrumented);
      expect(report.layers.length).toBe(instrumented.analysis.layerCount);
      expect(report.zeroSteeringMaxDiff).toBeLessThanOrEqual(report.zeroSteeringTolerance);
      for (const layer of report.layers) expect(layer.maxError).toBeLessThanOrEqual(layer.tolerance);
      expect(report.ok).toBe(true);
      await original.dispose();
      await instrumented.dispose();
    });
  }
});

describe('left padding is used only where the graph honours it', () => {
  const shape = { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, vocab: 256, maxPositions: 64 };
  const load = (flavour: 'torch' | 'builder') =>
    loadModel(new FolderSource(writeSyntheticModel(mkdtempSync(path.join(tmpdir(), `tiller-pad-${flavour}-`)), shape, flavour)), { backend: 'wasm' });

  it('torch flavour: masked attention, padded rows decode as alone; GroupQueryAttention (builder flavour) is refused', async () => {
    const torch = await load('torch');
    expect(await torch.canPadLeft()).toBe(true);
    await expectPaddedBatchMatchesAlone(torch, [[1, 5, 9], [1, 7, 3, 8, 20, 11, 4], [1, 2]], 1e-4);
    await torch.dispose();

    const builder = await load('builder');
    // GroupQueryAttention counts a row's tokens from the mask's sum, not where its zeros are.
    expect(await builder.canPadLeft()).toBe(false);
    await expect(generate(builder, { rowPromptIds: [[1, 5, 9], [1, 7]], maxNewTokens: 2 })).rejects.toThrow(/cannot decode prompts of different lengths/);
    const sameLength = await generate(builder, { rowPromptIds: [[1, 5, 9], [1, 7, 3]], maxNewTokens: 2 });
    expect(sameLength.rows.map((row) => row.tokenIds.length)).toEqual([2, 2]);
    await builder.dispose();
  });
});
