import { readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyseGraph } from '../../src/engine/onnx/analysis.ts';
import { parseModel } from '../../src/engine/onnx/model.ts';
import { bakeResidualVector } from '../../src/engine/onnx/surgery.ts';
import { captureHiddenStates } from '../../src/engine/directions/hidden-states.ts';
import { extractDirections } from '../../src/engine/directions/extract.ts';
import { diffModels, loadFineTune, vectorFileFromDiff } from '../../src/engine/directions/model-diff.ts';
import { contrastiveSetOf, diffPromptsOf, presetById } from '../../src/engine/directions/presets.ts';
import { assertVectorFits, directionCosines, parseVectorFile, serializeVectorFile, vectorFileFromExtraction } from '../../src/engine/directions/vector-file.ts';
import { ModelTooLargeError } from '../../src/engine/model/load.ts';
import type { SteerableModel, SteeringRow } from '../../src/engine/model/steerable-model.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { dot, vectorLength } from '../../src/engine/vectors.ts';
import { createEngine } from '../../src/engine/api.ts';
import { type HubServer, startHubServer } from '../support/hub-server.ts';
import { loadShared } from '../support/models.ts';
import { SHARED, sharedGraphPath, sharedModel, sharedModelsDir } from '../support/paths.ts';

const cosine = (a: ArrayLike<number>, b: ArrayLike<number>) => dot(a, b) / (vectorLength(a) * vectorLength(b));
const maxAbsDifference = (a: Float32Array, b: Float32Array) => a.reduce((worst, v, i) => Math.max(worst, Math.abs(v - b[i])), 0);

/** Neutral story openings, no dog and no feeling in them. */
const NEUTRAL = [
  'Once upon a time, there was a little girl named Lily.',
  'Tom went to the park with his mom.',
  'The sun was up and the sky was blue.',
  'Sue had a red ball and a big box.',
  'One day, Ben saw a bird in a tree.',
  'There was a cat who lived in a small house.',
  'Mom made soup for lunch.',
  'The boy and the girl walked to the store.',
  'Anna put on her hat and her shoes.',
  'The car was big and red.',
  'Tim had a new book about trucks.',
  'It was a warm day in the town.',
];

