import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkSteering, openCheckPair } from '../../src/engine/model/check.ts';
import { type PreparedGraph, loadModel, openCheckedSession, openSession, prepareGraph } from '../../src/engine/model/load.ts';
import { maxAbs, maxAbsDiff } from '../../src/engine/model/self-check.ts';
import { type ModelConfig, SteerableModel } from '../../src/engine/model/steerable-model.ts';
import { generate } from '../../src/engine/generation/generate.ts';
import { analyseGraph } from '../../src/engine/onnx/analysis.ts';
import { parseModel } from '../../src/engine/onnx/model.ts';
import { planFusion } from '../../src/engine/onnx/fusion.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { type DecoderShape, writeSyntheticModel } from '../support/synthetic-decoder.ts';
import { SHARED, sharedGraphPath, sharedModel } from '../support/paths.ts';

const STORIES_FUSED = ['5 attention blocks → MultiHeadAttention', '10 rotaries → RotaryEmbedding', '11 RMSNorms → SimplifiedLayerNormalization'];

interface Folder {
  dir: string;
  file: string;
  config: ModelConfig;
}

const folderOf = (dir: string, file = 'onnx/model.onnx'): Folder => ({ dir, file, config: JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) });
const bytesOf = (folder: Folder) => new Uint8Array(readFileSync(path.join(folder.dir, folder.file)));
const readExternal = (folder: Folder) => async (location: string) => new Uint8Array(readFileSync(path.join(folder.dir, path.dirname(folder.file), location)));

async function prepare(folder: Folder, breakScale = false) {
  return prepareGraph(bytesOf(folder), folder.file, readExternal(folder), {}, false, { heads: Number(folder.config.num_attention_heads), breakScale });
}

const steerable = (folder: Folder, prepared: PreparedGraph, session: SteerableModel['session']) =>
  new SteerableModel(folder.dir, folder.file, session, prepared.analysis, prepared.instrumentation, undefined, folder.config, {}, 'wasm');

/** The fused and the unfused graph of one model, side by side. */
async function openBoth(folder: Folder) {
  const prepared = await prepare(folder);
  expect(prepared.fused).toBeDefined();
  return {
    applied: prepared.fused!.applied,
    graph: prepared.fused!.graph,
    unfused: steerable(folder, prepared, await openSession(prepared, 'wasm')),
    fused: steerable(folder, prepared, await openSession(prepared, 'wasm', prepared.fused!.graph)),
  };
}

/** Largest logit difference, fused vs unfused, relative to the logits' scale, over a prefill of every position,
 *  three decode steps through the KV cache and a left-padded batch; greedy tokens must be equal. */
async function compareFused(unfused: SteerableModel, fused: SteerableModel, vocab: number): Promise<number> {
  let worst = 0;
  const record = (a: Float32Array, b: Float32Array) => {
    worst = Math.max(worst, maxAbsDiff(a, b) / Math.max(1, maxAbs(a)));
  };
  const ids = Array.from({ length: 9 }, (_, i) => (3 + 11 * i) % vocab);
  const runs = await Promise.all([unfused, fused].map(async (model) => {
    const logits: Float32Array[] = [];
    let step = await model.forward({ tokens: [ids], logits: 'all', keepCache: true });
    logits.push(step.logits!);
    for (const token of [5, 17, 2]) {
      step = await model.forward({ tokens: [[token % vocab]], past: step.cache, keepCache: true });
      logits.push(step.logits!);
    }
    model.releaseCache(step.cache);
    const padded = await model.forward({ tokens: [[ids[0], ids[0], ids[0], ...ids.slice(0, 6)], ids], leftPadding: [3, 0] });
    logits.push(padded.logits!);
    return logits;
  }));
  runs[0].forEach((logits, i) => record(logits, runs[1][i]));
  const greedy = await Promise.all([unfused, fused].map((model) => generate(model, { rowPromptIds: [ids.slice(0, 4), ids.slice(0, 7)], maxNewTokens: 16, sampling: { temperature: 0 } })));
  expect(greedy[1].rows.map((row) => row.tokenIds)).toEqual(greedy[0].rows.map((row) => row.tokenIds));
  return worst;
}

