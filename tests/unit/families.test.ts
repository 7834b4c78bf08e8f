// Every decoder structure Transformers.js runs beyond Llama's, as torch/Optimum exports them (synthetic
// weights, tests/support/synthetic-decoder.ts), each checked against ONNX Runtime on the unmodified graph.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkSteering, openCheckPair } from '../../src/engine/model/check.ts';
import { decoderConfigOf } from '../../src/engine/model/config.ts';
import { loadModel, prepareGraph } from '../../src/engine/model/load.ts';
import { selfCheck } from '../../src/engine/model/self-check.ts';
import { SteerableModel } from '../../src/engine/model/steerable-model.ts';
import { generate } from '../../src/engine/generation/generate.ts';
import { captureHiddenStates } from '../../src/engine/directions/hidden-states.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { type Family, STRUCTURES, type TorchStructure, syntheticFamily, writeSyntheticModel } from '../support/synthetic-decoder.ts';

const SHAPE = { layers: 3, hidden: 32, heads: 4, kvHeads: 4, intermediate: 64, vocab: 96, maxPositions: 48 };
const PROMPT = [5, 17, 42, 8, 23];

async function openFamily(family: Family) {
  const model = syntheticFamily(SHAPE, family);
  const config = decoderConfigOf(model.config);
  const hints = { numHiddenLayers: config.num_hidden_layers, hiddenSize: config.hidden_size };
  return openCheckPair(model.graph, model.file.split('/').pop()!, async () => new Uint8Array(), 'wasm', config, hints);
}

const direction = (scale: number) => Float32Array.from({ length: SHAPE.hidden }, (_, i) => Math.sin(i + 1) * scale);

describe.each(Object.keys(STRUCTURES) as Family[])('a %s-structured torch export', (family) => {
  it('is analysed by structure, steered exactly, and decodes the reference tokens in batches', async () => {
    const { analysis, original, instrumented } = await openFamily(family);
    const structure: TorchStructure = STRUCTURES[family];
    expect(analysis.layerCount).toBe(SHAPE.layers);
    expect(analysis.residualLayout).toBe(structure.residual === 'sequential' ? 'sequential' : 'parallel');
    expect(analysis.layers.every((site) => site.flattened)).toBe(Boolean(structure.flattenMlp));
    expect(analysis.lmHead).toBeDefined();
    expect(Boolean(analysis.rowsCoupled)).toBe(Boolean(structure.q8));
    expect(Boolean(analysis.positionIds)).toBe(structure.positionIdsInput);

    // Zero steering reproduces the unmodified graph's logits; steering layer L by v moves its residual by v.
    const report = await checkSteering(original, instrumented);
    expect(report.zeroSteeringMaxDiff).toBeLessThanOrEqual(report.zeroSteeringTolerance);
    expect(report.layers.every((layer) => layer.ok)).toBe(true);

    // Greedy tokens of the unmodified graph, alone, are those of the instrumented graph's unsteered rows
    // in a batch beside steered ones; the steered rows differ.
    const sampling = { temperature: 0 };
    const reference = await generate(original, { promptIds: PROMPT, maxNewTokens: 16, sampling });
    const rows = [[], [{ layer: 1, vector: direction(3) }], [], [{ layer: 2, vector: direction(-3) }]];
    const batched = await generate(instrumented, { promptIds: PROMPT, maxNewTokens: 16, sampling, rows });
    expect(batched.rows[0].tokenIds).toEqual(reference.rows[0].tokenIds);
    expect(batched.rows[2].tokenIds).toEqual(reference.rows[0].tokenIds);
    expect(batched.rows[1].tokenIds).not.toEqual(reference.rows[0].tokenIds);

    // A steered row of a batch moves the residual by v there too (flattened branches included).
    const vector = direction(0.5);
    const alone = await instrumented.forward({ tokens: [PROMPT], logits: 'none', hiddenLayers: [1] });
    const pair = await instrumented.forward({ tokens: [PROMPT, PROMPT], logits: 'none', hiddenLayers: [1], steering: [[], [{ layer: 1, vector }]] });
    const before = alone.hidden.get(1)!;
    const after = pair.hidden.get(1)!.subarray(before.length);
    for (let i = 0; i < before.length; i++) expect(after[i] - before[i]).toBeCloseTo(vector[i % SHAPE.hidden], 5);

    // Capture for extraction: prompts of different lengths, right-padded into one batch, as each alone.
    const prompts = [PROMPT, PROMPT.slice(0, 2), [...PROMPT, 9, 31, 60]];
    const together = await captureHiddenStates(instrumented, { prompts, layers: [1, 2], reduce: 'mean' });
    for (const [index, prompt] of prompts.entries()) {
      const single = await captureHiddenStates(instrumented, { prompts: [prompt], layers: [1, 2], reduce: 'mean' });
      for (const at of [0, 1]) {
        for (let i = 0; i < SHAPE.hidden; i++) expect(together.vectors[index][at][i]).toBeCloseTo(single.vectors[0][at][i], 4);
      }
    }

    expect((await selfCheck(instrumented)).ok).toBe(true);
    await original.dispose();
    await instrumented.dispose();
  });
});

