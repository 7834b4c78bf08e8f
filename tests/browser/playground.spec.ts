import { type Download, type Page, expect, test } from '@playwright/test';
import { sharedModel, sharedModelsDir } from '../support/paths.ts';
import { startHubServer } from '../support/hub-server.ts';
import { COMPUTE_MS, computeDirection, finishedRuns, generations, loadLocalModel } from '../support/playground.ts';

// `TILLER_SCREENSHOTS=1 npx playwright test` refreshes the pictures in docs/; ordinary runs leave them alone.
const SCREENSHOTS = process.env.TILLER_SCREENSHOTS === '1';

// The playground as a visitor uses it: load → preset → compute → drag the strength → steered text changes
// while the baseline (same seed) stays identical; reload and a shared link bring the configuration back.

const prompt = (page: Page) => page.getByRole('textbox', { name: 'Prompt', exact: true });

/** Waits until a run newer than `after` has finished, and returns the columns' texts. */
async function nextRun(page: Page, after: number, timeout = 120_000) {
  await expect.poll(() => finishedRuns(page), { timeout }).toBeGreaterThan(after);
  await expect(generations(page)).toHaveAttribute('data-state', 'idle');
  const steered = page.getByTestId('output-steered');
  return {
    baseline: await page.getByTestId('output-baseline').textContent(),
    steered: (await steered.count()) > 0 ? await steered.textContent() : undefined,
  };
}

const loadStories = (page: Page, backend: 'wasm' | 'webgpu') => loadLocalModel(page, 'stories260K-hf', backend, 5);