describe('fusion on stories260K-hf (a real torch export: GQA 8 query / 4 KV heads with repeat_kv, interleaved rotary)', () => {
  const folder = folderOf(sharedModel(SHARED.stories.folder));
  let pair: Awaited<ReturnType<typeof openBoth>>;
  beforeAll(async () => {
    pair = await openBoth(folder);
  });
  afterAll(async () => {
    await pair.unfused.dispose();
    await pair.fused.dispose();
  });

  it('fuses every layer\'s attention into MultiHeadAttention, its interleaved rotaries into RotaryEmbedding and its RMSNorms into SimplifiedLayerNormalization, and nothing else', () => {
    expect(pair.applied).toEqual(STORIES_FUSED);
    const model = parseModel(bytesOf(folder));
    // Without config.json's head count: the hidden size over the KV cache's head size (64 / 8).
    const plan = planFusion(model, analyseGraph(model), {});
    expect(plan.applied).toEqual(STORIES_FUSED);
    const removed = model.graph.nodes.filter((node) => plan.removedNodes.has(node.index)).map((node) => node.opType);
    expect(removed.filter((op) => op === 'Softmax')).toHaveLength(5);
    expect(removed.filter((op) => op === 'Sub')).toHaveLength(10); // x₀·cos − x₁·sin, for Q and K of every layer
    expect(removed.filter((op) => op === 'Sqrt')).toHaveLength(11); // two norms per layer and the final one
    // present.N.key/value are still the graph's own Concats, and the residual Adds are untouched.
    for (const entry of analyseGraph(model).kv) expect(plan.removedNodes.has(model.graph.nodes.find((node) => node.outputs[0] === entry.keyOutput)!.index)).toBe(false);
    for (const site of analyseGraph(model).layers) expect(plan.removedNodes.has(site.node.index)).toBe(false);
    // Nothing is left running for nobody: what only fed the fused subgraphs (their shape arithmetic) went with them.
    const fused = parseModel(pair.graph).graph;
    const read = new Set([...fused.nodes.flatMap((node) => node.inputs), ...fused.outputs.map((output) => output.name)]);
    expect(fused.nodes.filter((node) => !node.outputs.some((output) => read.has(output))).map((node) => node.name)).toEqual([]);
  });

  it('gives the unfused graph\'s logits (prefill, decode through the KV cache, left padding) and greedy tokens', async () => {
    const worst = await compareFused(pair.unfused, pair.fused, pair.fused.vocabSize);
    console.log(`stories260K-hf: fused vs unfused logits differ by at most ${worst.toExponential(2)} of their scale`);
    expect(worst).toBeLessThan(1e-5);
  });

  it('passes the steering check (zero steering is an identity against the published graph, steering moves the residual by v)', async () => {
    const { original, instrumented, fused } = await openCheckPair(bytesOf(folder), folder.file, readExternal(folder), 'wasm', folder.config, {}, { heads: 8 });
    expect(fused).toEqual(STORIES_FUSED);
    const report = await checkSteering(original, instrumented);
    await original.dispose();
    await instrumented.dispose();
    expect(report.ok).toBe(true);
  });
});

describe('fusion on synthetic torch decoders (KV heads grouped without repeat_kv, rotate_half rotary from cos/sin tables)', () => {
  for (const [name, shape] of [
    ['GQA-shaped (4 query / 2 KV heads)', { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, vocab: 256, maxPositions: 64 }],
    ['MHA-shaped (4 / 4 heads)', { layers: 2, hidden: 64, heads: 4, kvHeads: 4, intermediate: 128, vocab: 256, maxPositions: 64 }],
  ] as [string, DecoderShape][]) {
    it(`${name}: fused logits and greedy tokens equal the unfused graph's; the steering check passes`, async () => {
      const folder = folderOf(writeSyntheticModel(mkdtempSync(path.join(tmpdir(), 'tiller-fusion-')), shape, 'torch'));
      const pair = await openBoth(folder);
      expect(pair.applied).toEqual(['2 attention blocks → MultiHeadAttention', '4 rotaries → RotaryEmbedding', '5 RMSNorms → SimplifiedLayerNormalization']);
      const worst = await compareFused(pair.unfused, pair.fused, shape.vocab);
      console.log(`synthetic torch ${name}: fused vs unfused logits differ by at most ${worst.toExponential(2)} of their scale`);
      expect(worst).toBeLessThan(1e-5);
      await pair.unfused.dispose();
      await pair.fused.dispose();

      const { original, instrumented } = await openCheckPair(bytesOf(folder), folder.file, readExternal(folder), 'wasm', folder.config, {}, { heads: shape.heads });
      const report = await checkSteering(original, instrumented);
      await original.dispose();
      await instrumented.dispose();
      expect(report.ok).toBe(true);
    });
  }
});

describe('what is not fused, and the check at load', () => {
  it('builder and ORT-optimised graphs (already fused) match nothing', () => {
    for (const name of ['builder', 'gqa'] as const) {
      const model = parseModel(new Uint8Array(readFileSync(sharedGraphPath(name))));
      const plan = planFusion(model, analyseGraph(model), { heads: 4 });
      expect(plan.applied).toEqual([]);
      expect(plan.removedNodes.size).toBe(0);
    }
  });

  it('a fused graph whose numbers differ is not used: the load falls back to the published graph and says why', async () => {
    const folder = folderOf(sharedModel(SHARED.stories.folder));
    const prepared = await prepare(folder, true);
    const { session, report } = await openCheckedSession(prepared, 'wasm', (s) => steerable(folder, prepared, s));
    expect(report.applied).toEqual([]);
    expect(report.fellBack).toMatch(/^fused 5 attention blocks → MultiHeadAttention, 10 rotaries → RotaryEmbedding, 11 RMSNorms → SimplifiedLayerNormalization, but its logits differ from the published graph's by .* using the graph as published$/);
    // The session kept is the published graph's: it has no MultiHeadAttention to get wrong.
    const kept = steerable(folder, prepared, session);
    const unfused = steerable(folder, prepared, await openSession(prepared, 'wasm'));
    const tokens = [[1, 274, 287, 286]];
    expect(maxAbsDiff((await kept.forward({ tokens })).logits!, (await unfused.forward({ tokens })).logits!)).toBe(0);
    await kept.dispose();
    await unfused.dispose();
  });

  it('loadModel fuses by default and reports it; fuse: false runs the graph as published', async () => {
    const source = () => new FolderSource(sharedModel(SHARED.stories.folder));
    const fused = await loadModel(source(), { backend: 'wasm' });
    expect(fused.info.fusion).toMatchObject({ applied: STORIES_FUSED });
    expect(fused.info.fusion?.fellBack).toBeUndefined();
    expect(fused.info.selfCheck?.ok).toBe(true);
    await fused.dispose();
    const plain = await loadModel(source(), { backend: 'wasm', fuse: false });
    expect(plain.info.fusion).toEqual({ applied: [] });
    expect(plain.info.selfCheck?.ok).toBe(true);
    await plain.dispose();
  });
});
