import { expect, test } from '@playwright/test';

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
