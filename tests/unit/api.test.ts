import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/api.ts';
import type { TokenEvent } from '../../src/engine/generation/generate.ts';
import { contrastiveSetOf, presetById } from '../../src/engine/directions/presets.ts';
import { multiplierFor, scaledDirection } from '../../src/engine/directions/strength.ts';
import { type HubServer, startHubServer } from '../support/hub-server.ts';
import { sharedModel, sharedModelsDir } from '../support/paths.ts';

describe('the engine API the worker exposes', () => {
  let hub: HubServer;
  const engine = createEngine();
  const location = () => ({ kind: 'hub' as const, repo: 'tiller-test/stories', baseUrl: hub.baseUrl });
  beforeAll(async () => {
    hub = await startHubServer({ root: sharedModelsDir, repos: { 'tiller-test/stories': sharedModel('stories260K-hf') } });
  });
  afterAll(async () => {
    await engine.unload();
    await hub.close();
  });

  it('loads, reports the model, and generates', async () => {
    const info = await engine.load('load', { location: location(), backend: 'wasm' });
    expect(info).toMatchObject({ layerCount: 5, hiddenSize: 64, flavour: 'torch', backend: 'wasm' });
    const result = await engine.generate('a', { prompt: '', maxNewTokens: 12 });
    expect(result.rows[0].text).toMatch(/^Once upon a time, there was a little girl/);
  });

  it('a load that fails keeps the working model: it still generates the same text', async () => {
    await engine.load('load', { location: location(), backend: 'wasm' });
    const before = await engine.generate('a', { prompt: 'Lily was', maxNewTokens: 12 });
    await expect(engine.load('load', { location: { kind: 'hub', repo: 'tiller-test/missing', baseUrl: hub.baseUrl }, backend: 'wasm' })).rejects.toThrow();
    expect(engine.info()?.layerCount).toBe(5);
    const after = await engine.generate('a', { prompt: 'Lily was', maxNewTokens: 12 });
    expect(after.rows[0].text).toBe(before.rows[0].text);
  });

  it('runs overlapping jobs one after another, each complete', async () => {
    const [first, second] = await Promise.all([
      engine.generate('a', { prompt: 'Tom was', maxNewTokens: 10 }),
      engine.generate('b', { prompt: 'Lily was', maxNewTokens: 10 }),
    ]);
    expect(first.rows[0].tokenIds).toHaveLength(10);
    expect(second.rows[0].tokenIds).toHaveLength(10);
  });

  it('a newer request under the same job id cancels the older one within a step', async () => {
    let seen = 0;
    const older = engine.generate('slider', { prompt: '', maxNewTokens: 200 }, (_: TokenEvent) => {
      seen++;
    });
    while (seen < 3) await new Promise((resolve) => setTimeout(resolve, 1));
    const newer = engine.generate('slider', { prompt: 'Lily', maxNewTokens: 5 });
    expect((await older).rows[0].finishReason).toBe('cancelled');
    expect((await newer).rows[0].tokenIds).toHaveLength(5);
  });

  it('loading a model while a generation runs stops the generation first, then loads', async () => {
    let seen = 0;
    const running = engine.generate('gen', { prompt: '', maxNewTokens: 200 }, () => {
      seen++;
    });
    while (seen < 2) await new Promise((resolve) => setTimeout(resolve, 1));
    const reload = engine.load('load', { location: location(), backend: 'wasm' });
    expect((await running).rows[0].finishReason).toBe('cancelled');
    expect((await reload).layerCount).toBe(5);
    expect((await engine.generate('gen', { prompt: '', maxNewTokens: 3 })).rows[0].tokenIds).toHaveLength(3);
  });

  it('extracts a direction into a vector file and shows next tokens, steered by it', async () => {
    const stages: string[] = [];
    const file = await engine.extract('extract', { set: contrastiveSetOf(presetById('happy-sad-stories')), preset: 'happy-sad-stories' },
      (stage, done, total) => stages.push(`${stage} ${done}/${total}`));
    expect(file).toMatchObject({ format: 'tiller.vector', preset: 'happy-sad-stories', hiddenSize: 64, recommendedLayer: 3 });
    expect(stages).toContain('capturing 32/32');
    expect(stages.at(-1)).toMatch(/^scoring (\d+)\/\1$/); // then what steering does at each layer, to the end
    expect(file.directions[3].coherentStrength).toBeGreaterThan(0);
    // Another layer's coherent range, on the examples the engine kept; a direction it did not compute is refused.
    const at = (layer: number, promptSetHash = file.promptSetHash!) => {
      const d = file.directions[layer];
      return engine.coherentRange('coherent', { promptSetHash, direction: { layer, direction: d.vector, norm: d.norm, meanResidualNorm: d.meanResidualNorm } });
    };
    const again = await at(3);
    expect(again.strength).toBe(file.directions[3].coherentStrength);
    const first = await at(0);
    expect(first.layer).toBe(0);
    expect(first.tried.length).toBeGreaterThan(2);
    await expect(at(0, 'f'.repeat(64))).rejects.toThrow(/compute the direction again/);
    const direction = file.directions[file.recommendedLayer!];
    const vector = scaledDirection(direction.vector, multiplierFor(-0.25, { norm: direction.norm, meanResidualNorm: direction.meanResidualNorm! }));
    const [plain, sad] = await engine.nextTokens('next', { prompt: 'Lily was very', rows: [[], [{ layer: direction.layer, vector }]], top: 3 });
    expect(plain).toHaveLength(3);
    expect(sad[0].logit).not.toBe(plain[0].logit);
    expect(await engine.cacheInfo()).toBeUndefined(); // Node has no Cache Storage
  });

  it('Cancel while scoring keeps the fitted direction, recommended by separation and saying why; Cancel while capturing loses it', async () => {
    const set = contrastiveSetOf(presetById('happy-sad-stories'));
    let cancelled = false;
    const file = await engine.extract('extract', { set, preset: 'happy-sad-stories' }, (stage) => {
      if (stage === 'scoring' && !cancelled) {
        cancelled = true;
        engine.cancel('extract');
      }
    });
    expect(file.directions).toHaveLength(5);
    expect(file.steerability?.problem).toMatch(/^steering was not measured: scoring was cancelled, so the star marks the layer that separates best/);
    const bestSeparation = file.directions.reduce((a, b) => ((b.separation ?? 0) > (a.separation ?? 0) ? b : a)).layer;
    expect(file.recommendedLayer).toBe(bestSeparation);
    expect(file.directions.every((d) => d.steerability === undefined)).toBe(true);
    // Before the directions exist there is nothing to keep: the job says cancelled.
    let capturing = false;
    const early = engine.extract('extract', { set }, (stage) => {
      if (stage === 'capturing' && !capturing) {
        capturing = true;
        engine.cancel('extract');
      }
    });
    await expect(early).rejects.toThrow(/cancelled/);
  });

  it('reads pasted text with the meter (BOS read, not measured), and reloads the same model for ablation', async () => {
    const file = await engine.extract('extract', { set: contrastiveSetOf(presetById('happy-sad-stories')) });
    const direction = file.directions[file.recommendedLayer!];
    const text = 'Tom was very sad.';
    const meter = await engine.projectTokens('meter', { text, layer: direction.layer, direction: direction.vector });
    expect(meter.map((t) => t.text).join('')).toBe(text);
    expect(meter.map((t) => t.id)).toEqual(engine.tokenize(text).slice(1));

    expect(engine.info()?.ablation).toBe(false);
    const generated = await engine.generate('a', { prompt: 'Lily', maxNewTokens: 8, rows: [[]] });
    const info = await engine.enableAblation('load');
    expect(info).toMatchObject({ ablation: true, id: engine.info()!.id, layerCount: 5 });
    // The same model: unsteered text is unchanged, and ablation now runs.
    const again = await engine.generate('a', { prompt: 'Lily', maxNewTokens: 8, rows: [[], [{ layer: direction.layer, vector: direction.vector, operation: 'ablate' }]] });
    expect(again.rows[0].text).toBe(generated.rows[0].text);
    expect(again.rows[1].tokenIds).toHaveLength(8);
    const lens = await engine.logitLens('lens', direction.vector, 4);
    expect(lens.raised).toHaveLength(4);
  });
});