for (const backend of ['wasm', 'webgpu'] as const) {
  test(`load, compute a direction, drag the strength: steered text changes, baseline stays (${backend})`, async ({ page, browser }) => {
    // Three loads and two extractions, each with its steerability pass (first visit, reload, a visitor's
    // browser): on the software WebGPU adapter of a 2-core machine that is up to about ten minutes.
    test.setTimeout(900_000);
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto('/');
    // A first visit already fits the story model that is pre-selected: a base-model preset and its prompt.
    await expect(page.getByRole('combobox', { name: 'Persona preset' })).toHaveValue('happy-sad-stories', { timeout: 20_000 });
    if (backend === 'wasm' && SCREENSHOTS) await page.screenshot({ path: 'docs/playground-first-visit.png' });
    await loadStories(page, backend);

    // A base model gets the story preset by default; choose it anyway, as a visitor would.
    await page.getByRole('combobox', { name: 'Persona preset' }).selectOption('happy-sad-stories');
    await expect(prompt(page)).not.toHaveValue('');
    const strength = await computeDirection(page);
    const layer = page.getByRole('combobox', { name: 'Layer' });
    await expect(layer.locator('option:checked')).toContainText('(recommended)');

    await page.getByLabel('Max new tokens').fill(backend === 'webgpu' ? '12' : '32');
    await page.getByLabel('Seed').fill('7');
    const before = await finishedRuns(page);
    await page.getByRole('button', { name: 'Generate' }).click();
    const first = await nextRun(page, before);
    expect(first.baseline?.length).toBeGreaterThan(0);
    expect(first.steered).toBe(first.baseline); // strength 0: only steering differs, and there is none

    // Dragging the slider restarts the generation by itself (debounced).
    const runs = await finishedRuns(page);
    await strength.fill('0.8');
    await expect(page.getByTestId('strength-value')).toContainText('+0.80 relative');
    await expect(page.getByTestId('strength-value')).toContainText('absolute');
    const steered = await nextRun(page, runs);
    expect(steered.baseline).toBe(first.baseline);
    expect(steered.steered).not.toBe(first.steered);
    await expect(page.getByTestId('column-steered')).toContainText('+0.8');

    // Keyboard: the slider moves with the arrow keys and the text follows the newest setting only.
    const runs2 = await finishedRuns(page);
    await strength.focus();
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('ArrowLeft');
    await expect(strength).toHaveValue('0.78');
    await nextRun(page, runs2);
    await expect(page.getByTestId('column-steered')).toContainText('+0.78');

    if (backend === 'wasm') {
      // Screenshots for the README at a moderate strength, then back to where the test was.
      const runs3 = await finishedRuns(page);
      await strength.fill('0.3');
      await nextRun(page, runs3);
      await page.evaluate(() => window.scrollTo(0, 0));
      if (SCREENSHOTS) await page.screenshot({ path: 'docs/playground.png' });
      await page.setViewportSize({ width: 390, height: 844 });
      await page.evaluate(() => window.scrollTo(0, 0));
      // One column and no sideways scrolling (the chart follows its container's width after a resize).
      await expect.poll(() => page.evaluate(() => document.documentElement.scrollWidth), { timeout: 5_000 }).toBeLessThanOrEqual(390);
      if (SCREENSHOTS) await page.screenshot({ path: 'docs/playground-phone.png' });
      await page.getByTestId('generations').scrollIntoViewIfNeeded();
      if (SCREENSHOTS) await page.screenshot({ path: 'docs/playground-phone-columns.png' });
      await page.setViewportSize({ width: 1280, height: 800 });
      const runs4 = await finishedRuns(page);
      await strength.fill('0.78');
      await nextRun(page, runs4);
    }

    const layerValue = await layer.inputValue();
    const promptValue = await prompt(page).inputValue();
    const link = await page.getByTestId('share-link').inputValue();
    expect(link).toContain('strength=0.78');

    // Reload: settings come back, and the computed direction with them once the model is loaded again.
    await page.reload();
    await expect(page.getByRole('combobox', { name: 'Model' })).toHaveValue('local:stories260K-hf', { timeout: 20_000 });
    await expect(page.getByRole('combobox', { name: 'Backend' })).toHaveValue(backend);
    await expect(strength).toHaveValue('0.78');
    await expect(prompt(page)).toHaveValue(promptValue);
    await expect(page.getByLabel('Seed')).toHaveValue('7');
    // The model was loaded when the page was left: it loads again by itself.
    await expect(page.getByTestId('model-info')).toContainText('stories260K-hf', { timeout: 60_000 });
    await expect(page.getByRole('combobox', { name: 'Persona preset' })).toHaveValue('happy-sad-stories');
    await expect(strength).toBeEnabled();
    await expect(layer).toHaveValue(layerValue);

    // A shared link opens the same configuration in a browser that has never seen it.
    const other = await browser.newContext();
    const visitor = await other.newPage();
    await visitor.goto(link);
    await expect(visitor.getByRole('combobox', { name: 'Model' })).toHaveValue('local:stories260K-hf', { timeout: 20_000 });
    await expect(visitor.getByRole('slider', { name: 'Strength' })).toHaveValue('0.78');
    await expect(prompt(visitor)).toHaveValue(promptValue);
    await expect(visitor.getByTestId('notice')).toContainText('shared configuration');
    // Loaded and computed by itself (on this browser's own backend choice).
    await expect(visitor.getByTestId('model-info')).toContainText('stories260K-hf', { timeout: 60_000 });
    await expect(visitor.getByRole('combobox', { name: 'Persona preset' })).toHaveValue('happy-sad-stories');
    // The visitor computes the linked preset with its steerability pass: over two minutes on the software WebGPU adapter of a busy machine.
    await expect(visitor.getByRole('slider', { name: 'Strength' })).toBeEnabled({ timeout: COMPUTE_MS });
    await expect(visitor.getByRole('combobox', { name: 'Layer' })).toHaveValue(layerValue);
    await other.close();
    expect(errors).toEqual([]);
  });
}

