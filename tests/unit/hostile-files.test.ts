/** Issue 14: hostile or broken model files and servers end in clear errors, never a hang or a huge allocation. */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, mkdirSync, readFileSync, renameSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeControlVectorGguf } from '../../src/engine/directions/gguf.ts';
import { parseVectorFile } from '../../src/engine/directions/vector-file.ts';
import { prepareGraph, readModelGraph } from '../../src/engine/model/load.ts';
import type { ModelInfo } from '../../src/engine/model/steerable-model.ts';
import { TextTokenizer } from '../../src/engine/model/tokenizer.ts';
import { importVector } from '../../src/lib/vector-io.ts';
import { HubSource } from '../../src/engine/sources/hub.ts';
import { FolderSource } from '../../src/engine/sources/node-folder.ts';
import { TEXT_FILE_LIMIT } from '../../src/engine/sources/source.ts';
import { sharedModel } from '../support/paths.ts';

const BUILDER = sharedModel('tiny-random-llama-builder-fp16');

/** A body that never ends: 1 MiB chunks of zeros for as long as anyone reads. */
function endless(prefix = new Uint8Array(0)): ReadableStream<Uint8Array> {
  let sentPrefix = false;
  return new ReadableStream({
    pull(controller) {
      controller.enqueue(sentPrefix ? new Uint8Array(1 << 20) : prefix);
      sentPrefix = true;
    },
  });
}

/** A Hub whose files come from `folder`, except those `override` answers. */
function hubServing(folder: string, override: (file: string) => Response | undefined): typeof fetch {
  return async (input) => {
    const file = decodeURIComponent(String(input).split('/resolve/main/')[1]);
    const answer = override(file);
    if (answer) return answer;
    try {
      return new Response(readFileSync(path.join(folder, file)));
    } catch {
      return new Response('not found', { status: 404 });
    }
  };
}

function scratchCopy(from: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tiller-hostile-'));
  for (const file of ['config.json', 'tokenizer_config.json', 'onnx/model_fp16.onnx', 'onnx/model.onnx.data']) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    copyFileSync(path.join(from, file), path.join(dir, file));
  }
  return dir;
}

describe('4: downloads stop at a sane size', () => {
  it('stops an endless config.json at the text-file limit, without taking gigabytes', async () => {
    const source = new HubSource('evil/endless', { baseUrl: 'http://127.0.0.1:9', fetch: hubServing(BUILDER, (file) => (file === 'config.json' ? new Response(endless()) : undefined)) });
    const rssBefore = process.memoryUsage().rss;
    await expect(readModelGraph(source)).rejects.toThrow(`sends more than ${TEXT_FILE_LIMIT} bytes for config.json, more than the ${TEXT_FILE_LIMIT} a .json file can sensibly have`);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 << 20);
  });

  it('refuses a text file whose announced size is absurd before reading it', async () => {
    const announced = new Response(endless(), { headers: { 'content-length': String(10 * 2 ** 30) } });
    const source = new HubSource('evil/announced', { baseUrl: 'http://127.0.0.1:9', fetch: hubServing(BUILDER, (file) => (file === 'tokenizer.json' ? announced : undefined)) });
    await expect(source.readFile('tokenizer.json')).rejects.toThrow(`sends ${10 * 2 ** 30} bytes for tokenizer.json`);
  });

  it('stops an endless external-data file at the size its graph implies', async () => {
    const real = readFileSync(path.join(BUILDER, 'onnx/model.onnx.data'));
    const source = new HubSource('evil/weights', {
      baseUrl: 'http://127.0.0.1:9',
      fetch: hubServing(BUILDER, (file) => (file === 'onnx/model.onnx.data' ? new Response(endless(real)) : undefined)),
    });
    const { file, bytes, readExternal } = await readModelGraph(source, { dtype: 'fp16' });
    await expect(prepareGraph(bytes, file, readExternal)).rejects.toThrow(/sends more than \d+ bytes for onnx\/model\.onnx\.data, more than the \d+ its graph says it holds/);
    // The same file, served whole, loads: the limit is the graph's own extent.
    const honest = new HubSource('honest/weights', { baseUrl: 'http://127.0.0.1:9', fetch: hubServing(BUILDER, () => undefined) });
    const graph = await readModelGraph(honest, { dtype: 'fp16' });
    expect((await prepareGraph(graph.bytes, graph.file, graph.readExternal)).externalData[0].data.length).toBe(real.length);
  });
});

