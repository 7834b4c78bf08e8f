/**
 * The `tiller` command line, run for real as a subprocess (`node bin/tiller.mjs …`) against the shared
 * models: what it prints, what it exits with, and how it refuses bad input.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHubServer } from '../support/hub-server.ts';
import { writeSyntheticModel } from '../support/synthetic-decoder.ts';
import { decodeModules, modulesFromAnsi } from '../support/qr.ts';
// @ts-expect-error: a plain .mjs script of the test command, without types
import { freePort } from '../../scripts/free-port.mjs';
import { sharedGraphPath, sharedModel, sharedModelsDir } from '../support/paths.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const stories = sharedModel('stories260K-hf');
const builder = sharedModel('tiny-random-llama-builder-fp16');
const gqaFile = sharedGraphPath('gqa');
const STORY_START = 'Once upon a time, there was a little girl named Lily.';

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs `node bin/tiller.mjs ...args` in the repository root; never rejects, whatever the exit code. */
function tiller(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, NPM_CONFIG_LOGLEVEL: 'error', ...env };
  if (!env.TILLER_HUB_URL) delete childEnv.TILLER_HUB_URL;
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/tiller.mjs', ...args], { cwd: repoRoot, env: childEnv, timeout: 60_000, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = !error ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr: stderr + (code === null ? `\n(not a normal exit: ${error?.message})` : '') });
      });
  });
}

/** Runs tiller, expects exit code 0, and returns its output. */
async function ok(args: string[], env?: Record<string, string>): Promise<Run> {
  const run = await tiller(args, env);
  expect(run.code, `tiller ${args.join(' ')}\n${run.stderr}`).toBe(0);
  return run;
}

const greedy = (model: string, ...extra: string[]) => ['generate', model, '--prompt', '', '--max-new-tokens', '20', ...extra];

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'tiller-cli-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function writeVector(name: string, hiddenSize: number, vector: number[]): Promise<string> {
  const file = path.join(tmp, name);
  await writeFile(file, JSON.stringify({ format: 'tiller.vector', version: 1, model: { id: 'stories260K-hf' }, hiddenSize, directions: [{ layer: 2, vector }] }));
  return file;
}

