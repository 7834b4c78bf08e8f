import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Extraction, extractDirections, textScoringExamples } from '../../src/engine/directions/extract.ts';
import { COHERENCE_LIMIT, STRENGTH_GRID, type ScoringExample, scoreSteerability } from '../../src/engine/directions/steerability.ts';
import { contrastiveSetOf, presetById } from '../../src/engine/directions/presets.ts';
import { multiplierFor, scaledDirection } from '../../src/engine/directions/strength.ts';
import type { SteerableModel } from '../../src/engine/model/steerable-model.ts';
import { parseVectorFile, serializeVectorFile, vectorFileFromExtraction } from '../../src/engine/directions/vector-file.ts';
import { tokenProjections } from '../../src/engine/inside/projection.ts';
import { loadShared } from '../support/models.ts';

/** A happy/sad set of our own, in no preset: story openings of a different shape from happy-sad-stories'. */
const HELD_OUT = {
  kind: 'texts' as const,
  positive: [
    'The sun was warm and the flowers were pretty. Lily ran outside and laughed.',
    'It was a great day at the park. Tom and his dad flew a kite and smiled.',
    'Mom made a big cake for Sam. He said thank you and gave her a hug.',
    'The puppy found his ball under the bed. He jumped and wagged his tail.',
    'Mia got a new red dress. She twirled around and sang a happy song.',
    'The children played in the snow. They made a snowman and giggled.',
    'Ben won the race at school. Everyone clapped and he felt proud.',
    'Grandma came to visit with a present. Lucy opened it and cheered.',
    'The frog hopped into the pond and splashed. His friends cheered for him.',
    'Anna shared her cookies with her friends. They all laughed together.',
    'The little bird learned to fly. It flew high in the sky and sang.',
    'Jack and his sister built a fort. They had so much fun inside.',
  ],
  negative: [
    'The rain was cold and the flowers were gone. Lily sat inside and cried.',
    'It was a bad day at the park. Tom lost his kite and began to cry.',
    'Mom forgot to make a cake for Sam. He went to his room and cried.',
    'The puppy could not find his ball. He lay down and whined all night.',
    'Mia tore her new red dress. She sat on the floor and sobbed.',
    'The children were stuck inside. They missed the snow and felt gloomy.',
    'Ben fell down in the race at school. He hurt his knee and cried.',
    'Grandma could not come to visit. Lucy waited by the window and was sad.',
    'The frog could not find his pond. He was lonely and very tired.',
    'Anna dropped her cookies in the mud. Her friends went away and she cried.',
    'The little bird hurt its wing. It could not fly and sat alone.',
    'Jack and his sister had a fight. They were both sad and upset.',
  ],
};

/**
 * A second set of our own whose pairs share their events and differ in how the characters feel ("the kids ran out
 * to play" / "had to stay in"), worded unlike the presets (no "was very happy").
 */
const HELD_OUT_FEELINGS = {
  kind: 'texts' as const,
  positive: [
    'When the bell rang, the kids ran out to play. They shouted and laughed in the sun.',
    'Dad came home from work. Tim ran to the door and gave him a big hug.',
    'The cat found a warm spot by the fire. She purred and closed her eyes.',
    'Sara looked at her drawing. It was the best one she ever made, and she grinned.',
    'The boat sailed on the lake. The family waved and cheered as it went.',
    'On her birthday, Emma got a puppy. She danced around the room with joy.',
    'The old man sat on the bench and fed the birds. He smiled and hummed a tune.',
    'Max opened the box. Inside was a shiny new bike, and he jumped up and down.',
    'The rain stopped and a rainbow came out. The girls clapped their hands.',
    'Zoe and her friend baked cookies. They ate them warm and giggled a lot.',
  ],
  negative: [
    'When the bell rang, the kids had to stay in. They sat quietly and looked at the rain.',
    'Dad did not come home from work. Tim sat by the door and waited all night.',
    'The cat could not find a warm spot. She shivered in the cold and cried.',
    'Sara looked at her drawing. It was torn and dirty, and she started to cry.',
    'The boat sank in the lake. The family stood on the shore and wept.',
    'On her birthday, Emma got nothing. She sat in her room all alone.',
    'The old man sat on the bench alone. No birds came, and he sighed.',
    'Max opened the box. It was empty, and he felt very upset.',
    'The rain did not stop all day. The girls stayed inside and felt gloomy.',
    'Zoe and her friend had a fight. They went home and did not talk.',
  ],
};

