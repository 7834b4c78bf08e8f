import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TextTokenizer, type TokenizerFiles } from '../../src/engine/model/tokenizer.ts';
import { sharedModel } from '../support/paths.ts';

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

function tokenizerFiles(model: string): TokenizerFiles {
  const dir = sharedModel(model);
  return {
    tokenizerJson: readJson(path.join(dir, 'tokenizer.json')),
    tokenizerConfig: readJson(path.join(dir, 'tokenizer_config.json')),
  };
}

describe('TextTokenizer on stories260K', () => {
  const files = tokenizerFiles('stories260K-hf');
  const tokenizer = TextTokenizer.fromFiles(files);

  it('encodes like llama2.c, BOS first', () => {
    expect(tokenizer.encode('Tom was very angry')).toEqual([1, 274, 287, 286, 399, 261, 416, 428, 420, 422]);
    expect(tokenizer.encode('Tom was very angry', { addSpecialTokens: false })).toEqual([274, 287, 286, 399, 261, 416, 428, 420, 422]);
  });

  it('encodes empty text as BOS alone, or nothing without special tokens', () => {
    expect(tokenizer.encode('')).toEqual([1]);
    expect(tokenizer.encode('', { addSpecialTokens: false })).toEqual([]);
  });

  it('knows its special tokens and size', () => {
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenIds).toEqual([2]);
    expect(tokenizer.vocabSize).toBe(512);
    expect(tokenizer.tokenText(274)).toBe('▁T');
    expect(tokenizer.tokenText(1)).toBe('<s>');
    expect(tokenizer.tokenText(100_000)).toBe('');
  });

  it('decodes back to the text', () => {
    for (const text of ['Tom was very angry', 'Once upon a time, there was a little girl.', '  two  spaces', 'a . b , c !']) {
      expect(tokenizer.decode(tokenizer.encode(text), { skipSpecialTokens: true })).toBe(text);
    }
    expect(tokenizer.decode(tokenizer.encode('Tom was'))).toBe('<s> Tom was');
    expect(tokenizer.decode([])).toBe('');
  });

  it('round-trips accented text through byte fallback', () => {
    const ids = tokenizer.encode('café naïve', { addSpecialTokens: false });
    expect(ids.map((id) => tokenizer.tokenText(id))).toContain('<0xC3>');
    expect(tokenizer.decode(ids)).toBe('café naïve');
    expect(tokenizer.decode(tokenizer.encode('é 日本 😀'), { skipSpecialTokens: true })).toBe('é 日本 😀');
  });

  it('reads special tokens written as AddedToken objects', () => {
    const addedToken = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, rstrip: false, normalized: false, single_word: false });
    const withObjects = TextTokenizer.fromFiles({
      ...files,
      tokenizerConfig: { ...files.tokenizerConfig, bos_token: addedToken('<s>'), eos_token: addedToken('</s>'), unk_token: addedToken('<unk>') },
    });
    expect(withObjects.bosTokenId).toBe(1);
    expect(withObjects.eosTokenIds).toEqual([2]);
    expect(withObjects.encode('Tom was very angry')).toEqual(tokenizer.encode('Tom was very angry'));
  });

  it('adds BOS from add_bos_token when the post-processor does not', () => {
    const withoutPostProcessor = { ...(files.tokenizerJson as Record<string, unknown>), post_processor: null };
    const addsBos = TextTokenizer.fromFiles({ ...files, tokenizerJson: withoutPostProcessor });
    expect(addsBos.encode('Tom')).toEqual([1, 274, 287]);
    expect(addsBos.encode('')).toEqual([1]);
    const noBos = TextTokenizer.fromFiles({
      tokenizerJson: withoutPostProcessor,
      tokenizerConfig: { ...files.tokenizerConfig, add_bos_token: false },
    });
    expect(noBos.encode('Tom')).toEqual([274, 287]);
  });

  it('has no chat template, and says so', () => {
    expect(tokenizer.hasChatTemplate).toBe(false);
    expect(() => tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/no chat template/);
  });

  it('takes chat templates from a named list or a separate .jinja file, with extra context', () => {
    const template = "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
    const fromList = TextTokenizer.fromFiles({
      ...files,
      tokenizerConfig: { ...files.tokenizerConfig, chat_template: [{ name: 'tool_use', template: 'wrong' }, { name: 'default', template }] },
    });
    expect(fromList.hasChatTemplate).toBe(true);
    expect(fromList.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true })).toBe('<s>user: Hi</s>assistant:');

    const fromJinja = TextTokenizer.fromFiles({
      ...files,
      chatTemplateJinja: "{{ messages[0].content }}{% if enable_thinking is false %} /no_think{% endif %}{{ raise_exception('stop here') if fail }}",
    });
    expect(fromJinja.applyChatTemplate([{ role: 'user', content: 'Hi' }], { extraContext: { enable_thinking: false } })).toBe('Hi /no_think');
    expect(() => fromJinja.applyChatTemplate([{ role: 'user', content: 'Hi' }], { extraContext: { fail: true } })).toThrow('Chat template in chat_template.jinja: stop here');
  });
});