describe('tiller inspect', () => {
  it('reports a torch graph with one residual Add per layer (stories260K-hf)', async () => {
    const { stdout } = await ok(['inspect', stories]);
    expect(stdout).toMatch(/^flavour\s+torch/m);
    expect(stdout).toMatch(/^layers\s+5$/m);
    expect(stdout).toMatch(/^hidden size\s+64$/m);
    expect(stdout).toMatch(/^residual\s+float32$/m);
    const residuals = [...stdout.matchAll(/^\s+(\d+)\s+(\S+)\s+← Add /gm)];
    expect(residuals.map((m) => Number(m[1]))).toEqual([0, 1, 2, 3, 4]);
    expect(new Set(residuals.map((m) => m[2])).size).toBe(5);
    expect(stdout).toMatch(/^layout\s+sequential/m);
    expect(stdout).toMatch(/^batch rows\s+independent/m);
    expect(stdout).toMatch(/^self-check\s+steering verified exact on this model \(\d+ ms\)$/m);
    expect(stdout).toMatch(/^fused\s+5 attention blocks → MultiHeadAttention, 10 rotaries → RotaryEmbedding, 11 RMSNorms → SimplifiedLayerNormalization \(logits as published within \S+\)$/m);
  });

  it('--no-fuse inspects the graph as published', async () => {
    const { stdout } = await ok(['inspect', stories, '--no-fuse']);
    expect(stdout).toMatch(/^fused\s+nothing \(--no-fuse\)$/m);
  });

  it('--json gives the same analysis as data', async () => {
    const report = JSON.parse((await ok(['inspect', stories, '--json'])).stdout);
    expect(report).toMatchObject({ flavour: 'torch', layerCount: 5, hiddenSize: 64, residualDtype: 'float32' });
    expect(report.layers).toHaveLength(5);
    for (const [i, layer] of report.layers.entries()) {
      expect(layer).toMatchObject({ layer: i, materialised: true });
      expect(layer.residual).toEqual(expect.any(String));
    }
  });

  it('reports the fused builder graph in fp16, the last residual not materialised', async () => {
    const report = JSON.parse((await ok(['inspect', builder, '--json'])).stdout);
    expect(report).toMatchObject({ flavour: 'fused', layerCount: 2, residualDtype: 'float16', file: 'onnx/model_fp16.onnx', fusion: { applied: [] } });
    expect(report.selfCheck).toMatchObject({ ok: true, message: 'steering verified exact on this model' });
    expect(report.externalData).toEqual(['model.onnx.data']);
    expect(report.layers[0].residual).toEqual(expect.any(String));
    expect(report.layers[1]).toMatchObject({ residual: null, materialised: false });
  });

  it('says a q8 graph runs its batch rows one at a time, and a Phi one has parallel layers', async () => {
    const shape = { layers: 2, hidden: 32, heads: 4, kvHeads: 4, intermediate: 64, vocab: 96, maxPositions: 48 };
    const q8 = JSON.parse((await ok(['inspect', writeSyntheticModel(path.join(tmp, 'q8'), shape, 'llama-q8'), '--json'])).stdout);
    expect(q8).toMatchObject({ file: 'onnx/model_quantized.onnx', residualLayout: 'sequential', selfCheck: { ok: true } });
    expect(q8.rowsRunSeparately).toMatch(/DynamicQuantizeLinear/);
    const { stdout } = await ok(['inspect', writeSyntheticModel(path.join(tmp, 'phi'), shape, 'phi')]);
    expect(stdout).toMatch(/^layout\s+parallel/m);
    expect(stdout).toMatch(/^self-check\s+steering verified exact on this model/m);
  });

  it('reads a single .onnx file without config: layers from past_key_values, int32 input_ids', async () => {
    const report = JSON.parse((await ok(['inspect', gqaFile, '--json'])).stdout);
    expect(report).toMatchObject({ flavour: 'fused', layerCount: 2, inputs: { inputIds: 'int32' } });
    expect(report.kvCache.map((entry: { key: string }) => entry.key)).toEqual(['past_key_values.0.key', 'past_key_values.1.key']);
  });
});

describe('tiller check', () => {
  it.each([
    ['stories260K-hf (folder)', stories, 5],
    ['tiny-random-llama-builder-fp16 (folder)', builder, 2],
    ['tiny-random-qwen-gqa-decoder (single .onnx)', gqaFile, 2],
  ])('passes on %s', async (_name, target, layers) => {
    expectCheckPassed((await ok(['check', target])).stdout, layers);
  });

  it('passes on an OPT-structured export (flattened MLP, positions from attention_mask, config.json in OPT names)', async () => {
    const shape = { layers: 3, hidden: 32, heads: 4, kvHeads: 4, intermediate: 64, vocab: 96, maxPositions: 48 };
    expectCheckPassed((await ok(['check', writeSyntheticModel(path.join(tmp, 'opt'), shape, 'opt')])).stdout, 3);
  });

  function expectCheckPassed(stdout: string, layers: number) {
    expect(stdout).toContain(`${layers} layers`);
    const zero = /zero steering: largest logit difference (\S+) \(tolerance (\S+)\) ok/.exec(stdout);
    expect(zero, stdout).not.toBeNull();
    expect(Number(zero![1])).toBeLessThanOrEqual(Number(zero![2]));
    expect(stdout.match(/^layer \d+: steering by v moves the residual by v .* ok$/gm)).toHaveLength(layers);
    expect(stdout.trimEnd().split('\n').at(-1)).toBe('check passed');
  }
});

