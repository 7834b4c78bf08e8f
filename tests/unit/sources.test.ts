import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PickedFilesSource } from '../../src/engine/sources/files.ts';
import { HubSource } from '../../src/engine/sources/hub.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { type FileProgress, ModelFileError } from '../../src/engine/sources/source.ts';
import { DTYPES, onnxFileForDtype, parseDtype, pickDtype, dtypePreference } from '../../src/engine/sources/variants.ts';
import { type HubServer, startHubServer } from '../support/hub-server.ts';
import { sharedModel, sharedModelsDir } from '../support/paths.ts';

const STORIES_REPO = 'tiller-test/stories260K-hf';
const BUILDER_REPO = 'tiller-test/tiny-random-llama-builder-fp16';
const onDisk = (folder: string, file: string) => new Uint8Array(readFileSync(sharedModel(`${folder}/${file}`)));
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
const json = (bytes: Uint8Array | undefined) => JSON.parse(new TextDecoder().decode(bytes));

/** The error a promise rejects with, checked to be a ModelFileError. */
async function fileError(promise: Promise<unknown>): Promise<ModelFileError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(ModelFileError);
  return error as ModelFileError;
}

function expectProgressEndsAt(events: FileProgress[], file: string, size: number) {
  expect(events.length).toBeGreaterThan(1);
  expect(events.every((p) => p.file === file && p.total === size)).toBe(true);
  for (let i = 1; i < events.length; i++) expect(events[i].loaded).toBeGreaterThanOrEqual(events[i - 1].loaded);
  expect(events.slice(0, -1).every((p) => !p.done)).toBe(true);
  expect(events.at(-1)).toEqual({ file, loaded: size, total: size, done: true });
}