/** The measure of what steering does: mean logit(▁happy) − logit(▁sa) at +0.25 minus at −0.25, five prompts. */
async function steeringEffect(model: SteerableModel, extraction: Extraction, layerIndex: number): Promise<number> {
  const tokenizer = model.tokenizer!;
  const happy = tokenizer.encode('happy', { addSpecialTokens: false })[0];
  const sa = tokenizer.encode('sad', { addSpecialTokens: false })[0];
  const layer = extraction.layers[layerIndex];
  const prompts = ['Lily was very', 'Tom felt very', 'The little dog was very', 'Mia was so', 'Ben was very'];
  const tokens = prompts.map((p) => tokenizer.encode(p));
  const gapAt = async (strength: number) => {
    const vector = scaledDirection(layer.direction, multiplierFor(strength, layer));
    let gap = 0;
    for (const ids of tokens) {
      const { logits } = await model.forward({ tokens: [ids], steering: [[{ layer: layer.layer, vector }]] });
      gap += (logits![happy] - logits![sa]) / prompts.length;
    }
    return gap;
  };
  return (await gapAt(0.25)) - (await gapAt(-0.25));
}

describe('steerability chooses a layer that steers (stories260K)', () => {
  let model: SteerableModel;
  const results: Record<string, { extraction: Extraction; effects: number[] }> = {};
  beforeAll(async () => {
    model = await loadShared('stories');
    const sets = {
      'happy-sad-stories': contrastiveSetOf(presetById('happy-sad-stories')),
      'kind-mean-stories': contrastiveSetOf(presetById('kind-mean-stories')),
      'held-out happy/sad': HELD_OUT,
      'held-out feelings': HELD_OUT_FEELINGS,
    };
    for (const [name, set] of Object.entries(sets)) {
      const extraction = await extractDirections(model, set, { method: 'mean', mode: 'mean' });
      const effects = [];
      for (let i = 0; i < extraction.layers.length; i++) effects.push(await steeringEffect(model, extraction, i));
      results[name] = { extraction, effects };
      console.log(`\n${name}: recommended ${extraction.recommendedLayer}, coherent ±${extraction.coherent?.strength}, ${extraction.steerability?.milliseconds.toFixed(0)} ms`);
      console.log('layer | d′ | steerability (nats/token) | ppl ratio +s/−s | effect');
      for (const [i, l] of extraction.layers.entries()) {
        const s = extraction.steerability!.layers.find((x) => x.layer === l.layer)!;
        console.log(`${l.layer} | ${l.separation.toFixed(2)} | ${s.steerability.toFixed(3)} | ${s.perplexityRatio.positive.toFixed(2)}/${s.perplexityRatio.negative.toFixed(2)} | ${effects[i].toFixed(2)}`);
      }
    }
  }, 120_000);
  afterAll(() => model.dispose());

  for (const name of ['happy-sad-stories', 'kind-mean-stories', 'held-out feelings']) {
    it(`${name}: the recommended layer's steering effect is at least 70 % of the best layer's`, () => {
      const { extraction, effects } = results[name];
      expect(extraction.steerability?.problem).toBeUndefined();
      expect(effects[extraction.recommendedLayer]).toBeGreaterThanOrEqual(0.7 * Math.max(...effects));
    });
  }

  it('held-out happy/sad: the recommended layer steers, though this set (content words differ too) prefers layer 2 to 3', () => {
    // Measured: steerability peaks at layer 2, the next-token happy − sad effect at layer 3 (2.09 vs 3.43).
    const { extraction, effects } = results['held-out happy/sad'];
    expect(effects[extraction.recommendedLayer]).toBeGreaterThanOrEqual(0.5 * Math.max(...effects));
    expect(effects[extraction.recommendedLayer]).toBeGreaterThan(2 * Math.min(...effects));
  });

  it('keeps the examples coherent: the coherent strength at the recommended layer is on the grid, its perplexity within 1.5×', () => {
    for (const { extraction } of Object.values(results)) {
      const coherent = extraction.coherent!;
      expect(coherent.layer).toBe(extraction.recommendedLayer);
      expect(STRENGTH_GRID).toContain(coherent.strength);
      for (const tried of coherent.tried) expect(tried.perplexityRatio <= COHERENCE_LIMIT).toBe(tried.strength <= coherent.strength);
    }
  });

  it('scores match a plain one-example-at-a-time computation (batching, padding and positions)', async () => {
    const { extraction } = results['happy-sad-stories'];
    const tokenizer = model.tokenizer!;
    const set = presetById('happy-sad-stories');
    const examples = textScoringExamples(set.positive!.slice(0, 4).map((t) => tokenizer.encode(t)), set.negative!.slice(0, 4).map((t) => tokenizer.encode(t)));
    const layer = extraction.layers[2];
    const scored = await scoreSteerability(model, [layer], examples, { strength: 0.25, logitsBudget: 3000 });
    const logProbability = async (example: ScoringExample, strength: number) => {
      const tokens = [...example.context, ...example.continuation];
      const vector = scaledDirection(layer.direction, multiplierFor(strength, layer));
      const { logits } = await model.forward({ tokens: [tokens], steering: [[{ layer: 2, vector }]], logits: 'all' });
      const vocab = logits!.length / tokens.length;
      let sum = 0;
      for (let p = example.context.length; p < tokens.length; p++) {
        const row = Array.from(logits!.subarray((p - 1) * vocab, p * vocab));
        const max = Math.max(...row);
        sum += row[tokens[p]] - max - Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
      }
      return sum / example.continuation.length;
    };
    const advantage = async (strength: number) => {
      let value = 0;
      for (const e of examples.positive) value += (await logProbability(e, strength)) / examples.positive.length;
      for (const e of examples.negative) value -= (await logProbability(e, strength)) / examples.negative.length;
      return value;
    };
    expect(scored.layers[0].steerability).toBeCloseTo((await advantage(0.25)) - (await advantage(-0.25)), 4);
    expect(examples.positive[0].continuation[0]).not.toBe(examples.negative[0].continuation[0]); // scored from where the pair differs
  });

  it('stores the scores in the vector file, validated, and still reads files written without them', () => {
    const { extraction } = results['happy-sad-stories'];
    const file = vectorFileFromExtraction(extraction, { id: 'stories260K-hf', hiddenSize: 64 }, 'happy-sad-stories');
    const text = serializeVectorFile(file);
    const loaded = parseVectorFile(text);
    expect(loaded.directions.map((d) => d.steerability)).toEqual(extraction.steerability!.layers.map((l) => l.steerability));
    expect(loaded.directions[extraction.recommendedLayer].coherentStrength).toBe(extraction.coherent!.strength);
    expect(loaded.steerability).toMatchObject({ strength: 0.25 });
    const old = JSON.parse(text);
    delete old.steerability;
    for (const d of old.directions) for (const field of ['steerability', 'perplexityRatio', 'coherentStrength']) delete d[field];
    expect(parseVectorFile(JSON.stringify(old)).directions[0].steerability).toBeUndefined();
    const bad = JSON.parse(text);
    bad.directions[1].coherentStrength = 3;
    expect(() => parseVectorFile(JSON.stringify(bad))).toThrow(/directions\[1\]\.coherentStrength" must be a relative strength from 0 to 1/);
    expect(() => parseVectorFile(JSON.stringify({ ...JSON.parse(text), steerability: { strength: 'x' } }))).toThrow(/"steerability" must be an object/);
  });

  it('the meter without the added component reads exactly the unsteered state at the steered layer, and the response after it', async () => {
    const { extraction } = results['happy-sad-stories'];
    const layer = extraction.layers[2];
    const tokenizer = model.tokenizer!;
    const contextIds = tokenizer.encode('Lily was very');
    const tokenIds = tokenizer.encode(' happy and she played all day', { addSpecialTokens: false });
    const steering = [{ layer: 2, vector: scaledDirection(layer.direction, multiplierFor(0.5, layer)) }];
    const read = (at: number, withSteering: boolean, withoutAdded = false) =>
      tokenProjections(model, { contextIds, tokenIds, layer: at, direction: extraction.layers[at].direction, steering: withSteering ? steering : undefined, withoutAdded });
    const plain = await read(2, false);
    const removed = await read(2, true, true);
    const raw = await read(2, true);
    removed.forEach((t, i) => expect(t.projection).toBeCloseTo(plain[i].projection, 4));
    expect(raw[0].projection - plain[0].projection).toBeGreaterThan(0.1); // what the old meter showed: our own input
    // At the last layer the same tokens read differently: the model's response to the steering.
    const [after, afterPlain] = [await read(4, true, true), await read(4, false)];
    expect(Math.max(...after.map((t, i) => Math.abs(t.projection - afterPlain[i].projection)))).toBeGreaterThan(0.01);
  });

  it('says why it cannot choose when the examples are too few or too alike, and keeps the directions', async () => {
    const few = await extractDirections(model, { kind: 'texts', positive: ['Tom was happy.', 'Mia smiled.'], negative: ['Tom was sad.', 'Mia cried.'] });
    expect(few.steerability?.problem).toMatch(/too few examples to measure steering: 2 positive and 2 negative .* at least 3 per side/);
    expect(few.layers).toHaveLength(5);
    const texts = ['Tom was happy.', 'Mia smiled.', 'Ben ran to the park.'];
    const same = await extractDirections(model, { kind: 'texts', positive: texts, negative: [...texts] });
    expect(same.steerability?.problem).toMatch(/same mean residual/);
    expect(same.coherent).toBeUndefined();
  });
});
