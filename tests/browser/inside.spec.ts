import { type Page, expect, test } from '@playwright/test';
import { computeDirection, finishedRuns, generations, loadLocalModel } from '../support/playground.ts';

// The "see inside" views in the playground, on both shared models: the persona meter on generations and
// on pasted text, the separation strip, the logit lens, the next-token chart following the slider, the
// layer × strength map (a click applies its cell), ablation, and two directions on the 2-D pad.
const SCREENSHOTS = process.env.TILLER_SCREENSHOTS === '1';

async function loadAndCompute(page: Page, model: string, layers: number) {
  test.setTimeout(720_000);
  await page.setViewportSize({ width: 1400, height: 1000 });
  await page.goto('/');
  await loadLocalModel(page, model, 'wasm', layers);
  // Answers (chat presets), hidden states, then the steerability pass.
  await computeDirection(page);
}

async function generateAndWait(page: Page, after: number) {
  await expect.poll(() => finishedRuns(page), { timeout: 60_000 }).toBeGreaterThan(after);
  await expect(generations(page)).toHaveAttribute('data-state', 'idle');
}

test('stories260K: meter, separation strip, logit lens, next token, map, ablation', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await loadAndCompute(page, 'stories260K-hf', 5);

  // Separation strip: one dot per example and side, fitted and held out.
  const strip = page.getByTestId('separation-strip');
  await expect(strip.locator('circle')).toHaveCount(4 * 16);
  // Logit lens: ten tokens raised and ten lowered.
  const lens = page.getByTestId('logit-lens');
  await expect(lens.getByRole('list', { name: 'Tokens the direction raises' }).getByRole('listitem')).toHaveCount(10, { timeout: 30_000 });
  await expect(lens.getByRole('list', { name: 'Tokens the direction lowers' }).getByRole('listitem')).toHaveCount(10);

  // Generation with the meter: every token of each column carries a value, and the text is unchanged.
  await page.getByLabel('Max new tokens').fill('24');
  await page.getByLabel('Temperature').fill('0');
  const strength = page.getByRole('slider', { name: 'Strength' });
  await strength.fill('0.3');
  let runs = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await generateAndWait(page, runs);
  const baseline = page.getByTestId('output-baseline');
  await expect(baseline.locator('span[data-value]').first()).toBeVisible();
  const values = (await baseline.locator('span[data-value]').evaluateAll((spans) => spans.map((s) => Number(s.getAttribute('data-value')))));
  expect(values.length).toBeGreaterThan(5);
  expect(values.every(Number.isFinite)).toBe(true);
  expect(new Set(values).size).toBeGreaterThan(1);

  // Next token: baseline and steered bars; moving the slider changes the steered probabilities.
  const next = page.getByTestId('next-tokens');
  await expect(next.locator('tr')).not.toHaveCount(0, { timeout: 30_000 });
  const readNext = () => next.locator('.numbers').allTextContents();
  await expect.poll(readNext).not.toEqual([]);
  const atPlus = await readNext();
  runs = await finishedRuns(page);
  await strength.fill('-0.6');
  await expect.poll(readNext, { timeout: 30_000 }).not.toEqual(atPlus);
  await generateAndWait(page, runs);

  // The detector reads pasted text: sad text leans below happy text.
  const detector = page.getByTestId('text-meter');
  const average = async (text: string) => {
    await detector.getByLabel('Text to read').fill(text);
    await detector.getByRole('button', { name: 'Read it' }).click();
    const shown = detector.getByTestId('meter-average');
    await expect(shown).toBeVisible({ timeout: 30_000 });
    return Number((await shown.locator('b').textContent())!.replace('+', ''));
  };
  const sad = await average('Lily was sad. She cried alone because her dog was lost.');
  const happy = await average('Lily was happy. She laughed and played with her friends in the sun.');
  expect(happy).toBeGreaterThan(sad);
  if (SCREENSHOTS) {
    await detector.screenshot({ path: 'docs/view-detector.png' });
    await generations(page).screenshot({ path: 'docs/view-meter.png' });
    await page.getByRole('region', { name: 'Inside the direction' }).screenshot({ path: 'docs/view-inside.png' });
    await next.screenshot({ path: 'docs/view-next-token.png' });
  }

  // Layer × strength map: 5 layers × 9 strengths in both maps; a click applies its layer and strength.
  const map = page.getByTestId('strength-map');
  await map.getByRole('button', { name: /^Map 5 layers/ }).click();
  await expect(map.locator('rect.cell')).toHaveCount(2 * 5 * 9, { timeout: 120_000 });
  if (SCREENSHOTS) await map.screenshot({ path: 'docs/view-strength-map.png' });
  // Each map has its colour key: the trait's two ends, and the perplexities the coherence colours span.
  await expect(map.getByLabel('Persona meter colour key')).toContainText('happy');
  await expect(map.getByLabel('Coherence colour key')).toContainText(/fluent, perplexity \d+\.\d.*\d+\.\d, broken/);
  await map.locator('rect.cell[data-layer="1"][data-strength="0.25"]').first().click();
  await expect(page.getByRole('combobox', { name: 'Layer' })).toHaveValue('1');
  await expect(page.getByTestId('strength-value')).toContainText('+0.25 relative');
  // The Steer panel is far above: the map says what the click changed.
  await expect(map.getByTestId('map-picked')).toHaveText('Now steering at layer 1, strength +0.25: the Steer panel\'s layer and slider moved there.');

  // Ablation: the model is reloaded once with ablation inputs; the steered column becomes the ablated one.
  runs = await finishedRuns(page);
  await page.getByLabel('Ablate it (remove its component)').check();
  await page.getByLabel('From layer').selectOption('1');
  await page.getByLabel('to layer').selectOption('3');
  await expect(page.getByTestId('column-steered')).toContainText('Ablated · layers 1–3', { timeout: 60_000 });
  await generateAndWait(page, runs);
  expect(errors).toEqual([]);
  if (SCREENSHOTS) await page.getByRole('region', { name: 'Steer' }).screenshot({ path: 'docs/view-ablation.png' });
});

