import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Page, type Worker, expect, test } from '@playwright/test';
import { ENGINE_WORKER_NAME } from '../../src/lib/engine-client.ts';
import { startHubServer } from '../support/hub-server.ts';
import { sharedModel, sharedModelsDir } from '../support/paths.ts';
import { computeDirection, finishedRuns, generations, loadHubRepo, loadLocalModel } from '../support/playground.ts';

// Faults from issue 7 injected into the built app (docs/reliability.md maps each fault to its test).


const loadStories = (page: Page, backend: 'wasm' | 'webgpu') => loadLocalModel(page, 'stories260K-hf', backend, 5);

/** The engine's web worker (started when the page starts). */
async function engineWorker(page: Page): Promise<Worker> {
  await expect.poll(() => page.workers().length, { timeout: 20_000 }).toBeGreaterThan(0);
  return page.workers()[0];
}

test('2: a model too large for the device is refused before its graph downloads, with the estimate, and can be loaded anyway', async ({ page }) => {
  const repo = 'tiller-test/huge';
  const folder = mkdtempSync(path.join(os.tmpdir(), 'tiller-huge-'));
  // A 70B-parameter config and no graph at all: the estimate from config.json alone decides.
  writeFileSync(path.join(folder, 'config.json'), JSON.stringify({ hidden_size: 8192, num_hidden_layers: 80, vocab_size: 128256, num_attention_heads: 64, num_key_value_heads: 8, intermediate_size: 28672 }));
  const server = await startHubServer({ root: sharedModelsDir, repos: { [repo]: folder } });
  try {
    await page.goto('/');
    await loadHubRepo(page, server.baseUrl, repo);
    await expect(page.getByRole('alert')).toContainText(/tiller-test\/huge \(fp32, about 70B parameters\) needs about \d+\.\d GB .*Nothing large was downloaded/, { timeout: 20_000 });
    expect(server.requests.filter((r) => r.includes('/onnx/'))).toEqual([]);
    // Anyway: the download starts (and here fails, as there is no graph), so the button did what it says.
    await page.getByRole('button', { name: 'Load anyway' }).click();
    await expect(page.getByRole('alert')).toContainText('onnx/model.onnx is missing', { timeout: 20_000 });
    expect(server.requests.some((r) => r.endsWith('/onnx/model.onnx'))).toBe(true);
  } finally {
    await server.close();
    rmSync(folder, { recursive: true });
  }
});

test('3: the GPU device lost during a generation: the model moves to WASM, the page says so, and the generation finishes there', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto('/');
  // Keep a handle on the GPUDevice ONNX Runtime will create, to destroy it as a driver reset would.
  const worker = await engineWorker(page);
  await worker.evaluate(() => {
    const scope = self as unknown as { lostDevices: { destroy(): void }[] };
    scope.lostDevices = [];
    const adapter = (globalThis as unknown as { GPUAdapter: { prototype: { requestDevice(...args: unknown[]): Promise<{ destroy(): void }> } } }).GPUAdapter.prototype;
    const requestDevice = adapter.requestDevice;
    adapter.requestDevice = async function (...args: unknown[]) {
      const device = await requestDevice.apply(this, args);
      scope.lostDevices.push(device);
      return device;
    };
  });
  await loadStories(page, 'webgpu');
  expect(await worker.evaluate(() => (self as unknown as { lostDevices: unknown[] }).lostDevices.length)).toBe(1);

  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('');
  await page.getByLabel('Temperature').fill('0');
  // Long enough that the software WebGPU adapter is still generating when the device goes.
  await page.getByLabel('Max new tokens').fill('200');
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect(page.getByTestId('output-baseline')).toContainText('Once', { timeout: 60_000 });
  expect(await generations(page).getAttribute('data-state')).toBe('running');
  await worker.evaluate(() => (self as unknown as { lostDevices: { destroy(): void }[] }).lostDevices[0].destroy());

  await expect(page.getByTestId('backend-notice')).toContainText(/WebGPU device was lost \(destroyed.*reloaded on WASM/, { timeout: 30_000 });
  await expect(page.getByTestId('model-info')).toContainText('wasm');
  await expect(page.getByTestId('status')).toContainText('tokens/s', { timeout: 60_000 });
  await expect(page.getByTestId('output-baseline')).toHaveText(/^Once upon a time, there was a little girl named Lily\./);
  await expect(page.getByRole('alert')).toHaveCount(0);
  // WebGPU is no longer offered; a new load runs on WASM.
  await expect(page.getByRole('option', { name: 'WebGPU', exact: true })).toBeDisabled();
  expect(errors).toEqual([]);
});

