import path from 'node:path';
import { expect, test } from '@playwright/test';
import { sharedModelsDir } from '../support/paths.ts';
import { STORIES_REFERENCE } from '../support/reference.ts';

// The engine in a real browser, through the worker: greedy decoding must reproduce llama2.c's story
// on both backends (WebGPU here is Chromium's software adapter: fp32 only, and slow, so few tokens).
for (const backend of ['wasm', 'webgpu'] as const) {
  test(`stories260K greedy from BOS reproduces the reference on ${backend}`, async ({ page }) => {
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto('/');
    await expect(page.getByRole('option', { name: 'stories260K-hf' })).toBeAttached({ timeout: 20_000 });
    await page.getByRole('combobox', { name: 'Model' }).selectOption('stories260K-hf');
    await page.getByRole('combobox', { name: 'Backend' }).selectOption(backend);
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.getByTestId('model-info')).toContainText(`5 layers, hidden 64, torch graph, float32 residual, ${backend}`, { timeout: 60_000 });
    await expect(page.getByTestId('progress-onnx/model.onnx')).toHaveAttribute('data-done', 'true');
    // Fused by default, and kept: ORT Web ran the contrib ops and matched the published graph's logits.
    await expect(page.getByTestId('fusion')).toHaveText(/^Fused at load: 5 attention blocks → MultiHeadAttention, 10 rotaries → RotaryEmbedding, 11 RMSNorms → SimplifiedLayerNormalization/);

    await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('');
    await page.getByLabel('Temperature').fill('0');
    await page.getByLabel('Max new tokens').fill('110');
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect(page.getByTestId('status')).toContainText('tokens/s', { timeout: 120_000 });
    const text = await page.getByTestId('output-baseline').textContent();
    expect(text?.startsWith(STORIES_REFERENCE)).toBe(true);
    expect(errors).toEqual([]);
  });
}

test('a model folder picked from disk loads through the worker and generates', async ({ page }) => {
  await page.goto('/');
  await page.getByRole('combobox', { name: 'Backend' }).selectOption('wasm');
  await page.getByLabel('Open folder…').setInputFiles(path.join(sharedModelsDir, 'stories260K-hf'));
  await expect(page.getByTestId('model-info')).toContainText('stories260K-hf: 5 layers', { timeout: 60_000 });
  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('');
  await page.getByLabel('Temperature').fill('0');
  await page.getByLabel('Max new tokens').fill('20');
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect(page.getByTestId('status')).toContainText('20 tokens', { timeout: 60_000 });
  await expect(page.getByTestId('output-baseline')).toHaveText(/^Once upon a time, there was a little girl named Lily\./);
});

test('Cancel stops a running generation in the worker within a step', async ({ page }) => {
  await page.goto('/');
  await page.getByRole('combobox', { name: 'Backend' }).selectOption('webgpu');
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByTestId('model-info')).toContainText('webgpu', { timeout: 60_000 });
  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('');
  await page.getByLabel('Max new tokens').fill('400');
  await page.getByRole('button', { name: 'Generate' }).click();
  await expect(page.getByTestId('output-baseline')).toContainText('Once upon', { timeout: 60_000 });
  await page.getByRole('button', { name: 'Cancel' }).click();
  await expect(page.getByTestId('status')).toContainText('(cancelled)', { timeout: 5_000 });
  const tokens = Number(/(\d+) tokens/.exec((await page.getByTestId('status').textContent())!)![1]);
  expect(tokens).toBeLessThan(256);
});

test('an fp16-only model on a WebGPU adapter without shader-f16 is refused with a message, not zeros', async ({ page }) => {
  await page.goto('/');
  await expect(page.getByRole('option', { name: 'tiny-random-llama-builder-fp16' })).toBeAttached({ timeout: 20_000 });
  await page.getByRole('combobox', { name: 'Model' }).selectOption('tiny-random-llama-builder-fp16');
  await page.getByRole('combobox', { name: 'Backend' }).selectOption('webgpu');
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByRole('alert')).toContainText('has only fp16', { timeout: 30_000 });
  // The message offers the fix the page can do: the same model on WASM, which runs fp16.
  await page.getByRole('button', { name: 'Load it on WASM instead' }).click();
  // The first WASM session of the page compiles ONNX Runtime's WebAssembly: a minute on a loaded 2-core machine.
  await expect(page.getByTestId('model-info')).toContainText('2 layers, hidden 16, fused graph, float16 residual, wasm', { timeout: 90_000 });
  await expect(page.getByRole('combobox', { name: 'Backend' })).toHaveValue('wasm');
});