it('directional ablation works on a flattened (OPT) branch, for every row of a batch', async () => {
  const model = syntheticFamily(SHAPE, 'opt');
  const prepared = await prepareGraph(model.graph, 'model.onnx', async () => new Uint8Array(), {}, true);
  const { openSession } = await import('../../src/engine/model/load.ts');
  const steerable = new SteerableModel('opt', 'model.onnx', await openSession(prepared, 'wasm'), prepared.analysis, prepared.instrumentation,
    undefined, decoderConfigOf(model.config), {}, 'wasm');
  const unit = direction(1);
  const length = Math.hypot(...unit);
  const result = await steerable.forward({
    tokens: [PROMPT, PROMPT], logits: 'none', hiddenLayers: [1],
    steering: [[{ layer: 1, vector: unit, operation: 'ablate' }], [{ layer: 1, vector: unit, operation: 'ablate' }]],
  });
  const hidden = result.hidden.get(1)!;
  for (let position = 0; position < 2 * PROMPT.length; position++) {
    let dot = 0;
    for (let i = 0; i < SHAPE.hidden; i++) dot += hidden[position * SHAPE.hidden + i] * unit[i] / length;
    expect(Math.abs(dot)).toBeLessThan(1e-5);
  }
  await steerable.dispose();
});

describe('q8 (dynamic quantisation: one activation scale for the whole batch)', () => {
  it('couples the rows of a batch in ONNX Runtime, so the engine runs them one at a time: the baseline equals the model alone', async () => {
    const { analysis, original, instrumented } = await openFamily('llama-q8');
    expect(analysis.rowsCoupled).toMatch(/DynamicQuantizeLinear/);
    // The graph itself, batched as it stands: a row's logits depend on what the other row holds.
    const batchedAsIs = new SteerableModel('q8', 'model.onnx', original.session, { ...analysis, rowsCoupled: undefined },
      original.instrumentation, undefined, original.config, {}, 'wasm');
    const other = PROMPT.map((token) => (token * 7) % SHAPE.vocab);
    const alone = await original.forward({ tokens: [PROMPT], logits: 'last' });
    const coupled = await batchedAsIs.forward({ tokens: [PROMPT, other], logits: 'last' });
    let coupledDiff = 0;
    for (let i = 0; i < alone.logits!.length; i++) coupledDiff = Math.max(coupledDiff, Math.abs(coupled.logits![i] - alone.logits![i]));
    expect(coupledDiff).toBeGreaterThan(1e-4);

    // Through the engine: the baseline row beside a strongly steered row is bit for bit the model alone.
    const paired = await instrumented.forward({ tokens: [PROMPT, PROMPT], logits: 'last', steering: [[], [{ layer: 1, vector: direction(5) }]] });
    expect(Array.from(paired.logits!.subarray(0, alone.logits!.length))).toEqual(Array.from(alone.logits!));
    const reference = await generate(original, { promptIds: PROMPT, maxNewTokens: 24, sampling: { temperature: 0 } });
    const batched = await generate(instrumented, { promptIds: PROMPT, maxNewTokens: 24, sampling: { temperature: 0 }, rows: [[], [{ layer: 1, vector: direction(5) }]] });
    expect(batched.rows[0].tokenIds).toEqual(reference.rows[0].tokenIds);

    // The load-time self-check notices when rows that interact are batched anyway.
    const steeredAsIs = new SteerableModel('q8', 'model.onnx', instrumented.session, { ...analysis, rowsCoupled: undefined },
      instrumented.instrumentation, undefined, instrumented.config, {}, 'wasm');
    const verdict = await selfCheck(steeredAsIs);
    expect(verdict.ok).toBe(false);
    expect(verdict.message).toMatch(/^steering check failed: the unsteered row of a batch has the logits of the model run alone \(off by /);
    await original.dispose();
    await instrumented.dispose();
  });
});

describe.each(Object.keys(STRUCTURES) as Family[])('a %s-structured torch export, fused at load', (family) => {
  const folder = mkdtempSync(path.join(tmpdir(), `tiller-fused-${family}-`));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it('fuses what its structure has, keeps it past the check at load, and decodes the published graph\'s greedy tokens', async () => {
    writeSyntheticModel(folder, SHAPE, family);
    const fused = await loadModel(new FolderSource(folder), { backend: 'wasm' });
    const published = await loadModel(new FolderSource(folder), { backend: 'wasm', fuse: false });
    const structure = STRUCTURES[family];
    expect(fused.info.fusion?.fellBack).toBeUndefined();
    expect(fused.info.fusion?.applied).toEqual([
      `${SHAPE.layers} attention blocks → MultiHeadAttention`,
      ...(structure.positions === 'rotary' ? [`${2 * SHAPE.layers} rotaries → RotaryEmbedding`] : []),
      // Two norms per layer and the final one; LayerNorm (with its mean and bias) is not an RMSNorm.
      ...(structure.norm === 'rms' ? [`${2 * SHAPE.layers + 1} RMSNorms → SimplifiedLayerNormalization`] : []),
    ]);
    expect(published.info.fusion?.applied).toEqual([]);
    const greedy = async (model: SteerableModel) => (await generate(model, {
      promptIds: PROMPT, maxNewTokens: 16, sampling: { temperature: 0 }, rows: [[], [{ layer: 1, vector: direction(3) }]],
    })).rows.map((row) => row.tokenIds);
    expect(await greedy(fused)).toEqual(await greedy(published));
    await fused.dispose();
    await published.dispose();
  });
});

describe('a GPT-2 model folder (config.json in GPT-2 names) loaded like a user would', () => {
  const folder = mkdtempSync(path.join(tmpdir(), 'tiller-gpt2-'));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it('reads n_positions as the context length, generates past it by truncating the prompt, and self-checks on load', async () => {
    writeSyntheticModel(folder, SHAPE, 'gpt2');
    const model = await loadModel(new FolderSource(folder), { backend: 'wasm' });
    expect(model.info.contextLength).toBe(SHAPE.maxPositions);
    expect(model.info.layerCount).toBe(SHAPE.layers);
    expect(model.info.selfCheck?.ok).toBe(true);
    expect(model.info.selfCheck?.message).toBe('steering verified exact on this model');
    // 40 prompt tokens + 30 new would run past the 48 learned positions: the prompt makes way.
    const promptIds = Array.from({ length: 40 }, (_, i) => (i * 11) % SHAPE.vocab);
    const result = await generate(model, { promptIds, maxNewTokens: 30, sampling: { temperature: 0 }, rows: [[], [{ layer: 1, vector: direction(2) }]] });
    expect(result.rows[0].tokenIds.length + result.promptIds.length).toBeLessThanOrEqual(SHAPE.maxPositions);
    expect(result.truncatedPromptTokens).toBeGreaterThan(0);
    await model.dispose();
  });
});
