import { copyFileSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/engine/generation/generate.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { warmUpRuntime } from '../../src/engine/model/runtime.ts';
import { decoderConfigOf } from '../../src/engine/model/config.ts';
import { UnsupportedGraphError } from '../../src/engine/onnx/analysis.ts';
import { OnnxFormatError } from '../../src/engine/onnx/model.ts';
import { FolderUrlSource, HubSource } from '../../src/engine/sources/hub.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { type FileProgress, ModelFileError } from '../../src/engine/sources/source.ts';
import { type HubServer, startHubServer } from '../support/hub-server.ts';
import { sharedModel, sharedModelsDir } from '../support/paths.ts';
import { tinyGraph } from '../support/tiny-graph.ts';

const FIRST_SENTENCE = 'Once upon a time, there was a little girl named Lily.';

/** A scratch model folder outside the repository: some shared files copied, others written. */
function modelFolder(from: string, copy: string[], write: Record<string, Uint8Array | string> = {}): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tiller-model-'));
  for (const file of [...copy, ...Object.keys(write)]) mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
  for (const file of copy) copyFileSync(path.join(sharedModel(from), file), path.join(dir, file));
  for (const [file, content] of Object.entries(write)) writeFileSync(path.join(dir, file), content);
  return dir;
}

const STORIES_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'];

describe('loading from a server in the Hub layout', () => {
  let hub: HubServer;
  beforeAll(async () => {
    hub = await startHubServer({ root: sharedModelsDir, repos: { 'tiller-test/stories': sharedModel('stories260K-hf') } });
  });
  afterAll(() => hub.close());

  it('downloads every file with progress as bytes done / total, then generates', async () => {
    const events: FileProgress[] = [];
    const model = await loadModel(new HubSource('tiller-test/stories', { baseUrl: hub.baseUrl }), { backend: 'wasm', onProgress: (p) => events.push(p) });
    const onnx = events.filter((e) => e.file === 'onnx/model.onnx');
    expect(onnx.at(-1)).toMatchObject({ done: true, total: 1302365, loaded: 1302365 });
    expect(onnx.every((e, i) => i === 0 || e.loaded >= onnx[i - 1].loaded)).toBe(true);
    expect(events.some((e) => e.file === 'tokenizer.json' && e.done)).toBe(true);
    const result = await generate(model, { prompt: '', maxNewTokens: 20 });
    expect(result.rows[0].text.startsWith(FIRST_SENTENCE)).toBe(true);
    await model.dispose();
  });

  it('fetches the external data file the graph names', async () => {
    hub.requests.length = 0;
    const model = await loadModel(new HubSource('owner/tiny-random-llama-builder-fp16', { baseUrl: hub.baseUrl }), { backend: 'wasm' });
    expect(hub.requests.some((r) => r.endsWith('/onnx/model_fp16.onnx'))).toBe(true);
    expect(hub.requests.some((r) => r.endsWith('/onnx/model.onnx.data'))).toBe(true);
    await model.dispose();
  });

  it('loads a plain folder URL too (the app serves local models that way)', async () => {
    const model = await loadModel(new FolderUrlSource(`${hub.baseUrl}/tiller-test/stories/resolve/main`), { backend: 'wasm' });
    expect(model.info.layerCount).toBe(5);
    await model.dispose();
  });

  it('says a download was cut off, naming the file', async () => {
    hub.setFault('onnx/model.onnx', { kind: 'truncate', afterBytes: 500_000 });
    try {
      const error = await loadModel(new HubSource('tiller-test/stories', { baseUrl: hub.baseUrl }), { backend: 'wasm' }).catch((e) => e);
      expect(error).toBeInstanceOf(ModelFileError);
      expect(error.kind).toBe('truncated');
      expect(error.message).toMatch(/onnx\/model\.onnx .*retry/);
    } finally {
      hub.setFault('onnx/model.onnx', undefined);
    }
  });

  it('refuses an HTML page served instead of the graph', async () => {
    hub.setFault('onnx/model.onnx', { kind: 'html' });
    try {
      const error = await loadModel(new HubSource('tiller-test/stories', { baseUrl: hub.baseUrl }), { backend: 'wasm' }).catch((e) => e);
      expect(error.kind).toBe('not-onnx');
      expect(error.message).toMatch(/HTML page instead of onnx\/model\.onnx/);
    } finally {
      hub.setFault('onnx/model.onnx', undefined);
    }
  });
});

