import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, test } from '@playwright/test';
import { startHubServer } from '../support/hub-server.ts';
import { sharedModel, sharedModelsDir } from '../support/paths.ts';
import { loadHubRepo } from '../support/playground.ts';

// Issue 14: hostile or mistaken input never loses a saved setting (docs/reliability.md, rows 13–).

test('14.6: an unusable typed number is refused at its field, and a reload keeps every other setting', async ({ page }) => {
  await page.goto('/');
  await page.getByLabel('Prompt', { exact: true }).fill('Pip went to the sea');
  await page.getByLabel('Seed').fill('7');
  await page.getByLabel('Max new tokens').fill('20');
  // Cleared, negative, zero or absurd: each is refused where it is typed, and the last good value stays.
  for (const [label, typed, says] of [
    ['Seed', '', 'The seed is a whole number; still using 7.'],
    ['Seed', '1.5', 'The seed is a whole number; still using 7.'],
    ['Temperature', '-1', 'Temperature is a number from 0 to 5; still using 0.7.'],
    ['Top-p', '0', 'Top-p is a number above 0, at most 1; still using 0.95.'],
    ['Max new tokens', '100000', 'Max new tokens is a whole number from 1 to 4096; still using 20.'],
  ] as const) {
    await page.getByLabel(label).fill(typed);
    await expect(page.getByRole('alert').filter({ hasText: says })).toBeVisible();
  }
  await page.reload();
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue('Pip went to the sea');
  await expect(page.getByLabel('Seed')).toHaveValue('7');
  await expect(page.getByLabel('Max new tokens')).toHaveValue('20');
  await expect(page.getByTestId('settings-problem')).toHaveCount(0);

  // A record saved by an older version with one bad field keeps everything else.
  await page.evaluate(() => {
    const saved = JSON.parse(localStorage.getItem('tiller.settings')!);
    localStorage.setItem('tiller.settings', JSON.stringify({ ...saved, seed: null }));
  });
  await page.reload();
  await expect(page.getByTestId('settings-problem')).toContainText('"seed" (null) had an unusable value and is back to its default; everything else was kept');
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue('Pip went to the sea');
  await expect(page.getByLabel('Seed')).toHaveValue('1');
});

test('14.3: a hostile chat template fails in seconds with its file named, and the page stays usable', async ({ page }) => {
  const repo = 'tiller-test/hostile-template';
  const folder = mkdtempSync(path.join(os.tmpdir(), 'tiller-hostile-'));
  cpSync(sharedModel('stories260K-hf'), folder, { recursive: true });
  writeFileSync(path.join(folder, 'chat_template.jinja'), '{% for a in range(200000) %}{% for b in range(200000) %}{% endfor %}{% endfor %}');
  const server = await startHubServer({ root: sharedModelsDir, repos: { [repo]: folder } });
  try {
    await page.goto('/');
    await loadHubRepo(page, server.baseUrl, repo);
    await expect(page.getByTestId('model-info')).toContainText('5 layers', { timeout: 60_000 });
    await page.getByLabel('Prompt', { exact: true }).fill('Hi');
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect(page.getByText(/Chat template in chat_template\.jinja: range\(200000\) asks for more than 100000 items/).first()).toBeVisible({ timeout: 20_000 });
    // The worker is free again: the model's info still answers, and a new load goes through.
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.getByTestId('model-info')).toContainText('5 layers', { timeout: 60_000 });
  } finally {
    await server.close();
  }
});