describe('exact: stories260K against a copy with a fixed vector baked in after layer 3', () => {
  const BAKED_LAYER = 3;
  // About a fifth of the residual's length there (≈ 9.9): a shift the later layer carries along.
  const v = Float32Array.from({ length: 64 }, (_, i) => 0.25 * Math.sin(1.7 * i + 0.3));
  let folder: string;
  let base: SteerableModel;
  let copy: SteerableModel;
  let diff: Awaited<ReturnType<typeof diffModels>>;
  beforeAll(async () => {
    folder = await mkdtemp(path.join(os.tmpdir(), 'tiller-baked-'));
    const source = sharedModel(SHARED.stories.folder);
    for (const file of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(path.join(source, file), path.join(folder, file));
    const model = parseModel(new Uint8Array(await readFile(sharedGraphPath('stories'))));
    await mkdir(path.join(folder, 'onnx'));
    await writeFile(path.join(folder, 'onnx', 'model.onnx'), bakeResidualVector(model, analyseGraph(model), BAKED_LAYER, v));
    base = await loadShared('stories', { ablation: true });
    copy = await loadFineTune(base, new FolderSource(folder));
    diff = await diffModels(base, copy, { prompts: NEUTRAL, batchSize: 5 });
  });
  afterAll(async () => {
    await copy?.dispose();
    await base?.dispose();
    await rm(folder, { recursive: true, force: true });
  });

  it('recovers v at layer 3, nothing before, and at layer 4 what v does to the base there', async () => {
    for (const { layer, direction } of diff.layers.slice(0, BAKED_LAYER)) expect(vectorLength(direction), `layer ${layer}`).toBeLessThan(1e-5);
    // At the baked layer the mean difference is v itself, to float error.
    expect(cosine(diff.layers[BAKED_LAYER].direction, v)).toBeGreaterThan(0.9999);
    expect(maxAbsDifference(diff.layers[BAKED_LAYER].direction, v)).toBeLessThan(1e-4);
    // After it, block 4 answers v with a change of its own (cosine with v about 0.8 here, whatever v's length: the
    // block is close to linear in it), so the reference is the base itself steered with v at layer 3.
    const tokenizer = base.tokenizer!;
    const prompts = NEUTRAL.map((text) => tokenizer.encode(text));
    const ranges = prompts.map((ids): [number, number] => [1, ids.length]);
    const meanAt4 = async (steering?: SteeringRow) => {
      const { vectors } = await captureHiddenStates(base, { prompts, ranges, layers: [4], reduce: 'mean', steering });
      return vectors.reduce((sum, [state]) => sum.map((x, i) => x + state[i] / vectors.length), new Float32Array(64));
    };
    const [plain, steered] = [await meanAt4(), await meanAt4([{ layer: BAKED_LAYER, vector: v }])];
    const expected = steered.map((x, i) => x - plain[i]);
    expect(maxAbsDifference(diff.layers[4].direction, expected)).toBeLessThan(1e-4);
    expect(cosine(diff.layers[4].direction, v)).toBeGreaterThan(0.5);
    // Held out, the two models' residuals separate from layer 3 on, and not before.
    expect(diff.layers[BAKED_LAYER].auroc).toBe(1);
    expect(diff.layers[0].auroc).toBe(0.5);
  });

  it("in answer mode reads only the copy's own continuations, and still finds v there", async () => {
    const stages: string[] = [];
    const answered = await diffModels(base, copy, { prompts: NEUTRAL.slice(0, 4), mode: 'answer', answerTokens: 12 }, {
      onProgress: (stage, done, total) => stages.push(`${stage} ${done}/${total}`),
    });
    expect(answered.mode).toBe('answer');
    expect(stages.slice(0, 4)).toEqual(['answering 1/4', 'answering 2/4', 'answering 3/4', 'answering 4/4']);
    expect(stages).toContain('fine-tune 4/4');
    expect(maxAbsDifference(answered.layers[BAKED_LAYER].direction, v)).toBeLessThan(1e-4);
    expect(vectorLength(answered.layers[0].direction)).toBeLessThan(1e-5);
  });

  it("steering the base with the diff reproduces the copy's logits; ablating it from the copy brings them back toward the base's", async () => {
    const direction = diff.layers[BAKED_LAYER].direction;
    const tokens = [base.tokenizer!.encode('Lily went to the park and saw a big dog.')];
    const logitsOf = async (model: SteerableModel, row: SteeringRow = []) => (await model.forward({ tokens, logits: 'all', steering: [row] })).logits!;
    const baseLogits = await logitsOf(base);
    const copyLogits = await logitsOf(copy);
    const steeredBase = await logitsOf(base, [{ layer: BAKED_LAYER, vector: direction }]);
    const ablatedCopy = await logitsOf(copy, [{ layer: BAKED_LAYER, vector: direction, operation: 'ablate' }]);
    const subtractedCopy = await logitsOf(copy, [{ layer: BAKED_LAYER, vector: direction.map((x) => -x) }]);
    const before = maxAbsDifference(copyLogits, baseLogits);
    expect(before).toBeGreaterThan(0.1); // the baked vector does change the output
    expect(maxAbsDifference(steeredBase, copyLogits)).toBeLessThan(1e-3);
    expect(maxAbsDifference(subtractedCopy, baseLogits)).toBeLessThan(1e-3);
    expect(maxAbsDifference(ablatedCopy, baseLogits)).toBeLessThan(before);
  });

  it('saves as a vector file naming both models, which fits both and no other', () => {
    const file = parseVectorFile(serializeVectorFile(vectorFileFromDiff(diff, base.info, copy.info, NEUTRAL.length)));
    expect(file.diff).toEqual({ base: { id: 'stories260K-hf' }, fineTune: { id: path.basename(folder) }, prompts: NEUTRAL.length });
    expect(file.model.id).toBe('stories260K-hf');
    expect(() => assertVectorFits(file, base.info)).not.toThrow();
    expect(() => assertVectorFits(file, copy.info)).not.toThrow();
    expect(() => assertVectorFits(file, { ...base.info, id: 'some-other-model' })).toThrow(/made for stories260K-hf, not some-other-model/);
    expect(() => parseVectorFile(JSON.stringify({ ...JSON.parse(serializeVectorFile(file)), diff: { base: {} } }))).toThrow(/"diff" must name the base and the fine-tune/);
  });

  it('refuses a second model that is another architecture, naming what differs, and one that would not fit', async () => {
    // Refused from config.json, before the graph is downloaded.
    const builder = new FolderSource(sharedModel(SHARED.builder.folder));
    const filesRead: string[] = [];
    const watched = new Proxy(builder, {
      get: (target, key) => {
        const member = Reflect.get(target, key);
        if (key === 'readFile') return (file: string, ...rest: []) => (filesRead.push(file), target.readFile(file, ...rest));
        return typeof member === 'function' ? member.bind(target) : member;
      },
    });
    await expect(loadFineTune(base, watched))
      .rejects.toThrow(/not a fine-tune of stories260K-hf's architecture \(layer count: 5 vs 2; hidden size: 64 vs 16; vocabulary size: 512 vs 32000\)/);
    expect(filesRead.filter((file) => file.endsWith('.onnx'))).toEqual([]);
    // stories260K in fp32: about 1 MB of weights already loaded, about 2 MB more while the copy loads.
    const refusal = await loadFineTune(base, new FolderSource(folder), { memoryBudget: 2.5e6 }).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(ModelTooLargeError);
    expect((refusal as Error).message).toMatch(/Both models must be loaded at once, and stories260K-hf already holds about 2 MB\. .* needs about 3 MB of memory while loading/);
  });
});

describe('realistic: stories260K against stories260K-sad-dogs-hf (block 2 fine-tuned on sad dog stories)', () => {
  // The organism's own measurements (torch, ../shared/models/README.md): its 30 neutral prompts and 12 happy/sad pairs.
  type Change = Record<string, Record<'dog' | 'no_dog', { change: number }>>;
  const organism = JSON.parse(readFileSync(path.join(sharedModel('stories260K-sad-dogs-hf'), 'REFERENCE.json'), 'utf8')) as {
    diffing: {
      neutral_prompts: string[]; happy_sad_pairs: [string, string][]; cosine_diff_vs_happy_sad: number[];
      steer_base_with_diff: Change; subtract_diff_in_fine_tuned: Change; ablate_diff_in_fine_tuned: Change;
    };
    behaviour: { logit_happy_minus_sa: Record<'dog' | 'no_dog', { prompts: string[]; base_mean: number; fine_tuned_mean: number }> };
  };
  const reference = organism.diffing;
  let base: SteerableModel;
  let sadDogs: SteerableModel;
  let diffFile: ReturnType<typeof vectorFileFromDiff>;
  let happySad: ReturnType<typeof vectorFileFromExtraction>;
  let referencePairs: ReturnType<typeof vectorFileFromExtraction>;
  beforeAll(async () => {
    base = await loadShared('stories', { ablation: true });
    sadDogs = await loadFineTune(base, new FolderSource(sharedModel('stories260K-sad-dogs-hf')));
    const prompts = reference.neutral_prompts;
    diffFile = vectorFileFromDiff(await diffModels(base, sadDogs, { prompts }), base.info, sadDogs.info, prompts.length);
    const fitted = async (set: Parameters<typeof extractDirections>[1]) => vectorFileFromExtraction(await extractDirections(base, set, { mode: 'mean' }), base.info);
    happySad = await fitted(contrastiveSetOf(presetById('happy-sad-stories')));
    const pairs = reference.happy_sad_pairs;
    referencePairs = await fitted({ kind: 'texts', positive: pairs.map(([happy]) => happy), negative: pairs.map(([, sad]) => sad) });
  });
  afterAll(async () => {
    await sadDogs?.dispose();
    await base?.dispose();
  });

  it('finds no difference before block 2, and a diff pointing toward sad at layers 3 and 4', () => {
    const cosines = directionCosines(diffFile, happySad);
    const withReferencePairs = directionCosines(diffFile, referencePairs);
    const show = (list: { cosine: number }[]) => list.map(({ cosine: c }) => c.toFixed(3)).join(', ');
    console.log(`cosine(diff, happy − sad) per layer 0–4: preset happy-sad-stories ${show(cosines)}; the organism's own pairs ${show(withReferencePairs)}`);
    console.log('diff norm per layer:', diffFile.directions.map((d) => d.norm.toFixed(3)).join(', '),
      '; held-out AUROC base vs fine-tune:', diffFile.directions.map((d) => d.auroc!.toFixed(2)).join(', '));
    expect(diffFile.directions[0].norm).toBe(0);
    expect(diffFile.directions[1].norm).toBe(0);
    expect(cosines[0].cosine).toBe(0);
    expect(cosines[1].cosine).toBe(0);
    expect(cosines[3].cosine).toBeLessThan(-0.1);
    expect(cosines[4].cosine).toBeLessThan(0);
    // The same pairs and prompts as the organism's torch measurement give its numbers.
    withReferencePairs.forEach(({ cosine: c }, layer) => expect(c).toBeCloseTo(reference.cosine_diff_vs_happy_sad[layer], 2));
    // Where the models differ, their residuals separate held out.
    expect(diffFile.directions[3].auroc).toBeGreaterThan(0.8);
  });

  it("scores steerability where the models differ: steering the base with the diff makes the fine-tune's own continuations likelier", () => {
    const scores = diffFile.directions.map((d) => d.steerability);
    console.log('diff steerability per layer 0–4 (nats per token, +0.25 vs −0.25):', scores.map((s) => s?.toFixed(3) ?? '—').join(', '),
      '; recommended layer', diffFile.recommendedLayer, '; coherent up to', diffFile.directions.find((d) => d.layer === diffFile.recommendedLayer)?.coherentStrength);
    expect(diffFile.steerability?.problem).toBeUndefined();
    // Blocks 0 and 1 are the base's own: no direction there, nothing to score.
    expect(scores[0]).toBeUndefined();
    expect(scores[1]).toBeUndefined();
    for (const layer of [2, 3, 4]) expect(scores[layer]).toBeGreaterThan(0);
    expect([2, 3, 4]).toContain(diffFile.recommendedLayer);
  });

  it('steering the base with the diff lowers logit(▁happy) − logit(▁sa) without dogs; subtracting it from the fine-tune raises it', async () => {
    const tokenizer = base.tokenizer!;
    const happy = tokenizer.encode('happy', { addSpecialTokens: false })[0];
    const sa = tokenizer.encode('sad', { addSpecialTokens: false })[0];
    expect([tokenizer.tokenText(happy), tokenizer.tokenText(sa)]).toEqual(['▁happy', '▁sa']);
    const gap = async (model: SteerableModel, texts: string[], row: SteeringRow = []) => {
      let sum = 0;
      for (const text of texts) {
        const logits = (await model.forward({ tokens: [tokenizer.encode(text)], steering: [row] })).logits!;
        sum += logits[happy] - logits[sa];
      }
      return sum / texts.length;
    };
    const lines: string[] = [];
    const changes: Record<string, Record<number, Record<'steer' | 'subtract' | 'ablate', number>>> = {};
    for (const kind of ['dog', 'no_dog'] as const) {
      const measured = organism.behaviour.logit_happy_minus_sa[kind];
      const [baseGap, fineTuneGap] = [await gap(base, measured.prompts), await gap(sadDogs, measured.prompts)];
      // The organism's own numbers for the unsteered pair, measured in torch.
      expect(baseGap).toBeCloseTo(measured.base_mean, 3);
      expect(fineTuneGap).toBeCloseTo(measured.fine_tuned_mean, 3);
      lines.push(`${kind} prompts (${measured.prompts.length}): base ${baseGap.toFixed(2)}, fine-tune ${fineTuneGap.toFixed(2)}`);
      changes[kind] = {};
      for (const layer of [2, 3]) {
        const vector = diffFile.directions[layer].vector;
        const steer = (await gap(base, measured.prompts, [{ layer, vector }])) - baseGap;
        const subtract = (await gap(sadDogs, measured.prompts, [{ layer, vector: vector.map((x) => -x) }])) - fineTuneGap;
        const ablate = (await gap(sadDogs, measured.prompts, [{ layer, vector, operation: 'ablate' }])) - fineTuneGap;
        changes[kind][layer] = { steer, subtract, ablate };
        const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)}`;
        lines.push(`  diff of layer ${layer}: steer base ${signed(steer)}, subtract from fine-tune ${signed(subtract)}, ablate in fine-tune ${signed(ablate)}`);
        // The same interventions in torch (same prompts, same diff up to float error).
        expect(steer).toBeCloseTo(organism.diffing.steer_base_with_diff[layer][kind].change, 2);
        expect(subtract).toBeCloseTo(organism.diffing.subtract_diff_in_fine_tuned[layer][kind].change, 2);
        expect(ablate).toBeCloseTo(organism.diffing.ablate_diff_in_fine_tuned[layer][kind].change, 2);
      }
    }
    console.log(`mean logit(▁happy) − logit(▁sa) and its change under each intervention:\n${lines.join('\n')}`);
    for (const layer of [2, 3]) {
      expect(changes.no_dog[layer].steer).toBeLessThan(0);
      expect(changes.no_dog[layer].subtract).toBeGreaterThan(0);
    }
    // Projecting the diff out need not raise it (at layer 3 it does not): reported, not asserted.
  });

  it('takes its prompts from a preset: both sides of a base preset, the questions of a chat preset', () => {
    const stories = contrastiveSetOf(presetById('happy-sad-stories'));
    const persona = contrastiveSetOf(presetById('misaligned-persona'));
    if (stories.kind !== 'texts' || persona.kind !== 'persona') throw new Error('the presets changed kind');
    expect(diffPromptsOf(presetById('happy-sad-stories'))).toEqual([...stories.positive, ...stories.negative]);
    expect(diffPromptsOf(presetById('misaligned-persona'))).toEqual(persona.questions.map((content) => [{ role: 'user', content }]));
  });
});

describe('the engine API: a fine-tune beside the base, the diff, four columns', () => {
  let hub: HubServer;
  const engine = createEngine();
  const at = (repo: string) => ({ kind: 'hub' as const, repo, baseUrl: hub.baseUrl });
  beforeAll(async () => {
    hub = await startHubServer({ root: sharedModelsDir, repos: { 't/stories': sharedModel('stories260K-hf'), 't/sad-dogs': sharedModel('stories260K-sad-dogs-hf'), 't/builder': sharedModel(SHARED.builder.folder) } });
    await engine.load('load', { location: at('t/stories'), backend: 'wasm', ablation: true });
  });
  afterAll(async () => {
    await engine.unload();
    await hub.close();
  });

  it('refuses a mismatched second model and keeps the base; then diffs, cancels, and generates the four columns with one seed', async () => {
    await expect(engine.loadFineTune('ft', { location: at('t/builder') })).rejects.toThrow(/layer count: 5 vs 2/);
    expect(engine.fineTuneInfo()).toBeUndefined();
    expect(engine.info()?.id).toBe('t/stories');
    expect((await engine.loadFineTune('ft', { location: at('t/sad-dogs') })).ablation).toBe(true);

    const stages = new Set<string>();
    const cancelled = engine.diff('diff', { prompts: NEUTRAL, batchSize: 1 }, (stage, done) => {
      stages.add(stage);
      if (done === 2) engine.cancel('diff');
    });
    await expect(cancelled).rejects.toThrow(/cancelled/);
    const file = await engine.diff('diff', { prompts: NEUTRAL, preset: 'neutral' }, (stage) => stages.add(stage));
    expect([...stages].sort()).toEqual(['base', 'continuing', 'fine-tune', 'scoring']);
    expect(file.diff).toEqual({ base: { id: 't/stories' }, fineTune: { id: 't/sad-dogs' }, prompts: NEUTRAL.length });

    const vector = file.directions[2].vector;
    const request = { prompt: 'Lily was very', maxNewTokens: 16, sampling: { temperature: 0.8, seed: 3 } };
    const onBase = await engine.generate('base', { ...request, rows: [[], [{ layer: 2, vector }]] });
    const onFineTune = await engine.generateFineTune('fine-tune', { ...request, rows: [[], [{ layer: 2, vector, operation: 'ablate' }]] });
    const columns = [...onBase.rows, ...onFineTune.rows].map((row) => row.text);
    expect(new Set(columns).size).toBeGreaterThan(1);
    // The fine-tune's unsteered column is the fine-tune itself, not the base.
    expect(columns[2]).not.toBe(columns[0]);
    // Loading another base drops the fine-tune: a diff against a stale pair is impossible.
    await engine.load('load', { location: at('t/stories'), backend: 'wasm' });
    expect(engine.fineTuneInfo()).toBeUndefined();
    await expect(engine.diff('diff', { prompts: NEUTRAL })).rejects.toThrow(/no fine-tune is loaded/);
  });

  it('loads a fine-tune fused or not as its base was loaded', async () => {
    expect((await engine.loadFineTune('ft', { location: at('t/sad-dogs') })).fusion?.applied).toEqual(engine.info()?.fusion?.applied);
    expect(engine.info()?.fusion?.applied.length).toBeGreaterThan(0);
    await engine.load('load', { location: at('t/stories'), backend: 'wasm', fuse: false });
    expect(engine.info()?.fusion?.applied).toEqual([]);
    expect((await engine.loadFineTune('ft', { location: at('t/sad-dogs') })).fusion?.applied).toEqual([]);
  });
});
