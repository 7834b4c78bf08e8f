/** Issue 14: hostile or broken model files and servers end in clear errors, never a hang or a huge allocation. */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareGraph, readModelGraph } from '../../src/engine/model/load.ts';
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