describe('5: config.json that is a FIFO or null', () => {
  it('refuses a FIFO instead of waiting for a writer forever', async () => {
    const dir = scratchCopy(BUILDER);
    execFileSync('rm', [path.join(dir, 'config.json')]);
    execFileSync('mkfifo', [path.join(dir, 'config.json')]);
    await expect(readModelGraph(new FolderSource(dir))).rejects.toThrow(/config\.json is not a regular file \(a FIFO, socket or device\)/);
  });

  it('says that a null config.json is not a JSON object', async () => {
    const dir = scratchCopy(BUILDER);
    writeFileSync(path.join(dir, 'config.json'), 'null');
    await expect(readModelGraph(new FolderSource(dir))).rejects.toThrow('config.json of ' + path.basename(dir) + ' holds null, not a JSON object of settings: download it again.');
  });
});

describe('16: an external-data file shorter than its graph says', () => {
  it('names the graph, the tensor and the file instead of ONNX Runtime\'s words', async () => {
    const dir = scratchCopy(BUILDER);
    truncateSync(path.join(dir, 'onnx/model.onnx.data'), 1000);
    const { file, bytes, readExternal } = await readModelGraph(new FolderSource(dir), { dtype: 'fp16' });
    await expect(prepareGraph(bytes, file, readExternal)).rejects.toThrow(
      /onnx\/model_fp16\.onnx places \S+ at bytes \d+…\d+ of model\.onnx\.data, which has 1000 bytes: the graph and its data file do not belong together; download both again/,
    );
  });
});

describe('12: GGUF control vectors with NaN or Inf', () => {
  it('refuses them at import in the browser path, naming the layer', () => {
    const marker = 12345.5;
    const vector = new Float32Array(64).fill(0.5);
    vector[7] = marker;
    const bytes = writeControlVectorGguf({ modelHint: 'llama', directions: [{ layer: 1, vector: new Float32Array(64).fill(0.25) }, { layer: 3, vector }] });
    // Patch the marker to NaN in place, as a file written by a broken tool would hold it.
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let patched = 0;
    for (let offset = 0; offset + 4 <= bytes.length; offset += 4) {
      if (view.getFloat32(offset, true) === marker) {
        view.setFloat32(offset, Number.NaN, true);
        patched++;
      }
    }
    expect(patched).toBe(1);
    const model = { id: 'stories260K-hf', hiddenSize: 64, layerCount: 5 } as ModelInfo;
    expect(() => importVector(bytes, 'broken.gguf', model)).toThrow('broken.gguf: tensor "direction.3" (layer 3) holds NaN at index 7: every value of a direction must be finite');
  });
});

describe('16: messages that name the file and the fix', () => {
  it('a tokenizer.json without "model"', () => {
    expect(() => TextTokenizer.fromFiles({ tokenizerJson: { version: '1.0' }, tokenizerConfig: {} })).toThrow(
      'tokenizer.json has no "model" section: it is not a Hugging Face tokenizers file, or it was cut short. Download it again',
    );
  });

  it('max_position_embeddings 0 in config.json', async () => {
    const dir = scratchCopy(BUILDER);
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, max_position_embeddings: 0 }));
    await expect(readModelGraph(new FolderSource(dir))).rejects.toThrow('gives max_position_embeddings = 0, but it must be a whole number ≥ 1: fix config.json or download it again.');
  });

  it('a symlinked graph, as in the Hugging Face cache layout, is found and loads', async () => {
    const dir = scratchCopy(BUILDER);
    const blobs = mkdtempSync(path.join(os.tmpdir(), 'tiller-blobs-'));
    renameSync(path.join(dir, 'onnx/model_fp16.onnx'), path.join(blobs, 'abc123'));
    symlinkSync(path.join(blobs, 'abc123'), path.join(dir, 'onnx/model_fp16.onnx'));
    const source = new FolderSource(dir);
    expect(await source.listOnnxFiles()).toEqual(['model.onnx.data', 'model_fp16.onnx']);
    const { file, bytes, readExternal } = await readModelGraph(source);
    expect(file).toBe('onnx/model_fp16.onnx');
    expect((await prepareGraph(bytes, file, readExternal)).analysis.layerCount).toBeGreaterThan(0);
  });

  it('a vector JSON with a byte-order mark reads the same in the CLI and the browser', () => {
    const json = JSON.stringify({ format: 'tiller.vector', version: 1, model: { id: 'stories260K-hf' }, hiddenSize: 2, directions: [{ layer: 1, vector: [0.5, -0.5] }] });
    const withBom = `\uFEFF${json}`;
    expect(parseVectorFile(withBom, 'bom.json')).toEqual(parseVectorFile(json, 'bom.json'));
    // The browser decodes bytes with TextDecoder, which drops the mark; the CLI reads the text as is.
    const model = { id: 'stories260K-hf', hiddenSize: 2, layerCount: 5 } as ModelInfo;
    expect(importVector(new TextEncoder().encode(withBom), 'bom.json', model).directions[0].vector).toEqual(new Float32Array([0.5, -0.5]));
  });
});
