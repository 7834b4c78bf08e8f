import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, test } from '@playwright/test';
import { sharedModelsDir, testBuildDir } from '../support/paths.ts';

// The workshop path: `tiller serve` from an empty folder serves the built app and a models folder; the
// browser reaches nothing else, and still loads a model and generates.
const appPort = Number(process.env.TILLER_TEST_PORT ?? 4179);
const port = appPort + 6;
const appDir = testBuildDir(appPort);
const base = `http://127.0.0.1:${port}`;
let server: ChildProcess;

test.beforeAll(async () => {
  const cleanFolder = mkdtempSync(path.join(os.tmpdir(), 'tiller-room-'));
  server = spawn(process.execPath, [path.resolve('bin/tiller.mjs'), 'serve', '--app', appDir, '--models', sharedModelsDir, '--port', String(port), '--host', '127.0.0.1'], {
    cwd: cleanFolder,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    server.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('Tiller is served') && resolve());
    server.once('exit', (code) => reject(new Error(`tiller serve exited with ${code}`)));
  });
});
test.afterAll(() => {
  server.kill();
});

test('tiller serve: the built app loads a model and generates with no other network', async ({ page }) => {
  const elsewhere: string[] = [];
  await page.route('**/*', (route) => {
    if (route.request().url().startsWith(base)) return route.continue();
    elsewhere.push(route.request().url());
    return route.abort('internetdisconnected');
  });
  await page.goto(`${base}/`);
  expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
  await expect(page.getByRole('option', { name: 'stories260K-hf' }).first()).toBeAttached({ timeout: 20_000 });
  await page.getByRole('combobox', { name: 'Model' }).selectOption({ label: 'stories260K-hf' });
  await page.getByRole('combobox', { name: 'Backend' }).selectOption({ label: 'WASM' });
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByText('5 layers, hidden 64')).toBeVisible({ timeout: 60_000 });
  await page.getByLabel('Prompt', { exact: true }).fill('Once upon a time');
  await page.getByRole('button', { name: 'Generate', exact: true }).click();
  await expect(page.getByText(/tokens\/s/)).toBeVisible({ timeout: 60_000 });
  expect(elsewhere).toEqual([]);
});