describe('TextTokenizer on the 32000-token Llama tokenizer', () => {
  const tokenizer = TextTokenizer.fromFiles(tokenizerFiles('tiny-random-llama-builder-fp16'));

  it('knows its size and special tokens', () => {
    expect(tokenizer.vocabSize).toBe(32000);
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenIds).toEqual([2]);
    expect(tokenizer.decode(tokenizer.encode('Hello world, café!'), { skipSpecialTokens: true })).toBe('Hello world, café!');
  });

  it('renders its chat template, and the result encodes with a single BOS', () => {
    expect(tokenizer.hasChatTemplate).toBe(true);
    const prompt = tokenizer.applyChatTemplate(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi there' },
        { role: 'assistant', content: 'Hello.' },
        { role: 'user', content: 'How are you?' },
      ],
      { addGenerationPrompt: true },
    );
    expect(prompt).toBe('<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello. </s><s>[INST] How are you? [/INST]');
    const ids = tokenizer.encode(prompt, { addSpecialTokens: false });
    expect(ids[0]).toBe(1);
    expect(ids[1]).not.toBe(1);
    expect(ids.filter((id) => id === 2)).toHaveLength(1);
    // Legacy Llama normalisation prefixes "▁" to each text run after a special token, as transformers does.
    expect(tokenizer.tokenText(ids[1])).toBe('▁[');
    expect(tokenizer.decode(ids)).toBe(prompt.replaceAll('<s>[INST]', '<s> [INST]'));
  });

  it('surfaces raise_exception from the template', () => {
    expect(() =>
      tokenizer.applyChatTemplate([
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ]),
    ).toThrow(/Chat template in .*: Conversation roles must alternate/);
  });
});

describe('hostile chat templates (issue 14)', () => {
  const files = tokenizerFiles('stories260K-hf');
  const withTemplate = (chatTemplateJinja: string) => TextTokenizer.fromFiles({ ...files, chatTemplateJinja });
  const render = (chatTemplateJinja: string) => () => withTemplate(chatTemplateJinja).applyChatTemplate([{ role: 'user', content: 'Hi' }]);

  it('stops a nested loop of 4e10 steps within its budget, naming the file', () => {
    const started = performance.now();
    expect(render('{% for a in range(200000) %}{% for b in range(200000) %}{% endfor %}{% endfor %}')).toThrow(
      /Chat template in chat_template\.jinja: range\(200000\) asks for more than 100000 items/,
    );
    expect(render('{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}')).toThrow(
      /Chat template in chat_template\.jinja: it ran past its budget of (2000000 steps|2000 ms)/,
    );
    expect(performance.now() - started).toBeLessThan(20_000);
  });

  it('refuses range(1e8) before it takes memory, and strings that double without end', () => {
    const heapBefore = process.memoryUsage().heapUsed;
    expect(render('{% for a in range(100000000) %}{% endfor %}')).toThrow(/range\(100000000\) asks for more than/);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 << 20);
    expect(render("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}")).toThrow(
      /it built a string of \d+ characters, more than 4194304/,
    );
  });

  it('refuses a template larger than any real one before lexing it', () => {
    const huge = '{{ messages[0].content }}' + ' '.repeat(50 * 1024 * 1024);
    const started = performance.now();
    expect(render(huge)).toThrow(/chat_template\.jinja is 52428825 characters, more than the 262144/);
    expect(performance.now() - started).toBeLessThan(1000);
    // and names tokenizer_config.json when the template lives there
    const inConfig = TextTokenizer.fromFiles({ ...files, tokenizerConfig: { ...files.tokenizerConfig, chat_template: huge } });
    expect(() => inConfig.applyChatTemplate([{ role: 'user', content: 'Hi' }])).toThrow(/tokenizer_config\.json \(chat_template\)/);
  });

  it('still renders ordinary templates, loops and range included, and leaves the library as it was', () => {
    expect(withTemplate('{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}{{ messages[0].content }}')
      .applyChatTemplate([{ role: 'user', content: 'Hi' }])).toBe('012531Hi');
    expect(render('{% for a in range(200000) %}{% endfor %}')).toThrow(/range/);
    // After a refused render, the next render is unbudgeted by the old counter and gives the same answer.
    expect(withTemplate('{{ messages[0].content }}').applyChatTemplate([{ role: 'user', content: 'Hi' }])).toBe('Hi');
  });
});
