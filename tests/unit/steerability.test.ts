import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Extraction, extractDirections } from '../../src/engine/directions/extract.ts';
import { contrastiveSetOf, presetById } from '../../src/engine/directions/presets.ts';
import { multiplierFor, scaledDirection } from '../../src/engine/directions/strength.ts';
import type { SteerableModel } from '../../src/engine/model/steerable-model.ts';
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

  for (const name of ['happy-sad-stories', 'kind-mean-stories', 'held-out happy/sad']) {
    it(`${name}: the recommended layer's steering effect is at least 70 % of the best layer's`, () => {
      const { extraction, effects } = results[name];
      expect(extraction.steerability?.problem).toBeUndefined();
      expect(effects[extraction.recommendedLayer]).toBeGreaterThanOrEqual(0.7 * Math.max(...effects));
    });
  }
});
