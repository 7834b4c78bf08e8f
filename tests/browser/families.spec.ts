import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, test } from '@playwright/test';
import { computeDirection, finishedRuns, generations } from '../support/playground.ts';
import { sharedModel } from '../support/paths.ts';
import { writeSyntheticModel } from '../support/synthetic-decoder.ts';

// A GPT-2-structured export (learned positions, LayerNorm with bias, config.json in GPT-2's names) picked
// from disk, in Chromium on WASM: it loads, verifies its steering on load, computes a direction and steers.
test('a GPT-2-style model folder loads on WASM, verifies its steering on load, and steers', async ({ page }) => {
  const root = mkdtempSync(path.join(tmpdir(), 'tiller-gpt2-browser-'));
  const folder = path.join(root, 'gpt2-synthetic');
  mkdirSync(folder);
  try {
    writeSyntheticModel(folder, { layers: 4, hidden: 64, heads: 4, kvHeads: 4, intermediate: 256, vocab: 512, maxPositions: 128 }, 'gpt2');
    // stories260K's 512-token tokenizer, so the page can write prompts and read text.
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(sharedModel('stories260K-hf'), file), path.join(folder, file));

    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto('/');
    await page.getByRole('combobox', { name: 'Backend' }).selectOption('wasm');
    await page.getByLabel('Open folder…').setInputFiles(folder);
    await expect(page.getByTestId('model-info')).toContainText('gpt2-synthetic: 4 layers, hidden 64, torch graph, float32 residual, wasm', { timeout: 60_000 });
    await expect(page.getByTestId('self-check')).toHaveText('steering verified exact on this model');

    await page.getByRole('combobox', { name: 'Persona preset' }).selectOption('happy-sad-stories');
    const strength = await computeDirection(page);
    await page.getByLabel('Max new tokens').fill('16');
    await page.getByLabel('Temperature').fill('0');
    const outputs = async (after: number) => {
      await expect.poll(() => finishedRuns(page), { timeout: 120_000 }).toBeGreaterThan(after);
      await expect(generations(page)).toHaveAttribute('data-state', 'idle');
      return { baseline: await page.getByTestId('output-baseline').textContent(), steered: await page.getByTestId('output-steered').textContent() };
    };
    const before = await finishedRuns(page);
    await page.getByRole('button', { name: 'Generate' }).click();
    const first = await outputs(before);
    expect(first.baseline?.length).toBeGreaterThan(0);
    expect(first.steered).toBe(first.baseline);

    const runs = await finishedRuns(page);
    await strength.fill('1');
    const steered = await outputs(runs);
    expect(steered.baseline).toBe(first.baseline);
    expect(steered.steered).not.toBe(first.baseline);
    expect(errors).toEqual([]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