test('presenter mode shows only the strength and the two columns, in large type; Escape leaves it', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto('/');
  await loadStories(page, 'wasm');
  await page.getByRole('combobox', { name: 'Persona preset' }).selectOption('happy-sad-stories');
  const strength = await computeDirection(page);
  await page.getByLabel('Max new tokens').fill('24');
  await strength.fill('0.3');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await nextRun(page, before);

  const toggle = page.getByRole('button', { name: 'Presenter mode' });
  const modelPanel = page.getByRole('heading', { name: 'Model', exact: true });
  await expect(toggle).toHaveAttribute('aria-pressed', 'false');
  await toggle.click();
  await expect(toggle).toHaveAttribute('aria-pressed', 'true');
  await expect(modelPanel).toBeHidden();
  await expect(page.getByRole('heading', { name: 'Persona' })).toBeHidden();
  await expect(page.getByRole('textbox', { name: 'Prompt', exact: true })).toBeHidden();
  await expect(page.getByTestId('share-link')).toBeHidden();
  await expect(strength).toBeVisible();
  await expect(page.getByTestId('strength-value')).toBeVisible();
  await expect(page.getByTestId('strength-value')).toContainText('+0.30 relative');
  // The coherent range and the buttons that jump to its edges stay on screen for the room.
  await expect(page.getByTestId('coherent-range')).toHaveText(/^coherent up to ±0\.\d\d here$/);
  const edge = /±([\d.]+)/.exec((await page.getByTestId('coherent-range').textContent())!)![1];
  await expect(page.getByRole('button', { name: `+${edge}`, exact: true })).toBeVisible();
  await expect(page.getByRole('button', { name: `−${edge}`, exact: true })).toBeVisible();
  for (const key of ['baseline', 'steered']) {
    await expect(page.getByTestId(`column-${key}`)).toBeVisible();
    const size = await page.getByTestId(`output-${key}`).evaluate((el) => parseFloat(getComputedStyle(el).fontSize));
    expect(size).toBeGreaterThanOrEqual(24);
  }
  // The slider still steers live while presenting.
  const runs = await finishedRuns(page);
  await strength.fill('0.5');
  await nextRun(page, runs);
  await expect(page.getByTestId('column-steered')).toContainText('+0.5');
  if (SCREENSHOTS) await page.screenshot({ path: 'docs/presenter-mode.png' });

  await page.keyboard.press('Escape');
  await expect(toggle).toHaveAttribute('aria-pressed', 'false');
  await expect(modelPanel).toBeVisible();
  await expect(page.getByTestId('share-link')).toBeVisible();
  const size = await page.getByTestId('output-steered').evaluate((el) => parseFloat(getComputedStyle(el).fontSize));
  expect(size).toBeLessThan(24);

  // The same button leaves it too, and a link with present=1 opens in it.
  await toggle.click();
  await expect(modelPanel).toBeHidden();
  await toggle.click();
  await expect(modelPanel).toBeVisible();
  await page.getByLabel('opens in presenter mode').check();
  const link = await page.getByTestId('share-link').inputValue();
  expect(link).toContain('present=1');
  // A fresh tab (a hash-only change would not reload this one) opens the link in presenter mode.
  const visitor = await page.context().newPage();
  visitor.on('pageerror', (error) => errors.push(error.message));
  await visitor.goto(link);
  await expect(visitor.getByRole('button', { name: 'Presenter mode' })).toHaveAttribute('aria-pressed', 'true', { timeout: 20_000 });
  await expect(visitor.getByRole('heading', { name: 'Model', exact: true })).toBeHidden();
  await expect(visitor.getByRole('slider', { name: 'Strength' })).toHaveValue('0.5');
  expect(new URL(visitor.url()).hash).toBe('');
  await visitor.keyboard.press('Escape');
  await expect(visitor.getByRole('heading', { name: 'Model', exact: true })).toBeVisible();
  await visitor.close();
  expect(errors).toEqual([]);
});

