/**
 * `npm run models:fetch` (scripts/models-fetch.ts), run for real as a subprocess against a local server in
 * the Hub's URL layout: the files it writes are byte-identical to the shared models, optional files may be
 * missing, and failures say what went wrong without leaving half-written files.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HubServer, startHubServer } from '../support/hub-server.ts';
import { sharedModel } from '../support/paths.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const stories = sharedModel('stories260K-hf');
const builder = sharedModel('tiny-random-llama-builder-fp16');

interface Run { code: number | null; stdout: string; stderr: string }

function modelsFetch(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.TILLER_HUB_URL;
  delete env.TILLER_MODELS_DIR;
  return new Promise((resolve) => {
    execFile(process.execPath, ['node_modules/tsx/dist/cli.mjs', 'scripts/models-fetch.ts', ...args], { cwd: repoRoot, env, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = !error ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr });
      });
  });
}

/** Every file under a folder, as paths relative to it with '/' separators, sorted. */
async function listFiles(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(folder, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'))
    .sort();
}

async function expectIdentical(out: string, reference: string, files: string[]) {
  for (const file of files) {
    const [got, want] = await Promise.all([readFile(path.join(out, file)), readFile(path.join(reference, file))]);
    expect(got.equals(want), `${file} differs from ${reference}`).toBe(true);
  }
}

let hub: HubServer;
let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'tiller-models-fetch-'));
  hub = await startHubServer({
    root: path.join(tmp, 'empty'),
    repos: { 'tiller-test/stories260K-hf': stories, 'tiller-test/tiny-random-llama-builder-fp16': builder },
  });
});
afterAll(async () => {
  await hub?.close();
  await rm(tmp, { recursive: true, force: true });
});

describe('models:fetch', () => {
  it('downloads a torch export byte for byte, skipping optional files the repository lacks', async () => {
    const out = path.join(tmp, 'stories');
    const run = await modelsFetch(['tiller-test/stories260K-hf', '--hub', hub.baseUrl, '--out', out]);
    expect(run.code, run.stderr).toBe(0);
    const files = ['config.json', 'generation_config.json', 'onnx/model.onnx', 'tokenizer.json', 'tokenizer_config.json'];
    expect(await listFiles(out)).toEqual(files);
    await expectIdentical(out, stories, files);
    expect(run.stderr).toContain('onnx/model.onnx');
    expect(run.stderr).toMatch(/chat_template\.jinja\s+\(not in the repository; optional\)/);
    expect(run.stdout.trim()).toBe(out);
  });

  it("picks the config's dtype and fetches the external data file the graph names", async () => {
    const out = path.join(tmp, 'builder');
    const run = await modelsFetch(['tiller-test/tiny-random-llama-builder-fp16', '--hub', hub.baseUrl, '--out', out]);
    expect(run.code, run.stderr).toBe(0);
    const files = ['config.json', 'onnx/model.onnx.data', 'onnx/model_fp16.onnx', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json'];
    expect(await listFiles(out)).toEqual(files);
    await expectIdentical(out, builder, files);
    expect(hub.requests).toContain('/tiller-test/tiny-random-llama-builder-fp16/resolve/main/onnx/model.onnx.data');
  });

  it('says which variant is missing and suggests others', async () => {
    const out = path.join(tmp, 'q4');
    const run = await modelsFetch(['tiller-test/stories260K-hf', '--dtype', 'q4', '--hub', hub.baseUrl, '--out', out]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('onnx/model_q4.onnx is missing');
    expect(run.stderr).toContain('try another --dtype');
  });

  it('names an unknown repository and an unknown dtype', async () => {
    const missing = await modelsFetch(['tiller-test/no-such-model', '--hub', hub.baseUrl, '--out', path.join(tmp, 'none')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('config.json is missing from tiller-test/no-such-model');
    const badDtype = await modelsFetch(['tiller-test/stories260K-hf', '--dtype', 'fp8']);
    expect(badDtype.code).toBe(2);
    expect(badDtype.stderr).toContain('unknown dtype "fp8"');
    const noId = await modelsFetch([]);
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain('usage: npm run models:fetch');
  });

  it('leaves no half-written file when a download breaks off', async () => {
    const out = path.join(tmp, 'truncated');
    hub.setFault('onnx/model.onnx', { kind: 'truncate', afterBytes: 1000 });
    try {
      const run = await modelsFetch(['tiller-test/stories260K-hf', '--hub', hub.baseUrl, '--out', out]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('broke off');
      const files = await listFiles(out);
      expect(files).not.toContain('onnx/model.onnx');
      expect(files.some((file) => file.endsWith('.part'))).toBe(false);
    } finally {
      hub.setFault('onnx/model.onnx', undefined);
    }
  });
});

describe('models:fetch and hostile repositories (issue 14)', () => {
  it('8: refuses an external-data name that is not a model data file (an .svg the app would serve)', async () => {
    const repo = path.join(tmp, 'empty', 'evil');
    await mkdir(path.join(repo, 'onnx'), { recursive: true });
    for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(path.join(builder, file), path.join(repo, file));
    // Same length as "model.onnx.data", so the graph's protobuf lengths stay valid.
    const graph = (await readFile(path.join(builder, 'onnx/model_fp16.onnx'))).toString('latin1').replaceAll('model.onnx.data', 'payload1234.svg');
    await writeFile(path.join(repo, 'onnx/model_fp16.onnx'), Buffer.from(graph, 'latin1'));
    await writeFile(path.join(repo, 'onnx/payload1234.svg'), '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
    const out = path.join(tmp, 'evil-out');
    const run = await modelsFetch(['someone/evil', '--hub', hub.baseUrl, '--out', out]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('onnx/model_fp16.onnx names "payload1234.svg" as its external data, which is not a model data file name');
    expect(await listFiles(out).catch(() => [])).not.toContain('onnx/payload1234.svg');
    expect(hub.requests.some((r) => r.endsWith('/payload1234.svg'))).toBe(false);
  });
});