describe('tiller generate', () => {
  let plain: Promise<Run> | undefined;
  /** Greedy, unsteered text of stories260K-hf from BOS, shared by the tests below. */
  const plainText = async () => (await (plain ??= ok(greedy(stories)))).stdout;

  it('greedy text from a folder on stdout, speed on stderr', async () => {
    const run = await (plain ??= ok(greedy(stories)));
    expect(run.stdout.startsWith(STORY_START)).toBe(true);
    expect(run.stdout).not.toContain('tokens/s');
    expect(run.stderr).toMatch(/20 tokens, [\d.]+ tokens\/s \(wasm\)/);
  });

  it('without a model, the embedded stories260K gives the same text', async () => {
    const run = await ok(['generate', '--prompt', '', '--max-new-tokens', '20']);
    expect(run.stderr).toContain('using the embedded stories260K');
    expect(run.stdout).toBe(await plainText());
  });

  it('the same text from a Hub id (TILLER_HUB_URL)', async () => {
    const hub = await startHubServer({ root: sharedModelsDir, repos: { 'tiller-test/stories260K-hf': stories } });
    try {
      const run = await ok(greedy('tiller-test/stories260K-hf'), { TILLER_HUB_URL: hub.baseUrl });
      expect(run.stdout).toBe(await plainText());
      expect(hub.requests).toContain('/tiller-test/stories260K-hf/resolve/main/onnx/model.onnx');
    } finally {
      await hub.close();
    }
  });

  it('a steering vector at layer 2 changes the greedy text; strength 0 does not', async () => {
    const vector = await writeVector('steer.json', 64, Array.from({ length: 64 }, (_, i) => 2 * Math.sin(i * 12.9898)));
    const steered = await ok(greedy(stories, '--vector', vector, '--layer', '2', '--strength', '1'));
    const zero = await ok(greedy(stories, '--vector', vector, '--layer', '2', '--strength', '0'));
    const text = await plainText();
    expect(steered.stdout).not.toBe(text);
    expect(steered.stdout.trim().length).toBeGreaterThan(0);
    expect(zero.stdout).toBe(text);
  });

  it('refuses a vector made for another hidden size, naming both sizes', async () => {
    const run = await tiller(greedy(stories, '--vector', await writeVector('small.json', 32, Array(32).fill(1)), '--layer', '2'));
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/hidden size 32.*hidden size 64/);
    expect(run.stdout).toBe('');
  });

  it('refuses a malformed vector file, naming the bad field', async () => {
    const run = await tiller(greedy(stories, '--vector', await writeVector('short.json', 64, Array(10).fill(1)), '--layer', '2'));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('field "directions[0].vector" must hold 64 finite numbers');
  });
});

describe('tiller serve', () => {
  it('prints the room address as a QR code that reads back to it', async () => {
    const app = await mkdtemp(path.join(tmp, 'app-'));
    await writeFile(path.join(app, 'index.html'), '<!doctype html><title>Tiller</title>');
    const port: number = await freePort(0);
    const child = spawn(process.execPath, ['bin/tiller.mjs', 'serve', '--app', app, '--host', '127.0.0.1', '--port', String(port)], { cwd: repoRoot });
    let stdout = '';
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
          if (modulesFromAnsi(stdout).length > 20 && stdout.trimEnd().endsWith('\x1b[0m')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`tiller serve exited ${code}: ${stdout}`)));
      });
      const url = `http://127.0.0.1:${port}/`;
      expect(stdout).toContain(url);
      expect(decodeModules(modulesFromAnsi(stdout))).toBe(url);
      expect((await fetch(url)).status).toBe(200);
    } finally {
      child.kill();
    }
  });
});