test('the guided lesson walks from a direction to steering and monitoring on the story model, and can be skipped', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto('/');
  const lesson = page.getByTestId('lesson');
  const heading = page.locator('#lesson-heading');
  const next = page.getByRole('button', { name: 'Next step' });
  await expect(lesson).toHaveCount(0);
  await page.getByRole('button', { name: 'Guided lesson' }).click();
  await expect(heading).toContainText('step 1 of 6: A direction in activation space');
  await next.click();
  await expect(heading).toContainText('step 2 of 6: Load a model');
  await expect(page.getByTestId('lesson-done')).toHaveCount(0);
  await loadStories(page, 'wasm');
  await expect(page.getByTestId('lesson-done')).toBeVisible();
  await next.click();
  await expect(heading).toContainText('Find the persona direction');
  // The misaligned persona needs a chat model: on the base story model the step says so and uses a story preset.
  await expect(page.getByTestId('lesson-task')).toContainText('needs a chat model');
  await expect(page.getByRole('combobox', { name: 'Persona preset' })).toHaveValue('kind-mean-stories');
  const strength = await computeDirection(page);
  await expect(page.getByTestId('lesson-done')).toBeVisible();
  await next.click();
  await expect(heading).toContainText('Add it');
  // The lesson steers at the edge of the coherent range measured for this direction.
  const edge = Number(/±([\d.]+)/.exec((await page.getByTestId('coherent-range').textContent())!)![1]);
  await expect(strength).toHaveValue(String(edge));
  await page.getByLabel('Max new tokens').fill('16');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate', exact: true }).click();
  const added = await nextRun(page, before);
  expect(added.steered).not.toBe(added.baseline);
  await page.evaluate(() => window.scrollTo(0, 0));
  if (SCREENSHOTS) await page.screenshot({ path: 'docs/lesson.png' });
  const runs = await finishedRuns(page);
  await next.click();
  await expect(heading).toContainText('Subtract it');
  await expect(strength).toHaveValue(String(-edge));
  await nextRun(page, runs); // live since the first Generate: the new strength restarts the columns
  await expect(page.getByTestId('column-steered')).toContainText(String(-edge));
  await next.click();
  // stories260K-sad-dogs-hf is served beside it: the lesson gains its optional model-diffing step.
  await expect(heading).toContainText('step 6 of 7: Monitor it');
  await expect(strength).toHaveValue('0');
  await page.getByRole('button', { name: 'Back' }).click();
  await expect(heading).toContainText('Subtract it');
  await page.getByRole('button', { name: 'Skip lesson' }).click();
  await expect(lesson).toHaveCount(0);
  await page.getByRole('button', { name: 'Guided lesson' }).click();
  await expect(heading).toContainText('step 1 of 7');
  expect(errors).toEqual([]);
});

test('corrupt saved settings are set aside and reported, not silently dropped', async ({ page }) => {
  await page.goto('/');
  // Once the page has settled (it saves the default model it picks), break what it saved.
  await expect(page.getByRole('combobox', { name: 'Model' })).toHaveValue('local:stories260K', { timeout: 20_000 });
  await page.evaluate(() => localStorage.setItem('tiller.settings', '{"strength": "lots"'));
  await page.reload();
  await expect(page.getByTestId('settings-problem')).toContainText('not JSON');
  const kept = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tiller.settings.corrupt-')));
  expect(kept).toHaveLength(1);
  expect(await page.evaluate((key) => localStorage.getItem(key), kept[0])).toBe('{"strength": "lots"');
});

test('a Hub model downloads with progress, then loads from the browser cache without model requests', async ({ page }) => {
  const repo = 'tiller-test/stories260K-hf';
  const server = await startHubServer({ root: sharedModelsDir, repos: { [repo]: sharedModel('stories260K-hf') } });
  try {
    // Slow the graph down so that the progress bar is seen mid-download.
    server.setFault('onnx/model.onnx', { kind: 'delay', ms: 1500, afterBytes: 200_000 });
    await page.goto('/');
    await page.getByRole('combobox', { name: 'Backend' }).selectOption('wasm');
    await page.getByText('Other Hub models').click();
    await page.getByLabel('Hub base URL').fill(server.baseUrl);
    await page.getByLabel('Hub id').fill(repo);
    await expect(page.getByRole('combobox', { name: 'Model' })).toHaveValue(`hub:${repo}`);
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.getByTestId('download-bytes')).toContainText(/left|estimating/, { timeout: 20_000 });
    await expect(page.getByRole('progressbar', { name: 'Download progress' })).toBeVisible();
    await expect(page.getByTestId('model-info')).toContainText('stories260K-hf: 5 layers', { timeout: 60_000 });
    const modelRequests = () => server.requests.filter((r) => r.includes('/onnx/') && !r.startsWith('HEAD ')).length;
    expect(modelRequests()).toBeGreaterThan(0);
    server.setFault('onnx/model.onnx', undefined);
    // The browser stores downloads in the background; wait until the graph is in Cache Storage.
    await expect.poll(() => page.evaluate(async () => (await (await caches.open('tiller-models')).keys()).some((r) => r.url.endsWith('/onnx/model.onnx'))), { timeout: 20_000 }).toBe(true);
    await expect(page.getByTestId('cache')).toContainText('Browser cache');

    const requestsBefore = modelRequests();
    const allBefore = server.requests.length;
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.getByTestId('model-info')).toContainText('stories260K-hf: 5 layers', { timeout: 60_000 });
    expect(modelRequests()).toBe(requestsBefore);
    // The cache may ask whether a file changed (HEAD); it downloads none.
    expect(server.requests.slice(allBefore).filter((r) => !r.startsWith('HEAD ') && /\.(onnx|onnx_data|json)$/.test(r) && !/generation_config|tokenizer_config|chat_template/.test(r))).toEqual([]);

    await page.getByLabel('Max new tokens').fill('8');
    const before = await finishedRuns(page);
    await page.getByRole('button', { name: 'Generate' }).click();
    const { baseline } = await nextRun(page, before);
    expect(baseline?.length).toBeGreaterThan(0);
  } finally {
    await server.close();
  }
});

