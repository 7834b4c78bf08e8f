/**
 * The browser half of `npm run bench`: serves scripts/bench-page/ with Vite (its own root and config, not
 * the app's) and the models folder at /models/, drives headless Chromium with Playwright's library API, and
 * runs each (model, backend) request in the page's worker. WebGPU runs on whatever adapter Chromium offers:
 * without a GPU that is the SwiftShader software adapter, which has no shader-f16 (fp16 models are skipped).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from '@playwright/test';
import { createServer } from 'vite';
import { ISOLATION_HEADERS } from '../cli/serve-files.ts';
import { type BenchModel, type BenchPlan, type ModelMeasurements, interleave, median } from './bench-measure.ts';
import type { BenchPageApi } from './bench-page/main.ts';
import { localModelsPlugin } from './local-models.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ChromiumRequest {
  model: BenchModel;
  backend: 'wasm' | 'webgpu';
  plan: BenchPlan;
}

export interface ChromiumRun {
  version: string;
  webgpuAdapter?: string;
  shaderF16: boolean;
  pageLoad?: PageLoad[];
}

/** 8. Load-to-ready on WASM in fresh workers: with a cold runtime vs after the engine worker's warm-up. */
export interface PageLoad {
  model: string;
  coldMs: number;
  warmUpMs: number;
  afterWarmUpMs: number;
  ratio: number;
}

export type ChromiumOutcome = (ModelMeasurements & { layers: number }) | { skipped: string };

export async function runInChromium(
  modelsRoot: string,
  requests: ChromiumRequest[],
  onOutcome: (request: ChromiumRequest, outcome: ChromiumOutcome) => void,
  pageLoadModels: BenchModel[] = [],
): Promise<ChromiumRun | undefined> {
  const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
  if (!existsSync(executablePath)) {
    console.error(`no Chromium at ${executablePath} (set CHROMIUM_PATH): browser runs skipped`);
    for (const request of requests) onOutcome(request, { skipped: 'no Chromium' });
    return undefined;
  }
  const server = await createServer({
    configFile: false,
    root: path.join(root, 'scripts/bench-page'),
    logLevel: 'warn',
    plugins: [localModelsPlugin(modelsRoot)],
    worker: { format: 'es' },
    // No file watching or hot reload: a source file saved during a run must not reload the page under it.
    server: { host: '127.0.0.1', port: 4290, headers: ISOLATION_HEADERS, fs: { allow: [root] }, hmr: false, watch: null },
    // Nothing pre-bundled: one ONNX Runtime for the engine and Transformers.js, and no dependency found
    // late (Transformers.js is imported on demand) can make Vite reload the page in the middle of a run.
    optimizeDeps: { noDiscovery: true, include: [] },
  });
  await server.listen();
  const browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  try {
    const page = await browser.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error') console.error(`[page] ${message.text()}`);
    });
    await page.goto(server.resolvedUrls!.local[0]);
    await page.waitForFunction(() => 'tillerBench' in globalThis);
    const support = await page.evaluate(() => (globalThis as unknown as { tillerBench: BenchPageApi }).tillerBench.backendSupport());
    for (const request of requests) {
      const label = `chromium-${request.backend}: ${request.model.folder}`;
      if (request.backend === 'webgpu' && !support.webgpu) {
        onOutcome(request, { skipped: 'no WebGPU adapter' });
        continue;
      }
      if (request.backend === 'webgpu' && (request.model.dtype === 'fp16' || request.model.dtype === 'q4f16') && !support.shaderF16) {
        onOutcome(request, { skipped: 'fp16 needs shader-f16, which this adapter lacks' });
        continue;
      }
      console.error(`${label}…`);
      try {
        onOutcome(request, await page.evaluate((r) => (globalThis as unknown as { tillerBench: BenchPageApi }).tillerBench.runBench(r), request));
      } catch (error) {
        console.error(`${label} failed: ${(error as Error).message}`);
        onOutcome(request, { skipped: `failed: ${(error as Error).message.split('\n')[0]}` });
      }
    }
    const pageLoad: PageLoad[] = [];
    const warmUps: number[] = [];
    for (const model of pageLoadModels) {
      console.error(`chromium-wasm: load-to-ready of ${model.folder}, cold and warmed up…`);
      const times = await interleave(3, {
        cold: () => page.evaluate((folder) => (globalThis as unknown as { tillerBench: BenchPageApi }).tillerBench.loadToReady(folder, false), model.folder).then((r) => r.loadMs),
        warm: () => page.evaluate((folder) => (globalThis as unknown as { tillerBench: BenchPageApi }).tillerBench.loadToReady(folder, true), model.folder)
          .then((r) => { warmUps.push(r.warmUpMs!); return r.loadMs; }),
      });
      const [coldMs, afterWarmUpMs] = [median(times.cold), median(times.warm)];
      // The first warm-up was the untimed round's.
      pageLoad.push({ model: model.folder, coldMs, warmUpMs: median(warmUps.splice(0).slice(1)), afterWarmUpMs, ratio: afterWarmUpMs / coldMs });
    }
    return { version: browser.version(), webgpuAdapter: support.adapter, shaderF16: support.shaderF16, pageLoad };
  } finally {
    await browser.close();
    await server.close();
  }
}