test('4: a full disk while caching: the model still loads and generates, the page explains, and "Clear old models" keeps the loaded one', async ({ page }) => {
  const errors: string[] = [];
  await page.goto('/');
  // Another model's file, left from an earlier visit.
  await page.evaluate(async () => (await caches.open('tiller-models')).put('http://old.example/old/model/resolve/main/onnx/model.onnx', new Response('old weights')));
  const worker = await engineWorker(page);
  // Every write beyond the first few kilobytes fails as a full disk does.
  await worker.evaluate(() => {
    const put = Cache.prototype.put;
    Cache.prototype.put = async function (request: RequestInfo | URL, response: Response) {
      const size = Number(response.headers.get('content-length') ?? 0);
      if (size > 20_000) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      return put.call(this, request, response);
    };
  });
  await loadStories(page, 'wasm');
  await expect(page.getByTestId('cache-problem')).toContainText("the browser's storage for this site is full (onnx/model.onnx did not fit)", { timeout: 20_000 });
  await page.getByLabel('Max new tokens').fill('6');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect.poll(() => finishedRuns(page), { timeout: 60_000 }).toBeGreaterThan(before);

  // Asked inline, not with a blocking dialog.
  page.once('dialog', (dialog) => errors.push(`unexpected dialog: ${dialog.message()}`));
  await page.getByRole('button', { name: 'Clear old models' }).click();
  await expect(page.getByTestId('clear-confirm')).toContainText('every model but the loaded one');
  await page.getByTestId('clear-confirm').getByRole('button', { name: 'Remove' }).click();
  await expect(page.getByTestId('cache-problem')).toHaveCount(0);
  expect(errors).toEqual([]);
  const kept = await page.evaluate(async () => (await (await caches.open('tiller-models')).keys()).map((r) => r.url));
  expect(kept.some((url) => url.includes('old.example'))).toBe(false);
  expect(kept.length).toBeGreaterThan(0);
  expect(kept.every((url) => url.includes('/models/stories260K-hf/'))).toBe(true);
});

test('5: offline, a model downloaded before loads and generates; one never downloaded is refused with what to do', async ({ page, context }) => {
  const repo = 'tiller-test/stories260K-hf';
  const server = await startHubServer({ root: sharedModelsDir, repos: { [repo]: sharedModel('stories260K-hf') } });
  await page.goto('/');
  // The service worker takes over on the first visit; reloading lets it keep every file of the app.
  await expect.poll(() => page.evaluate(() => navigator.serviceWorker.controller !== null), { timeout: 20_000 }).toBe(true);
  await page.reload();
  await loadHubRepo(page, server.baseUrl, repo);
  await expect(page.getByTestId('model-info')).toContainText('stories260K-hf: 5 layers', { timeout: 60_000 });
  await expect.poll(() => page.evaluate(async () => (await (await caches.open('tiller-models')).keys()).length), { timeout: 20_000 }).toBeGreaterThan(3);

  await server.close();
  await context.setOffline(true);
  const shell = await page.reload();
  expect(shell?.fromServiceWorker()).toBe(true);
  expect(await page.evaluate(() => navigator.onLine)).toBe(false);
  await expect(page.getByRole('combobox', { name: 'Model' })).toHaveValue(`hub:${repo}`, { timeout: 20_000 });
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByTestId('model-info')).toContainText('stories260K-hf: 5 layers', { timeout: 60_000 });
  await page.getByLabel('Max new tokens').fill('6');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect.poll(() => finishedRuns(page), { timeout: 60_000 }).toBeGreaterThan(before);
  await expect(page.getByTestId('output-baseline')).not.toBeEmpty();

  await page.getByText('Other Hub models').click();
  await page.getByRole('textbox', { name: 'Hub id' }).fill('tiller-test/never-downloaded');
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByRole('alert')).toContainText(/could not reach .* config\.json of tiller-test\/never-downloaded .*may be offline, and this file was never downloaded completely here/, { timeout: 20_000 });
  await context.setOffline(false);
});

test('7: Stop loading during a download cancels it, says so, and the next load works', async ({ page }) => {
  const repo = 'tiller-test/stories260K-hf';
  const server = await startHubServer({ root: sharedModelsDir, repos: { [repo]: sharedModel('stories260K-hf') } });
  try {
    server.setFault('onnx/model.onnx', { kind: 'delay', ms: 30_000, afterBytes: 200_000 });
    await page.goto('/');
    await page.getByRole('combobox', { name: 'Backend' }).selectOption('wasm');
    await page.getByText('Other Hub models').click();
    await page.getByLabel('Hub base URL').fill(server.baseUrl);
    await page.getByRole('textbox', { name: 'Hub id' }).fill(repo);
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.getByTestId('progress-onnx/model.onnx')).toBeAttached({ timeout: 20_000 });
    await page.getByRole('button', { name: 'Stop loading' }).click();
    await expect(page.getByRole('alert')).toContainText('reading onnx/model.onnx from tiller-test/stories260K-hf was cancelled; load the model again to retry', { timeout: 5_000 });
    server.setFault('onnx/model.onnx', undefined);
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.getByTestId('model-info')).toContainText('stories260K-hf: 5 layers', { timeout: 60_000 });
  } finally {
    await server.close();
  }
});