test('vectors export as JSON and GGUF and import back; a wrong file is refused with the problem named', async ({ page }) => {
  await page.goto('/');
  await loadStories(page, 'wasm');
  await computeDirection(page);

  // A sweep adds −s and s/2 as extra columns of the same batch.
  await page.getByLabel('Sweep').check();
  await page.getByRole('slider', { name: 'Strength' }).fill('0.5');
  await page.getByLabel('Max new tokens').fill('8');
  const before = await finishedRuns(page);
  await page.getByRole('button', { name: 'Generate' }).click();
  await nextRun(page, before);
  await expect(page.getByTestId('column-sweep-1')).toContainText('Sweep -0.5');
  await expect(page.getByTestId('column-sweep-2')).toContainText('Sweep +0.25');
  await expect(page.getByTestId('output-sweep-1')).not.toBeEmpty();

  const [json] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export JSON' }).click()]);
  expect(json.suggestedFilename()).toBe('stories260K-hf-happy-sad-stories.json');
  const jsonText = (await readDownload(json)).toString('utf8');
  expect(JSON.parse(jsonText)).toMatchObject({ format: 'tiller.vector', model: { id: 'stories260K-hf' }, preset: 'happy-sad-stories' });

  const [gguf] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export GGUF' }).click()]);
  await expect(page.getByTestId('vector-message')).toContainText('Layer 0 was left out');
  const ggufBytes = await readDownload(gguf);
  expect(ggufBytes.subarray(0, 4).toString()).toBe('GGUF');

  const importer = page.getByLabel('Import vector…');
  await importer.setInputFiles({ name: 'happy.gguf', mimeType: 'application/octet-stream', buffer: ggufBytes });
  await expect(page.getByTestId('vector-message')).toContainText('Imported happy.gguf: 4 layers');
  await expect(page.getByTestId('strength-value')).toContainText('without a residual scale');

  await importer.setInputFiles({ name: 'happy.json', mimeType: 'application/json', buffer: Buffer.from(jsonText) });
  await expect(page.getByTestId('vector-message')).toContainText('Imported happy.json: 5 layers');

  const other = JSON.parse(jsonText);
  other.hiddenSize = 8;
  other.directions = [{ layer: 1, vector: [1, 2, 3, 4, 5, 6, 7, 8] }];
  delete other.recommendedLayer;
  await importer.setInputFiles({ name: 'other.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(other)) });
  await expect(page.getByTestId('vector-error')).toContainText('Could not import other.json: this vector was made for stories260K-hf (hidden size 8)');
  await importer.setInputFiles({ name: 'notes.json', mimeType: 'application/json', buffer: Buffer.from('hello') });
  await expect(page.getByTestId('vector-error')).toContainText('notes.json is not JSON');
});

async function readDownload(download: Download): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await download.createReadStream()) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
