import { type Page, expect, test } from '@playwright/test';

// The persona panel in the built app on WASM with stories260K-hf (a base model without a chat template):
// the preset that fits the model, the chat-preset warning, custom prompts kept and reset, computing a
// direction, choosing a layer on the separation chart (mouse and keyboard), and the computed vector
// restored after a reload, or moved aside when its saved copy is corrupt.

const VECTOR_KEY = 'tiller.persona.vector.stories260K-hf.happy-sad-stories';
const CUSTOM_KEY = 'tiller.persona.custom.happy-sad-stories';

async function loadStories(page: Page) {
  await expect(page.getByRole('option', { name: 'stories260K-hf' })).toBeAttached({ timeout: 20_000 });
  await page.getByRole('combobox', { name: 'Model' }).selectOption('stories260K-hf');
  await page.getByRole('combobox', { name: 'Backend' }).selectOption('wasm');
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect(page.getByTestId('model-info')).toContainText('stories260K-hf', { timeout: 60_000 });
}

const storageKeys = (page: Page) => page.evaluate(() => Object.keys(localStorage).sort());
const bar = (page: Page, layer: number) => page.getByRole('button', { name: new RegExp(`^Layer ${layer}: steerability`) });

test('persona panel: preset for the model, custom prompts, compute, choose a layer, restore', async ({ page }) => {
  test.setTimeout(360_000); // three loads and a direction with its steerability pass
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto('/');
  const preset = page.getByRole('combobox', { name: 'Persona preset' });
  const compute = page.getByRole('button', { name: 'Compute direction' });
  await expect(compute).toBeDisabled();

  await loadStories(page);
  await expect(preset).toHaveValue('happy-sad-stories');

  // A chat preset on a model without a chat template is explained, with the way back.
  await preset.selectOption('misaligned-persona');
  await expect(page.getByText('has no chat template')).toBeVisible();
  await expect(compute).toBeDisabled();
  await page.getByRole('button', { name: /^Use “Happy vs\. sad stories”/ }).click();
  await expect(preset).toHaveValue('happy-sad-stories');

  // Edited prompts are saved; an unpaired extra line blocks computing until reset.
  await page.getByText('Edit prompts').click();
  const happy = page.getByLabel(/^happy texts/i);
  await happy.fill(`${await happy.inputValue()}\nPip was happy. He sang all day.`);
  expect(await storageKeys(page)).toContain(CUSTOM_KEY);
  await expect(compute).toBeDisabled();
  await expect(page.getByText('Fix the prompts first')).toBeVisible();
  await page.getByRole('button', { name: 'Reset to preset' }).click();
  expect(await storageKeys(page)).not.toContain(CUSTOM_KEY);

  await compute.click();
  await expect(page.getByRole('button', { name: /\(recommended\)$/ })).toBeVisible({ timeout: 60_000 });
  const recommended = page.getByRole('button', { name: /\(recommended\)$/ });
  await expect(recommended).toHaveAttribute('aria-pressed', 'true');
  await expect(page.getByText('how much steering at each layer moves the examples (steerability)')).toBeVisible();
  await expect(page.getByRole('button', { name: /^Layer \d+: steerability .* separation d′ [-\d.]+, AUROC [\d.]+/ })).toHaveCount(5);
  expect(await storageKeys(page)).toContain(VECTOR_KEY);

  await bar(page, 0).click();
  await expect(bar(page, 0)).toHaveAttribute('aria-pressed', 'true');
  await expect(recommended).toHaveAttribute('aria-pressed', 'false');
  await bar(page, 1).focus();
  await page.keyboard.press('Enter');
  await expect(bar(page, 1)).toHaveAttribute('aria-pressed', 'true');

  // After a reload the direction comes back for the same model and preset, without computing.
  await page.reload();
  await loadStories(page);
  await expect(bar(page, 1)).toBeVisible({ timeout: 20_000 });

  // A corrupt saved vector is moved aside and reported.
  await page.evaluate((key) => localStorage.setItem(key, '{"format": "tiller.vector", '), VECTOR_KEY);
  await page.reload();
  await loadStories(page);
  await expect(page.getByText(/could not be read .* moved aside/)).toBeVisible({ timeout: 20_000 });
  expect(await storageKeys(page)).toContain(`${VECTOR_KEY}.corrupt`);
  expect(await storageKeys(page)).not.toContain(VECTOR_KEY);
  await expect(bar(page, 0)).toHaveCount(0);
  expect(errors).toEqual([]);
});
