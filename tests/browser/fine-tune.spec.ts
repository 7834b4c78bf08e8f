import { expect, test } from '@playwright/test';
import { loadLocalModel } from '../support/playground.ts';

// Model diffing in the built app on WASM: stories260K-hf as the base, a mismatched second model refused with
// what differs, then stories260K-sad-dogs-hf beside it: the diff, its cosine with happy − sad, four columns.

test('compare with a fine-tune: refuse a mismatched pair, diff the sad-dogs organism, four columns', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto('/');
  await loadLocalModel(page, 'stories260K-hf', 'wasm', 5);
  await page.getByRole('button', { name: 'Compute direction' }).click();
  await expect(page.getByRole('button', { name: /\(recommended\)$/ })).toBeVisible({ timeout: 60_000 });

  const compare = page.getByTestId('fine-tune-compare');
  await compare.getByText('Compare with a fine-tune').click();
  const second = compare.getByRole('combobox', { name: 'Fine-tune' });
  // The folder named as a fine-tune of the loaded model is offered first.
  await expect(second).toHaveValue('local:stories260K-sad-dogs-hf');

  await second.selectOption('local:tiny-random-llama-builder-fp16');
  await compare.getByRole('button', { name: 'Load fine-tune' }).click();
  await expect(compare.getByRole('alert')).toContainText("is not a fine-tune of stories260K-hf's architecture (layer count: 5 vs 2; hidden size: 64 vs 16", { timeout: 60_000 });
  await expect(compare.getByTestId('fine-tune-info')).toHaveCount(0);

  await second.selectOption('local:stories260K-sad-dogs-hf');
  await compare.getByRole('button', { name: 'Load fine-tune' }).click();
  await expect(compare.getByTestId('fine-tune-info')).toContainText('stories260K-sad-dogs-hf beside stories260K-hf: 5 layers', { timeout: 60_000 });
  await expect(compare.getByRole('alert')).toHaveCount(0);

  await compare.getByRole('button', { name: 'Compute the diff' }).click();
  await expect(compare.getByTestId('diff-summary')).toContainText(/Diff stories260K-sad-dogs-hf − stories260K-hf over \d+ prompts/, { timeout: 60_000 });
  await expect(compare.getByTestId('diff-summary')).toContainText('0: 0.00 (AUROC 0.50), 1: 0.00 (AUROC 0.50)');
  // Blocks 0 and 1 are the base's: no difference there, so no cosine either; later the diff leans sad.
  await expect(compare.getByTestId('cosine-bar')).toHaveCount(5);
  await expect(compare.getByTestId('cosine-bar').nth(0)).toHaveAttribute('aria-label', 'Layer 0: cosine 0.000');
  await expect(compare.getByTestId('cosine-verdict')).toContainText('points toward sad');
  await expect(compare.getByRole('combobox', { name: 'Layer' })).toHaveValue('2');

  await compare.getByRole('button', { name: 'Generate four columns' }).click();
  const columns = compare.getByTestId('fine-tune-column');
  await expect(columns).toHaveCount(4);
  await expect(compare.getByRole('button', { name: 'Generate four columns' })).toBeEnabled({ timeout: 60_000 });
  const texts = await columns.locator('p').allTextContents();
  expect(texts.every((text) => text.trim().length > 0)).toBe(true);
  // Same seed: the fine-tune's column differs from the base's because the models differ.
  expect(texts[2]).not.toBe(texts[0]);

  // With a fine-tune of the loaded model on offer, the lesson ends with the model-diffing experiment.
  await page.getByRole('button', { name: 'Guided lesson' }).click();
  for (let step = 1; step < 7; step++) await page.getByRole('button', { name: 'Next step' }).click();
  await expect(page.locator('#lesson-heading')).toContainText('step 7 of 7: Optional: find it the way the research did');
  await expect(page.getByTestId('lesson-task')).toContainText('load stories260K-sad-dogs-hf, press Compute the diff');
  expect(errors).toEqual([]);
});