test('builder fp16 (chat, fused graph): two directions on the 2-D pad, and the views render', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await loadAndCompute(page, 'tiny-random-llama-builder-fp16', 2);
  // A story preset on a chat model works, but the panel says what the model is for, with a way back.
  const preset = page.getByRole('combobox', { name: 'Persona preset' });
  const chatPreset = await preset.inputValue();
  await preset.selectOption('happy-sad-stories');
  await expect(page.getByTestId('base-preset-on-chat')).toContainText('is a chat model');
  await page.getByTestId('base-preset-on-chat').getByRole('button').click();
  await expect(preset).toHaveValue(chatPreset);
  await expect(page.getByTestId('base-preset-on-chat')).toHaveCount(0);
  await expect(page.getByTestId('logit-lens').getByRole('listitem')).toHaveCount(20, { timeout: 30_000 });
  await expect(page.getByTestId('separation-strip').locator('circle')).not.toHaveCount(0);
  await expect(page.getByTestId('next-tokens').locator('tr')).not.toHaveCount(0, { timeout: 30_000 });

  // A second direction: pick another chat preset, compute it, then the pad sets both strengths.
  const second = page.getByTestId('second-direction');
  const choice = second.getByRole('combobox');
  const options = await choice.locator('option').evaluateAll((els) => els.map((e) => (e as HTMLOptionElement).value).filter(Boolean));
  await choice.selectOption(options[0]);
  await second.getByRole('button', { name: 'Compute it' }).click();
  const pad = page.getByTestId('strength-pad');
  await expect(pad).toBeVisible({ timeout: 300_000 }); // answers, hidden states and the steerability pass
  await page.getByLabel('Max new tokens').fill('8');
  const runs = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await generateAndWait(page, runs);
  const box = (await pad.boundingBox())!;
  const afterPad = await finishedRuns(page);
  await page.mouse.click(box.x + box.width * 0.75, box.y + box.height * 0.25);
  await expect(pad).toHaveAttribute('aria-valuetext', 'x 0.50, y 0.50');
  await expect(page.getByTestId('column-steered')).toContainText('+0.5');
  await generateAndWait(page, afterPad);
  // The meter reads both columns of the fused fp16 graph.
  await expect(page.getByTestId('output-steered').locator('span[data-value]').first()).toBeAttached();
  if (SCREENSHOTS) await page.getByRole('region', { name: 'Steer' }).screenshot({ path: 'docs/view-pad.png' });
  expect(errors).toEqual([]);
});