describe('tiller errors', () => {
  it('an unknown command exits 2 with the usage', async () => {
    for (const args of [['frobnicate', stories], ['frobnicate']]) {
      const run = await tiller(args);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('unknown command "frobnicate"');
      expect(run.stderr).toContain('usage:');
    }
  });

  it('an unknown option exits 2 with the usage line of its command only', async () => {
    const run = await tiller(['generate', stories, '--prompt', '', '--max-tokens', '5']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('unknown option --max-tokens');
    expect(run.stderr).toContain('usage:\n  tiller generate <model> --prompt TEXT');
    expect(run.stderr).not.toContain('tiller serve');
  });

  it('a mistyped option gets the option it was probably meant to be', async () => {
    const run = await tiller(['generate', stories, '--prompt', '', '--strenght', '0.2']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('unknown option --strenght: did you mean --strength?');
  });

  it('a path that is neither a folder nor a Hub id exits 2', async () => {
    const run = await tiller(['inspect', path.join(tmp, 'no', 'such', 'folder')]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('is neither a folder nor a Hub id (owner/name)');
  });

  it('generate on a folder without config.json exits 1 and says so', async () => {
    const folder = path.join(tmp, 'no-config');
    await mkdir(path.join(folder, 'onnx'), { recursive: true });
    await copyFile(path.join(stories, 'onnx/model.onnx'), path.join(folder, 'onnx/model.onnx'));
    const run = await tiller(['generate', folder, '--prompt', 'Hi']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('has no config.json');
  });

  it('inspect on a truncated .onnx exits 1 and says it is not a complete model', async () => {
    const bytes = await readFile(sharedGraphPath('stories'));
    const file = path.join(tmp, 'truncated.onnx');
    await writeFile(file, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    const run = await tiller(['inspect', file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('is not a complete ONNX model');
    expect(run.stderr).toContain('truncated');
  });
});

describe('tiller extract and next', () => {
  it('extracts happy − sad, prints the per-layer table and recommendation, and the files steer generate and next', async () => {
    const json = path.join(tmp, 'happy.json');
    const { stdout } = await ok(['extract', stories, '--preset', 'happy-sad-stories', '--out', json]);
    expect(stdout).toMatch(/layer\s+‖direction‖\s+residual norm\s+AUROC\s+separation \(d′\)\s+steerability \(±0.25\)\s+perplexity ×/);
    expect(stdout).toMatch(/coherent up to ±0\.\d+ at layer \d/);
    const recommended = Number(/recommended layer (\d+); wrote/.exec(stdout)![1]);
    expect(stdout).toMatch(new RegExp(`\\n\\s+${recommended} .*← recommended`));
    const file = JSON.parse(await readFile(json, 'utf8'));
    expect(file).toMatchObject({ format: 'tiller.vector', model: { id: 'stories260K-hf' }, method: 'mean', mode: 'mean', preset: 'happy-sad-stories', recommendedLayer: recommended });
    expect(file.directions).toHaveLength(5);
    expect(file.steerability).toMatchObject({ strength: 0.25 });
    expect(file.directions.every((d: { steerability: number }) => Number.isFinite(d.steerability))).toBe(true);
    expect(file.directions[recommended].coherentStrength).toBeGreaterThan(0);

    const story = ['generate', stories, '--prompt', 'Lily was very', '--max-new-tokens', '20'];
    const plain = await ok(story);
    const steered = await ok([...story, '--vector', json, '--strength', '-0.25']);
    expect(steered.stdout).not.toBe(plain.stdout);
    expect(steered.stderr).toContain(`steering layer ${recommended}: strength -0.25 (relative`);

    const next = await ok(['next', stories, '--prompt', 'Lily was very', '--vector', json, '--strength', '0.25', '--top', '5', '--json']);
    const view = JSON.parse(next.stdout);
    expect(view.unsteered).toHaveLength(5);
    expect(view.steered).toHaveLength(5);
    expect(view.steered[0].logit).not.toBe(view.unsteered[0].logit);

    // The views: logit lens, the meter on a text, and ablation in place of addition.
    const lens = JSON.parse((await ok(['lens', stories, '--vector', json, '--top', '4', '--json'])).stdout);
    expect(lens).toMatchObject({ layer: recommended });
    expect(lens.raised).toHaveLength(4);
    expect(lens.raised[0].effect).toBeGreaterThan(0);
    expect(lens.lowered[0].effect).toBeLessThan(0);
    const read = async (text: string) => JSON.parse((await ok(['meter', stories, '--vector', json, '--text', text, '--json'])).stdout);
    const sad = await read('Lily was sad and cried.');
    expect(sad.tokens.map((t: { text: string }) => t.text).join('')).toBe('Lily was sad and cried.');
    const mean = (reading: { tokens: { meter: number }[] }) => reading.tokens.reduce((sum, t) => sum + t.meter, 0) / reading.tokens.length;
    expect(mean(await read('Lily was happy and laughed.'))).toBeGreaterThan(mean(sad));
    const ablated = await ok([...story, '--vector', json, '--ablate']);
    expect(ablated.stderr).toContain(`ablating the direction at layer ${recommended}`);
    expect((await tiller(['lens', stories])).stderr).toContain('lens needs --vector FILE');
  });

  it('exports GGUF without block 0, saying so; the GGUF file steers as an absolute multiplier', async () => {
    const gguf = path.join(tmp, 'happy.gguf');
    const run = await ok(['extract', stories, '--preset', 'happy-sad-stories', '--method', 'pca', '--out', gguf]);
    expect(run.stderr).toContain('layer 0 is left out of the GGUF file: llama.cpp cannot load a direction for block 0');
    const next = await ok(['next', stories, '--prompt', 'Lily was very', '--vector', gguf, '--layer', '3', '--strength', '-2', '--json']);
    expect(next.stderr).toContain('steering layer 3: -2 × the control vector');
    const missing = await tiller(['next', stories, '--prompt', 'x', '--vector', gguf, '--layer', '0']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('has no direction for layer 0 (it has 1, 2, 3, 4)');
  });

  it('takes contrastive texts from files, and refuses a chat preset on a model without a chat template', async () => {
    const positive = path.join(tmp, 'pos.txt');
    const negative = path.join(tmp, 'neg.json');
    await writeFile(positive, 'Tom was very happy.\nSam smiled and laughed.\nMia was glad.\n');
    await writeFile(negative, JSON.stringify(['Tom was very sad.', 'Sam cried and cried.', 'Mia was upset.']));
    await ok(['extract', stories, '--positive', positive, '--negative', negative, '--mode', 'last', '--out', path.join(tmp, 'files.json')]);
    const chat = await tiller(['extract', stories, '--preset', 'pirate-plain', '--out', path.join(tmp, 'x.json')]);
    expect(chat.code).toBe(1);
    expect(chat.stderr).toContain('has no chat template');
    const bad = await tiller(['extract', stories, '--preset', 'nope', '--out', path.join(tmp, 'x.json')]);
    expect(bad.stderr).toMatch(/unknown preset "nope"; known presets: .*happy-sad-stories/);
  });
});

describe('tiller diff', () => {
  const sadDogs = sharedModel('stories260K-sad-dogs-hf');
  it('diffs the sad-dogs fine-tune against its base; the file steers the base and is taken out of the fine-tune', async () => {
    const prompts = path.join(tmp, 'neutral.txt');
    await writeFile(prompts, 'Tom went to the park with his mom.\nThe sun was up and the sky was blue.\nMom made soup for lunch.\nOne day, Ben saw a bird in a tree.\n');
    const json = path.join(tmp, 'sad-dogs.json');
    const { stdout } = await ok(['diff', stories, sadDogs, '--prompts', prompts, '--out', json]);
    expect(stdout).toContain('stories260K-sad-dogs-hf − stories260K-hf: mean residual over prompt tokens of 4 prompts');
    expect(stdout).toMatch(/\n\s+0\s+0\.0000\s/); // block 0 is the base's: no difference there
    const file = JSON.parse(await readFile(json, 'utf8'));
    expect(file).toMatchObject({ model: { id: 'stories260K-hf' }, diff: { base: { id: 'stories260K-hf' }, fineTune: { id: 'stories260K-sad-dogs-hf' }, prompts: 4 } });

    const next = async (model: string, extra: string[]) => JSON.parse((await ok(['next', model, '--prompt', 'Lily was very', '--top', '512', '--json', ...extra])).stdout);
    const gap = (tokens: { piece: string; logit: number }[]) => tokens.find((t) => t.piece === '▁happy')!.logit - tokens.find((t) => t.piece === '▁sa')!.logit;
    const onBase = await next(stories, ['--vector', json, '--layer', '2', '--strength', '0.08']);
    expect(gap(onBase.steered)).toBeLessThan(gap(onBase.unsteered));
    const onFineTune = await next(sadDogs, ['--vector', json, '--layer', '2', '--strength', '-0.08']);
    expect(gap(onFineTune.steered)).toBeGreaterThan(gap(onFineTune.unsteered));
    const ablated = await next(sadDogs, ['--vector', json, '--layer', '2', '--ablate']);
    expect(gap(ablated.steered)).not.toBe(gap(ablated.unsteered));
  });

  it('refuses a second model of another architecture, naming what differs, and a diff without prompts', async () => {
    const run = await tiller(['diff', stories, builder, '--preset', 'happy-sad-stories', '--out', path.join(tmp, 'x.json')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("is not a fine-tune of stories260K-hf's architecture (layer count: 5 vs 2; hidden size: 64 vs 16");
    const bare = await tiller(['diff', stories, sadDogs, '--out', path.join(tmp, 'x.json')]);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('diff needs --preset NAME (its prompts) or --prompts FILE');
  });
});

describe('tiller against hostile files and flags (issue 14)', () => {
  /** The builder graph with its data-file location (15 bytes, "model.onnx.data") renamed in place, so protobuf lengths stay valid. */
  async function graphNaming(location: string): Promise<string> {
    expect(location).toHaveLength('model.onnx.data'.length);
    const folder = await mkdtemp(path.join(tmp, 'graph-'));
    const bytes = await readFile(path.join(builder, 'onnx/model_fp16.onnx'));
    const renamed = Buffer.from(bytes.toString('latin1').replaceAll('model.onnx.data', location), 'latin1');
    await writeFile(path.join(folder, 'model.onnx'), renamed);
    return path.join(folder, 'model.onnx');
  }

  it('10: single-file mode refuses external data outside the folder or on a device, as folder mode does', async () => {
    const outside = await tiller(['check', await graphNaming('../../etc/hosts')]);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toContain('"../../etc/hosts" is not a file path inside the model folder');
    const device = await graphNaming('zero.onnx_data1');
    await symlink('/dev/zero', path.join(path.dirname(device), 'zero.onnx_data1'));
    const run = await tiller(['check', device]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/zero\.onnx_data1 is not a regular file \(a FIFO, socket or device\)/);
  });

  it('13: a strength that overflows the residual is refused with the non-finite error, not empty output and exit 0', async () => {
    const vector = path.join(tmp, 'ones.json');
    await writeFile(vector, JSON.stringify({ format: 'tiller.vector', version: 1, model: { id: 'stories260K-hf' }, hiddenSize: 64, directions: [{ layer: 2, vector: Array(64).fill(1) }] }));
    for (const command of ['generate', 'next']) {
      const run = await tiller([command, stories, '--prompt', 'Lily', '--max-new-tokens', '4', '--vector', vector, '--strength', '1e30'].filter((arg, i, all) => command === 'generate' || (arg !== '--max-new-tokens' && all[i - 1] !== '--max-new-tokens')));
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toMatch(/steers layer 2 with a vector of length 8\.00e\+30, which overflows the model's float32 residual: the steering is too strong/);
    }
  });

  it('14: number flags out of range are usage errors', async () => {
    for (const [flag, value, says] of [
      ['--temperature', '-1', 'a number ≥ 0 (0 is greedy)'], ['--top-p', '2', 'a number above 0, at most 1'], ['--top-k', '0', 'a whole number ≥ 1'],
      ['--repetition-penalty', '0', 'a number above 0 (1 is none)'], ['--seed', '1.5', 'a whole number'], ['--max-new-tokens', '0', 'a whole number ≥ 1'],
    ]) {
      const run = await tiller(['generate', stories, '--prompt', '', flag, value]);
      expect(run.code, `${flag} ${value}`).toBe(2);
      expect(run.stderr).toContain(`${flag} must be ${says}, not "${value}"`);
    }
  });

  it('15: --json output is complete when piped', async () => {
    const args = ['bin/tiller.mjs', 'next', stories, '--prompt', 'Lily was very', '--top', '512', '--json'];
    const piped = await new Promise<string>((resolve, reject) =>
      execFile('sh', ['-c', `"${process.execPath}" ${args.map((a) => `'${a}'`).join(' ')} | cat`], { cwd: repoRoot, maxBuffer: 64 << 20, timeout: 60_000 },
        (error, stdout) => (error ? reject(error) : resolve(stdout))));
    expect(piped.length).toBeGreaterThan(65536);
    expect(JSON.parse(piped).unsteered).toHaveLength(512);
  });
});