describe('clear errors for broken model folders', () => {
  it('a truncated model file', async () => {
    const bytes = readFileSync(path.join(sharedModel('stories260K-hf'), 'onnx/model.onnx'));
    const dir = modelFolder('stories260K-hf', STORIES_FILES.slice(0, 3), { 'onnx/model.onnx': bytes.subarray(0, 700_000) });
    const error = await loadModel(new FolderSource(dir), { backend: 'wasm' }).catch((e) => e);
    expect(error).toBeInstanceOf(OnnxFormatError);
    expect(error.message).toMatch(/onnx\/model\.onnx \(700000 bytes\) is not a complete ONNX model.*download it again/);
  });

  it('a folder without config.json', async () => {
    const dir = modelFolder('stories260K-hf', STORIES_FILES.slice(1));
    const error = await loadModel(new FolderSource(dir), { backend: 'wasm' }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect(error.message).toMatch(/has no config\.json: a model folder needs config\.json beside onnx\//);
  });

  it('a missing external data file', async () => {
    const dir = modelFolder('tiny-random-llama-builder-fp16', ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model_fp16.onnx']);
    const error = await loadModel(new FolderSource(dir), { backend: 'wasm' }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect(error.kind).toBe('missing');
    expect(error.message).toMatch(/onnx\/model\.onnx\.data is missing from .*onnx\/model_fp16\.onnx keeps its weights there/);
  });

  it('a graph it cannot steer', async () => {
    const dir = modelFolder('stories260K-hf', STORIES_FILES.slice(0, 3), { 'onnx/model.onnx': tinyGraph() });
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ num_hidden_layers: 1 }));
    const error = await loadModel(new FolderSource(dir), { backend: 'wasm' }).catch((e) => e);
    expect(error).toBeInstanceOf(UnsupportedGraphError);
    expect(error.message).toMatch(/found 0 residual additions after the embedding \(Gather of input_ids\), expected 2 per layer/);
  });

  it('a config.json that disagrees with the graph', async () => {
    const config = JSON.parse(readFileSync(path.join(sharedModel('stories260K-hf'), 'config.json'), 'utf8'));
    const dir = modelFolder('stories260K-hf', STORIES_FILES.slice(1), { 'config.json': JSON.stringify({ ...config, num_hidden_layers: 12 }) });
    const error = await loadModel(new FolderSource(dir), { backend: 'wasm' }).catch((e) => e);
    expect(error.message).toMatch(/num_hidden_layers = 12 but onnx\/model\.onnx has past_key_values for 5 layers/);
  });
});

describe('config.json field names of other families', () => {
  it('fills the canonical names from GPT-2, OPT, Falcon and MPT names, under text_config too, without overriding canonical ones', () => {
    expect(decoderConfigOf({ n_layer: 12, n_embd: 768, n_head: 12, n_positions: 1024, n_inner: null, vocab_size: 50257 })).toMatchObject({
      num_hidden_layers: 12, hidden_size: 768, num_attention_heads: 12, max_position_embeddings: 1024, vocab_size: 50257,
    });
    expect(decoderConfigOf({ hidden_size: 768, ffn_dim: 3072 }).intermediate_size).toBe(3072);
    expect(decoderConfigOf({ num_kv_heads: 8 }).num_key_value_heads).toBe(8);
    expect(decoderConfigOf({ d_model: 2048, n_layers: 24, n_heads: 16, max_seq_len: 2048 })).toMatchObject({
      hidden_size: 2048, num_hidden_layers: 24, num_attention_heads: 16, max_position_embeddings: 2048,
    });
    expect(decoderConfigOf({ text_config: { n_layer: 4 }, n_layer: 99 }).num_hidden_layers).toBe(4);
    expect(decoderConfigOf({ max_position_embeddings: 4096, n_positions: 1024 }).max_position_embeddings).toBe(4096);
  });
});

describe('runtime warm-up', () => {
  it('starts ONNX Runtime ahead of the first model, once, with a graph it accepts', async () => {
    // The engine worker calls this when it starts; a graph ORT refused would turn into the message below.
    const started = warmUpRuntime();
    expect(warmUpRuntime()).toBe(started);
    expect(await started).toBeUndefined();
  });
});
