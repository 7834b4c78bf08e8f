import type { Server } from 'node:http';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { APP_CSP, startAppServer } from '../../cli/serve-files.ts';
import { sharedModelsDir } from '../support/paths.ts';

// Fault injection: opening any file whose name starts with "emfile-" fails as if the process ran out of descriptors.
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const open: typeof real.open = (file, ...rest) =>
    path.basename(String(file)).startsWith('emfile-') ? Promise.reject(Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' })) : real.open(file, ...rest);
  return { ...real, open };
});

/** Sends raw bytes and returns whatever the server answers before it closes the socket. */
function rawRequest(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(bytes));
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
  });
}

/** Asks for a file, reads the start of the answer, then hangs up mid-body. */
function abortedDownload(port: number, pathname: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(`GET ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`));
    socket.once('data', () => socket.destroy());
    socket.on('close', () => resolve());
    socket.on('error', reject);
  });
}

const openFileDescriptors = () => readdirSync('/proc/self/fd').length;

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

describe('tiller serve under hostile requests (issue 14)', () => {
  let server: Server;
  let port: number;
  let base: string;
  let app: string;
  beforeAll(async () => {
    app = mkdtempSync(path.join(os.tmpdir(), 'tiller-app-'));
    writeFileSync(path.join(app, 'index.html'), readFileSync(path.resolve('index.html')));
    const models = mkdtempSync(path.join(os.tmpdir(), 'tiller-models-'));
    const model = path.join(models, 'tiny');
    mkdirSync(path.join(model, 'onnx'), { recursive: true });
    writeFileSync(path.join(model, 'config.json'), '{}');
    writeFileSync(path.join(model, 'onnx', 'model.onnx'), new Uint8Array(4 << 20));
    writeFileSync(path.join(model, 'evil.svg'), '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
    writeFileSync(path.join(model, 'evil.html'), '<script>alert(1)</script>');
    writeFileSync(path.join(model, 'emfile-weights.bin'), 'x');
    symlinkSync('/etc', path.join(models, 'etc-link'));
    symlinkSync(path.join(model, 'config.json'), path.join(model, 'config-link.json'));
    server = await startAppServer(app, models, 0, '127.0.0.1');
    const address = server.address();
    port = typeof address === 'object' && address ? address.port : 0;
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('1: answers URLs that do not parse with 400 and keeps serving', async () => {
    expect((await fetch(`${base}/%`)).status).toBe(400);
    expect((await fetch(`${base}/models/%E0%A4%A`)).status).toBe(400);
    expect(await rawRequest(port, 'GET http://[x/ HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect(await rawRequest(port, 'NONSENSE\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(`${base}/models/tiny/config.json`)).status).toBe(200);
  });

  it('2: answers a read error with 500, not a crash', async () => {
    const response = await fetch(`${base}/models/tiny/emfile-weights.bin`);
    expect(response.status).toBe(500);
    expect(await response.text()).toContain('EMFILE');
    expect((await fetch(`${base}/models/tiny/config.json`)).status).toBe(200);
  });

  it('8: serves models/ as data only, and the app with its CSP as a header', async () => {
    for (const name of ['evil.svg', 'evil.html']) {
      const response = await fetch(`${base}/models/tiny/${name}`);
      expect(response.headers.get('content-type')).toBe('application/octet-stream');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('content-security-policy')).toContain('sandbox');
    }
    expect((await fetch(`${base}/models/tiny/config.json`)).headers.get('content-type')).toBe('application/json');
    const page = await fetch(`${base}/`);
    expect(page.headers.get('content-security-policy')).toBe(APP_CSP);
    // The header and index.html's meta tag say the same thing.
    expect(await page.text()).toContain(`content="${APP_CSP}"`);
  });

  it('9: refuses symlinks whose real path leaves the models folder', async () => {
    expect((await fetch(`${base}/models/etc-link/passwd`)).status).toBe(404);
    expect((await fetch(`${base}/models/etc-link/hostname`)).status).toBe(404);
    // A link that stays inside the folder is fine.
    expect(await (await fetch(`${base}/models/tiny/config-link.json`)).text()).toBe('{}');
  });

  it('takes 1,000 mixed malformed, aborted and normal requests with flat descriptors and memory', async () => {
    const kinds = [
      () => rawRequest(port, 'GET /% HTTP/1.1\r\nHost: x\r\n\r\n'),
      () => rawRequest(port, 'GET http://[x/ HTTP/1.1\r\n\r\n'),
      () => rawRequest(port, '\x00\x01garbage\r\n\r\n'),
      () => abortedDownload(port, '/models/tiny/onnx/model.onnx'),
      () => abortedDownload(port, '/models/tiny/emfile-weights.bin'),
      async () => expect((await (await fetch(`${base}/models/tiny/onnx/model.onnx`)).arrayBuffer()).byteLength).toBe(4 << 20),
      async () => expect((await fetch(`${base}/models/index.json`)).status).toBe(200),
      async () => expect((await fetch(`${base}/models/..%2F..%2Fetc%2Fpasswd`)).status).toBe(404),
    ];
    const round = async (count: number) => {
      for (let start = 0; start < count; start += 20) {
        await Promise.all(Array.from({ length: 20 }, (_, j) => kinds[(start + j) % kinds.length]()));
      }
    };
    await round(80); // warm up: sockets, buffers and the JIT reach their steady state
    await new Promise((resolve) => setTimeout(resolve, 200));
    const fdsBefore = openFileDescriptors();
    const memoryBefore = process.memoryUsage().rss;
    await round(1000);
    // Aborted streams close, and the client's idle keep-alive sockets expire, within a few seconds; leaked ones never do.
    let fdsAfter = openFileDescriptors();
    for (let waited = 0; fdsAfter > fdsBefore + 4 && waited < 15_000; waited += 250) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      fdsAfter = openFileDescriptors();
    }
    const memoryAfter = process.memoryUsage().rss;
    expect(fdsAfter - fdsBefore).toBeLessThanOrEqual(4);
    expect(memoryAfter - memoryBefore).toBeLessThan(64 << 20);
    expect(await (await fetch(`${base}/models/tiny/config.json`)).text()).toBe('{}');
  }, 120_000);
});