describe('HubSource against a local Hub-layout server', () => {
  let hub: HubServer;
  let source: HubSource;
  beforeAll(async () => {
    hub = await startHubServer({ root: sharedModelsDir, repos: { [STORIES_REPO]: sharedModel('stories260K-hf') } });
    source = new HubSource(STORIES_REPO, { baseUrl: hub.baseUrl });
  });
  afterEach(() => {
    for (const file of ['config.json', 'onnx/model.onnx']) hub.setFault(file, undefined);
  });
  afterAll(() => hub.close());

  it('reads config.json and onnx/model.onnx byte-identical to disk, with progress up to the total', async () => {
    expect(await source.readFile('config.json')).toEqual(onDisk('stories260K-hf', 'config.json'));
    const events: FileProgress[] = [];
    const graph = await source.readFile('onnx/model.onnx', (p) => events.push(p));
    const expected = onDisk('stories260K-hf', 'onnx/model.onnx');
    expect(graph.length).toBe(expected.length);
    expect(sameBytes(graph, expected)).toBe(true);
    expectProgressEndsAt(events, 'onnx/model.onnx', expected.length);
    expect(events.length).toBeLessThanOrEqual(102);
    expect(hub.requests).toContain(`/${STORIES_REPO}/resolve/main/onnx/model.onnx`);
  });

  it('maps other repos to folders under the root, and cannot list onnx/', async () => {
    const builder = new HubSource(BUILDER_REPO, { baseUrl: `${hub.baseUrl}/` });
    expect(json(await builder.readFile('config.json'))['transformers.js_config'].dtype).toBe('fp16');
    expect(await builder.listOnnxFiles()).toBeUndefined();
  });

  it('reports a cut-off download as truncated, and says to retry', async () => {
    hub.setFault('onnx/model.onnx', { kind: 'truncate', afterBytes: 1000 });
    const error = await fileError(source.readFile('onnx/model.onnx'));
    expect(error.kind).toBe('truncated');
    expect(error.file).toBe('onnx/model.onnx');
    expect(error.message).toMatch(/onnx\/model\.onnx.*retry/);
  });

  it('reports 404 as missing, naming the file; optional files come back undefined', async () => {
    const error = await fileError(source.readFile('onnx/model_q4f16.onnx'));
    expect(error.kind).toBe('missing');
    expect(error.file).toBe('onnx/model_q4f16.onnx');
    expect(error.message).toContain(`onnx/model_q4f16.onnx is missing from ${STORIES_REPO}`);
    hub.setFault('config.json', { kind: 'status', status: 404 });
    expect((await fileError(source.readFile('config.json'))).kind).toBe('missing');
    expect(await source.readOptionalFile('chat_template.jinja')).toBeUndefined();
  });

  it('reports other HTTP errors with their status, also from readOptionalFile', async () => {
    hub.setFault('config.json', { kind: 'status', status: 500 });
    const error = await fileError(source.readOptionalFile('config.json'));
    expect(error.kind).toBe('http');
    expect(error.message).toContain('HTTP 500');
  });

  it('refuses an HTML page served in place of the graph', async () => {
    hub.setFault('onnx/model.onnx', { kind: 'html' });
    const error = await fileError(source.readFile('onnx/model.onnx'));
    expect(error.kind).toBe('not-onnx');
    expect(error.message).toContain('HTML page instead of onnx/model.onnx');
  });

  it('sniffs an HTML body even when the content-type says binary', async () => {
    const fetchHtml = async () =>
      new Response('\n  <!DOCTYPE html><html></html>', { headers: { 'content-type': 'application/octet-stream' } });
    const error = await fileError(new HubSource(STORIES_REPO, { fetch: fetchHtml }).readFile('onnx/model.onnx_data'));
    expect(error.kind).toBe('not-onnx');
  });

  it('aborts mid-download and before the answer', async () => {
    // Past the first progress step (1 % of the file), so that a progress event arrives before the stall.
    hub.setFault('onnx/model.onnx', { kind: 'delay', ms: 5000, afterBytes: 200_000 });
    const controller = new AbortController();
    let started = Date.now();
    const midway = fileError(source.readFile('onnx/model.onnx', (p) => p.loaded > 0 && controller.abort(), controller.signal));
    expect((await midway).kind).toBe('aborted');
    expect(Date.now() - started).toBeLessThan(2000);

    hub.setFault('onnx/model.onnx', { kind: 'delay', ms: 5000 });
    const early = new AbortController();
    setTimeout(() => early.abort(), 50);
    started = Date.now();
    expect((await fileError(source.readFile('onnx/model.onnx', undefined, early.signal))).kind).toBe('aborted');
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('encodes path segments and the revision, and validates ids and base URLs', async () => {
    const urls: string[] = [];
    const recordingFetch = async (input: string | URL | Request) => {
      urls.push(String(input));
      return new Response(new Uint8Array([8, 1]));
    };
    const pr = new HubSource('owner/My.Model-1', { baseUrl: 'https://hub.example/', revision: 'refs/pr/1', fetch: recordingFetch });
    expect(await pr.readFile('onnx/model q4#1.onnx')).toEqual(new Uint8Array([8, 1]));
    expect(urls).toEqual(['https://hub.example/owner/My.Model-1/resolve/refs%2Fpr%2F1/onnx/model%20q4%231.onnx']);
    expect(pr.revision).toBe('refs/pr/1');

    await expect(pr.readFile('../secrets')).rejects.toThrow(/not a file path/);
    for (const id of ['gpt2', 'a/b/c', 'owner/', '/name', 'owner/na me', 'owner/..']) {
      expect(() => new HubSource(id)).toThrow(/owner\/name/);
    }
    expect(() => new HubSource('o/n', { baseUrl: 'file:///models' })).toThrow(/must be http\(s\)/);
    expect(() => new HubSource('o/n', { baseUrl: 'huggingface.co' })).toThrow(/not a URL/);
  });
});

describe('FolderSource', () => {
  const folder = sharedModel('tiny-random-llama-builder-fp16');
  const source = new FolderSource(folder);

  it('reads onnx/model_fp16.onnx and its data with progress, and lists onnx/', async () => {
    expect(source.id).toBe('tiny-random-llama-builder-fp16');
    expect(await source.readFile('onnx/model_fp16.onnx')).toEqual(onDisk('tiny-random-llama-builder-fp16', 'onnx/model_fp16.onnx'));
    const events: FileProgress[] = [];
    const data = await source.readFile('onnx/model.onnx.data', (p) => events.push(p));
    expect(sameBytes(data, onDisk('tiny-random-llama-builder-fp16', 'onnx/model.onnx.data'))).toBe(true);
    expectProgressEndsAt(events, 'onnx/model.onnx.data', data.length);
    expect(events.length).toBeGreaterThan(2);
    expect(await source.listOnnxFiles()).toEqual(['model.onnx.data', 'model_fp16.onnx']);
  });

  it('names missing files, returns undefined for optional ones, and honours abort', async () => {
    const error = await fileError(source.readFile('onnx/model.onnx'));
    expect(error.kind).toBe('missing');
    expect(error.message).toContain('onnx/model.onnx is missing from');
    expect(await source.readOptionalFile('chat_template.jinja')).toBeUndefined();
    expect((await fileError(source.readFile('onnx'))).kind).toBe('missing');
    const aborted = AbortSignal.abort();
    expect((await fileError(source.readFile('config.json', undefined, aborted))).kind).toBe('aborted');
    expect(await new FolderSource(sharedModel('stories260K')).listOnnxFiles()).toEqual([]);
  });
});

describe('PickedFilesSource', () => {
  const blob = (text: string) => new Blob([text]);

  it('strips the folder the user picked, and reads blobs with progress', async () => {
    const graph = onDisk('stories260K-hf', 'onnx/model.onnx');
    const source = new PickedFilesSource([
      { path: 'SmolLM2/config.json', file: blob('{"model_type":"llama"}') },
      { path: 'SmolLM2/onnx/model.onnx', file: new Blob([graph]) },
      { path: 'SmolLM2/onnx/model.onnx_data', file: blob('weights') },
    ]);
    expect(source.id).toBe('SmolLM2');
    expect(json(await source.readFile('config.json')).model_type).toBe('llama');
    const events: FileProgress[] = [];
    expect(sameBytes(await source.readFile('onnx/model.onnx', (p) => events.push(p)), graph)).toBe(true);
    expectProgressEndsAt(events, 'onnx/model.onnx', graph.length);
    expect(await source.listOnnxFiles()).toEqual(['model.onnx', 'model.onnx_data']);

    const error = await fileError(source.readFile('tokenizer.json'));
    expect(error.kind).toBe('missing');
    expect(error.message).toContain('tokenizer.json');
    expect(await source.readOptionalFile('generation_config.json')).toBeUndefined();
    expect((await fileError(source.readFile('config.json', undefined, AbortSignal.abort()))).kind).toBe('aborted');
  });

  it('keeps onnx/ when only that folder was picked, and files one by one go under onnx/', async () => {
    const onnxOnly = new PickedFilesSource([{ path: 'onnx/model_fp16.onnx', file: blob('g') }, { path: 'onnx/model.onnx.data', file: blob('d') }]);
    expect(await onnxOnly.listOnnxFiles()).toEqual(['model.onnx.data', 'model_fp16.onnx']);
    const nested = new PickedFilesSource([{ path: 'models/tiny/config.json', file: blob('{}') }, { path: 'models/tiny/onnx/model.onnx', file: blob('g') }]);
    expect(nested.id).toBe('tiny');
    expect(await nested.listOnnxFiles()).toEqual(['model.onnx']);
    const loose = new PickedFilesSource([{ path: 'config.json', file: blob('{}') }, { path: 'model_q4.onnx', file: blob('g') }, { path: 'model_q4.onnx_data', file: blob('d') }]);
    expect(loose.id).toBe('picked files');
    expect(await loose.listOnnxFiles()).toEqual(['model_q4.onnx', 'model_q4.onnx_data']);
    expect(new TextDecoder().decode(await loose.readFile('config.json'))).toBe('{}');
  });
});

describe('variants', () => {
  it('names files as Transformers.js does', () => {
    expect(DTYPES.map((dtype) => onnxFileForDtype(dtype))).toEqual([
      'onnx/model.onnx', 'onnx/model_fp16.onnx', 'onnx/model_quantized.onnx', 'onnx/model_int8.onnx',
      'onnx/model_uint8.onnx', 'onnx/model_q4.onnx', 'onnx/model_q4f16.onnx', 'onnx/model_bnb4.onnx',
    ]);
    expect(onnxFileForDtype('q4f16', 'decoder_model_merged')).toBe('onnx/decoder_model_merged_q4f16.onnx');
  });

  it('picks fp16 for the builder folder and fp32 for stories260K-hf', async () => {
    for (const [folder, dtype] of [['tiny-random-llama-builder-fp16', 'fp16'], ['stories260K-hf', 'fp32']] as const) {
      const source = new FolderSource(sharedModel(folder));
      expect(pickDtype(await source.listOnnxFiles(), json(await source.readFile('config.json')))).toBe(dtype);
    }
  });

  it('honours transformers.js_config.dtype, then the preferences among the files present', () => {
    const fp16Config = { 'transformers.js_config': { dtype: 'fp16' } };
    expect(pickDtype(undefined, fp16Config)).toBe('fp16');
    expect(pickDtype(undefined, { 'transformers.js_config': { dtype: { model: 'q4f16' } } })).toBe('q4f16');
    expect(pickDtype(undefined, { 'transformers.js_config': { dtype: 'auto' } })).toBe('fp32');
    expect(pickDtype(undefined, {}, ['q4', 'fp32'])).toBe('q4');
    expect(pickDtype(['model.onnx', 'model_q4.onnx'], fp16Config)).toBe('fp32');
    expect(pickDtype(['onnx/model_q4f16.onnx', 'onnx/model_q4.onnx'], {}, ['q4f16', 'q4'])).toBe('q4f16');
  });

  it('explains which variants exist when none fits', () => {
    expect(() => pickDtype(['model_q4f16.onnx', 'model_q4f16.onnx_data'], {}, ['fp32', 'q4']))
      .toThrow('onnx/ has only q4f16 (onnx/model_q4f16.onnx), none of fp32, q4');
    const error = (() => {
      try {
        pickDtype(['decoder.onnx'], {});
      } catch (e) {
        return e as ModelFileError;
      }
    })();
    expect(error?.kind).toBe('missing');
    expect(error?.message).toContain('found decoder.onnx');
    expect(() => pickDtype([], {})).toThrow(/no \.onnx files there/);
  });

  it('parses dtypes, listing the valid ones otherwise', () => {
    expect(parseDtype('q4f16')).toBe('q4f16');
    expect(parseDtype(' FP16 ')).toBe('fp16');
    expect(() => parseDtype('fp8')).toThrow('unknown dtype "fp8": use one of fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4');
  });
});

describe('dtype choice by backend', () => {
  it('never picks an fp16 variant for a WebGPU adapter without shader-f16, and says what exists', () => {
    const builderConfig = { 'transformers.js_config': { dtype: 'fp16' } };
    expect(pickDtype(['model_fp16.onnx', 'model_q4.onnx'], builderConfig, dtypePreference('webgpu', false))).toBe('q4');
    expect(pickDtype(['model_fp16.onnx', 'model_q4.onnx'], builderConfig, dtypePreference('webgpu', true))).toBe('fp16');
    expect(pickDtype(undefined, { 'transformers.js_config': { dtype: 'q4f16' } }, dtypePreference('webgpu', false))).toBe('fp32');
    expect(() => pickDtype(['model_fp16.onnx', 'model.onnx.data'], builderConfig, dtypePreference('webgpu', false))).toThrow(/has only fp16 .*none of fp32, q4/);
  });
});