test('10: a prompt longer than the context is cut from the start with a notice, and the columns still generate', async ({ page }) => {
  await page.goto('/');
  await loadStories(page, 'wasm');
  // stories260K has 512 positions: this prompt is about 1000 tokens.
  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('Lily was very happy. '.repeat(170));
  await page.getByLabel('Max new tokens').fill('8');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect.poll(() => finishedRuns(page), { timeout: 60_000 }).toBeGreaterThan(before);
  await expect(page.getByTestId('status')).toContainText(/8 tokens.*prompt cut by \d+ tokens/);
  await expect(page.getByTestId('output-baseline')).not.toBeEmpty();
  await expect(page.getByRole('alert')).toHaveCount(0);
});

/** JavaScript heap in use by the page and by the engine's worker, after a garbage collection in each (CDP). */
async function heapMeter(page: Page) {
  const cdp = await page.context().newCDPSession(page);
  const { targetInfos } = await cdp.send('Target.getTargets');
  // ONNX Runtime's thread workers run the same script (and, blocked in Atomics.wait, never answer): find the engine's by name.
  const workerTarget = targetInfos.find((t) => t.type === 'worker' && t.title === ENGINE_WORKER_NAME);
  expect(workerTarget).toBeDefined();
  // A second, non-flattened session to the worker: Playwright keeps its own.
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId: workerTarget!.targetId, flatten: false });
  const answers = new Map<number, (result: unknown) => void>();
  cdp.on('Target.receivedMessageFromTarget', (event) => {
    const message = JSON.parse(event.message) as { id?: number; result?: unknown };
    if (message.id !== undefined) answers.get(message.id)?.(message.result);
  });
  let nextId = 0;
  const inWorker = <T>(method: string) =>
    new Promise<T>((resolve) => {
      const id = ++nextId;
      answers.set(id, resolve as (result: unknown) => void);
      void cdp.send('Target.sendMessageToTarget', { sessionId, message: JSON.stringify({ id, method, params: {} }) });
    });
  return async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    await inWorker('HeapProfiler.collectGarbage');
    return {
      page: (await cdp.send('Runtime.getHeapUsage')).usedSize,
      worker: (await inWorker<{ usedSize: number }>('Runtime.getHeapUsage')).usedSize,
    };
  };
}

/** Waits until a run newer than `after` has finished; returns the steered column's label and text. */
async function nextRun(page: Page, after: number) {
  await expect.poll(() => finishedRuns(page), { timeout: 120_000 }).toBeGreaterThan(after);
  await expect(generations(page)).toHaveAttribute('data-state', 'idle');
  return { label: await page.getByTestId('column-steered').locator('h3').textContent(), text: await page.getByTestId('output-steered').textContent() };
}

test('6: 200 rapid strength changes: no queue builds up, only the newest setting\'s text is shown, memory stays flat', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto('/');
  await loadStories(page, 'wasm');
  const strength = await computeDirection(page);
  await page.getByLabel('Max new tokens').fill('24');
  await page.getByLabel('Seed').fill('3');
  let runs = await finishedRuns(page);
  let started = Date.now();
  await page.getByRole('button', { name: 'Generate' }).click();
  await nextRun(page, runs);
  const oneRunMs = Date.now() - started;

  // Never a column labelled for one strength while the slider shows another, unless it is marked stale.
  const consistent = () =>
    page.evaluate(() => {
      const slider = document.querySelector<HTMLInputElement>('#strength')!;
      const columns = document.querySelector('[data-testid="generations"]')!;
      const label = document.querySelector('[data-testid="column-steered"] h3')?.textContent ?? '';
      const shown = Number(/Steered ([+-]?[\d.]+)/.exec(label)?.[1] ?? NaN);
      return columns.classList.contains('stale') || shown === Number(slider.value);
    });
  const values = Array.from({ length: 200 }, (_, i) => (((i * 37) % 181) - 90) / 100);
  /** Moves the slider `count` times; every 25th move pauses past the debounce, so that a run starts and is superseded. */
  async function moveSlider(count: number) {
    for (let i = 0; i < count; i++) {
      await strength.fill(String(values[i % values.length]));
      if (i % 25 === 24) {
        await page.waitForTimeout(400);
        expect(await consistent()).toBe(true);
      }
    }
  }
  const heap = await heapMeter(page);
  await moveSlider(25);
  await expect(generations(page)).toHaveAttribute('aria-busy', 'false', { timeout: 60_000 });
  const warm = await heap();

  await moveSlider(200);
  await strength.fill('0.37');
  started = Date.now();
  const last = await nextRun(page, await finishedRuns(page));
  // Nothing queued behind: the newest run ends about as soon as one run alone would.
  expect(Date.now() - started).toBeLessThan(3 * oneRunMs + 2_000);
  expect(last.label).toContain('Steered +0.37');
  expect(await consistent()).toBe(true);
  // Its text is exactly what a fresh run at +0.37 gives: no tokens of an older strength were mixed in.
  runs = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  expect((await nextRun(page, runs)).text).toBe(last.text);

  const after = await heap();
  expect(after.page - warm.page).toBeLessThan(1_000_000);
  expect(after.worker - warm.worker).toBeLessThan(1_000_000);
  expect(errors).toEqual([]);
});

