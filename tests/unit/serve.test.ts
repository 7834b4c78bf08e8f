import type { Server } from 'node:http';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAppServer } from '../../cli/serve-files.ts';
import { sharedModelsDir } from '../support/paths.ts';

describe('the app server behind tiller serve', () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    const app = mkdtempSync(path.join(os.tmpdir(), 'tiller-app-'));
    mkdirSync(path.join(app, 'assets'));
    writeFileSync(path.join(app, 'index.html'), '<!doctype html><title>Tiller</title>');
    writeFileSync(path.join(app, 'assets', 'engine.wasm'), new Uint8Array([0, 97, 115, 109]));
    server = await startAppServer(app, sharedModelsDir, 0, '127.0.0.1');
    const address = server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('serves the app cross-origin isolated, wasm with its own type', async () => {
    const page = await fetch(`${base}/`);
    expect(page.headers.get('cross-origin-opener-policy')).toBe('same-origin');
    expect(page.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
    expect(await page.text()).toContain('<title>Tiller</title>');
    expect((await fetch(`${base}/assets/engine.wasm`)).headers.get('content-type')).toBe('application/wasm');
  });

  it('lists the model folders with their onnx files and serves them byte for byte', async () => {
    const listing = await (await fetch(`${base}/models/index.json`)).json();
    expect(listing.models).toContainEqual({ name: 'stories260K-hf', onnx: ['model.onnx'], chat: false });
    expect(listing.models).toContainEqual(expect.objectContaining({ name: 'tiny-random-llama-builder-fp16', chat: true }));
    const onnx = await fetch(`${base}/models/stories260K-hf/onnx/model.onnx`);
    expect(Number(onnx.headers.get('content-length'))).toBe(1302365);
    expect((await onnx.arrayBuffer()).byteLength).toBe(1302365);
  });

  it('lists and serves the embedded stories260K after the models folder, the same model as the shared copy', async () => {
    const listing = await (await fetch(`${base}/models/index.json`)).json();
    expect(listing.models.at(-1)).toEqual({ name: 'stories260K', onnx: ['model.onnx'], chat: false, embedded: true });
    const embedded = await (await fetch(`${base}/models/stories260K/onnx/model.onnx`)).arrayBuffer();
    const shared = await (await fetch(`${base}/models/stories260K-hf/onnx/model.onnx`)).arrayBuffer();
    expect(Buffer.from(embedded).equals(Buffer.from(shared))).toBe(true);
  });

  it('never serves files outside its folders', async () => {
    expect((await fetch(`${base}/models/..%2F..%2Fetc%2Fpasswd`)).status).toBe(404);
    expect((await fetch(`${base}/..%2Fpackage.json`)).status).toBe(404);
    expect((await fetch(`${base}/nope.js`)).status).toBe(404);
  });
});