test('11: edited prompt sets survive a reload; a corrupt saved set is moved aside and reported, and the preset\'s prompts are used', async ({ page }) => {
  const key = 'tiller.persona.custom.happy-sad-stories';
  await page.goto('/');
  await expect(page.getByRole('combobox', { name: 'Persona preset' })).toHaveValue('happy-sad-stories', { timeout: 20_000 });
  await page.getByText('Edit prompts').click();
  const happy = page.getByLabel(/^happy texts/i);
  const sad = page.getByLabel(/^sad texts/i);
  const original = await happy.inputValue();
  await happy.fill(`${original}\nPip was happy. He sang all day.`);
  await sad.fill(`${await sad.inputValue()}\nPip was sad. He cried all day.`);
  await page.reload();
  await page.getByText('Edit prompts').click();
  await expect(happy).toHaveValue(/Pip was happy\. He sang all day\.$/);
  await expect(page.getByText('Edit prompts (customised)')).toBeVisible();

  await page.evaluate((k) => localStorage.setItem(k, '{"positive": ["only one"], "negative": 7}'), key);
  await page.reload();
  await expect(page.getByText(/The saved prompts for .* could not be read \("negative" is not a list of texts\); it was moved aside to "tiller\.persona\.custom\.happy-sad-stories\.corrupt"/)).toBeVisible({ timeout: 20_000 });
  expect(await page.evaluate((k) => localStorage.getItem(`${k}.corrupt`), key)).toBe('{"positive": ["only one"], "negative": 7}');
  await page.getByText('Edit prompts').click();
  await expect(happy).toHaveValue(original);
});

test('12: a Content-Security-Policy guards the built app; prompts, output and imported files are shown as text only', async ({ page, request }) => {
  const violations: string[] = [];
  await page.addInitScript(() => {
    (window as unknown as { xss?: number }).xss = undefined;
    document.addEventListener('securitypolicyviolation', (event) => console.warn(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`));
  });
  page.on('console', (message) => message.text().startsWith('CSP violation') && violations.push(message.text()));
  const html = await (await request.get('/')).text();
  const policy = /<meta http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1] ?? '';
  expect(policy).toContain("script-src 'self' 'wasm-unsafe-eval'");
  expect(policy).toContain("object-src 'none'");
  expect(policy).not.toMatch(/'unsafe-eval'|script-src[^;]*'unsafe-inline'/);

  await page.goto('/');
  // Inline script is refused by the policy.
  expect(await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.xss = 1';
    document.body.append(script);
    return (window as unknown as { xss?: number }).xss;
  })).toBeUndefined();
  await expect.poll(() => violations).toEqual(['CSP violation: script-src-elem inline']);
  violations.length = 0;

  // The app itself runs within the policy: load, generate, import.
  const markup = '<img src=x onerror="window.xss=2"><b>bold</b>';
  await loadStories(page, 'wasm');
  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill(markup);
  await page.getByLabel('Max new tokens').fill('4');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect.poll(() => finishedRuns(page), { timeout: 60_000 }).toBeGreaterThan(before);
  await page.getByLabel('Import vector…').setInputFiles({
    name: `${markup}.json`,
    mimeType: 'application/json',
    buffer: Buffer.from(JSON.stringify({ format: 'tiller.vector', version: 1, model: { id: markup }, hiddenSize: 64, directions: [{ layer: 1, vector: new Array(64).fill(0.1) }] })),
  });
  await expect(page.getByTestId('vector-error')).toContainText(`Could not import ${markup}.json`);
  expect(await page.locator('img[src="x"]').count()).toBe(0);
  expect(await page.locator('b', { hasText: 'bold' }).count()).toBe(0);
  expect(await page.evaluate(() => (window as unknown as { xss?: number }).xss)).toBeUndefined();
  expect(violations).toEqual([]);
});
