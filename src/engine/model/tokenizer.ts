/**
 * Text ⇄ token ids and chat templates, from a model's tokenizer files. A thin layer over
 * `@huggingface/tokenizers` (the tokenizer Transformers.js v4 uses) and `@huggingface/jinja` (its chat
 * template renderer) that smooths over how tokenizer_config.json files are written in the wild.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { Environment, Interpreter, Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

/** The parsed contents of a model folder's tokenizer.json, tokenizer_config.json and, if present, chat_template.jinja. */
export interface TokenizerFiles {
  tokenizerJson: unknown;
  tokenizerConfig: Record<string, unknown>;
  chatTemplateJinja?: string;
}

/** The special tokens chat templates refer to by name. */
const TEMPLATE_TOKEN_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;

/** tokenizer_config.json writes a special token either as its text or as a serialised AddedToken object. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  const content = (value as { content?: unknown } | null)?.content;
  return typeof content === 'string' ? content : undefined;
}

/** A separate chat_template.jinja wins over tokenizer_config.json, as in transformers; a list of named templates gives "default". */
function chatTemplateSource(config: Record<string, unknown>, jinja: string | undefined): string | undefined {
  if (jinja !== undefined) return jinja;
  const template = config.chat_template;
  if (typeof template === 'string') return template;
  if (Array.isArray(template)) {
    const named = template.find((entry) => (entry as { name?: unknown })?.name === 'default') as { template?: unknown } | undefined;
    return typeof named?.template === 'string' ? named.template : undefined;
  }
  return undefined;
}

/**
 * A chat template is code from the model's files, rendered in the engine's one thread: a hostile or broken
 * one must fail quickly with a clear error instead of wedging the worker or filling memory. Real templates
 * are a few KiB, take a few thousand steps and render a prompt far shorter than any context.
 */
export const TEMPLATE_BUDGET = {
  /** characters of template source (the jinja lexer is slow on huge inputs) */
  sourceChars: 256 * 1024,
  /** characters of any string the template builds, the rendered prompt included */
  outputChars: 4 * 1024 * 1024,
  /** jinja expressions and statements evaluated */
  steps: 2_000_000,
  /** wall-clock time, for steps that are slow one by one */
  milliseconds: 2000,
  /** items a single range() may produce (range(1e8) alone would take gigabytes) */
  rangeItems: 100_000,
};

/**
 * Renders with the library's own globals and interpreter, within TEMPLATE_BUDGET. The library builds its
 * environment and interpreter inside Template.render, so the budget is put on Interpreter.prototype for
 * the length of this (synchronous) call only.
 */
function renderWithinBudget(template: Template, context: Record<string, unknown>): string {
  const budget = TEMPLATE_BUDGET;
  const prototype = Interpreter.prototype;
  const { evaluate, run } = prototype;
  const boundedRange = new Environment();
  boundedRange.set('range', (...args: number[]) => {
    const [from, to, step = 1] = args.length === 1 ? [0, args[0]] : args;
    if (![from, to, step].every(Number.isFinite) || step === 0) throw new Error(`range(${args.join(', ')}) is not a range of numbers`);
    if ((to - from) / step > budget.rangeItems) throw new Error(`range(${args.join(', ')}) asks for more than ${budget.rangeItems} items`);
    const items = [];
    for (let value = from; step > 0 ? value < to : value > to; value += step) items.push(value);
    return items;
  });
  let steps = 0;
  const deadline = performance.now() + budget.milliseconds;
  prototype.run = function (this: Interpreter, program) {
    this.global.variables.set('range', boundedRange.variables.get('range')!);
    return run.call(this, program);
  };
  prototype.evaluate = function (this: Interpreter, statement, environment) {
    steps += 1;
    if (steps > budget.steps) throw new Error(`it ran past its budget of ${budget.steps} steps (a loop too long for a chat prompt?)`);
    // Every step: a loop with an empty body costs no steps per item, only the range() that feeds it.
    if (performance.now() > deadline) throw new Error(`it ran past its budget of ${budget.milliseconds} ms`);
    const value = evaluate.call(this, statement, environment);
    if (typeof value.value === 'string' && value.value.length > budget.outputChars) {
      throw new Error(`it built a string of ${value.value.length} characters, more than ${budget.outputChars}`);
    }
    return value;
  };
  try {
    return template.render(context);
  } finally {
    prototype.evaluate = evaluate;
    prototype.run = run;
  }
}

export class TextTokenizer {
  readonly hasChatTemplate: boolean;
  readonly bosTokenId?: number;
  readonly eosTokenIds: number[];
  /** Number of token ids the tokenizer knows (largest id + 1). A model's logits may be wider (padded). */
  readonly vocabSize: number;

  private readonly tokenizer: Tokenizer;
  /** bos_token, eos_token, … as text, for the chat template's render context. */
  private readonly templateTokens: Record<string, string>;
  private readonly addBosToken: boolean;
  private readonly chatTemplateSource?: string;
  /** Where the template came from, for error messages. */
  private readonly chatTemplateFile: string;
  /** Parsed on first use, so a template the jinja port cannot parse does not stop plain encoding. */
  private chatTemplate?: Template;

  private constructor(files: TokenizerFiles) {
    const model = (files.tokenizerJson as { model?: unknown } | null)?.model;
    if (typeof model !== 'object' || model === null) {
      throw new Error('tokenizer.json has no "model" section: it is not a Hugging Face tokenizers file, or it was cut short. Download it again from the model repository');
    }
    const config = files.tokenizerConfig;
    this.templateTokens = {};
    for (const key of TEMPLATE_TOKEN_KEYS) {
      const content = tokenContent(config[key]);
      if (content !== undefined) this.templateTokens[key] = content;
    }
    const additionalSpecialTokens = Array.isArray(config.additional_special_tokens)
      ? config.additional_special_tokens.map(tokenContent).filter((token) => token !== undefined)
      : [];
    this.tokenizer = new Tokenizer(files.tokenizerJson as object, {
      ...config,
      ...this.templateTokens,
      additional_special_tokens: additionalSpecialTokens,
      // The library cleans up spaces (" ." → ".") unless told not to; transformers no longer does by default,
      // and the clean-up loses text and breaks incremental decoding, so it only runs where the config asks.
      clean_up_tokenization_spaces: config.clean_up_tokenization_spaces === true,
    });

    const idOf = (token: string | undefined) => (token === undefined ? undefined : this.tokenizer.token_to_id(token));
    this.bosTokenId = idOf(this.templateTokens.bos_token);
    const eosTokenId = idOf(this.templateTokens.eos_token);
    this.eosTokenIds = eosTokenId === undefined ? [] : [eosTokenId];
    this.addBosToken = config.add_bos_token === true;
    this.vocabSize = this.tokenizer.model?.vocab.length ?? 0;
    this.chatTemplateSource = chatTemplateSource(config, files.chatTemplateJinja);
    this.chatTemplateFile = files.chatTemplateJinja !== undefined ? 'chat_template.jinja' : 'tokenizer_config.json (chat_template)';
    this.hasChatTemplate = this.chatTemplateSource !== undefined;
  }

  static fromFiles(files: TokenizerFiles): TextTokenizer {
    return new TextTokenizer(files);
  }

  /**
   * Token ids for `text`. With special tokens, BOS comes from tokenizer.json's post-processor; where that adds
   * none but tokenizer_config.json says add_bos_token (as older Llama-family exports do), it is prepended here.
   * Text from applyChatTemplate usually carries its own BOS: encode it with addSpecialTokens false.
   */
  encode(text: string, { addSpecialTokens = true }: { addSpecialTokens?: boolean } = {}): number[] {
    const ids = this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    if (addSpecialTokens && this.addBosToken && this.bosTokenId !== undefined && ids[0] !== this.bosTokenId) {
      ids.unshift(this.bosTokenId);
    }
    return ids;
  }

  decode(ids: number[], { skipSpecialTokens = false }: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''; // the library throws on an empty list
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }

  /** The prompt text for `messages`, rendered with the tokenizer's chat template. */
  applyChatTemplate(
    messages: ChatMessage[],
    { addGenerationPrompt = false, extraContext = {} }: { addGenerationPrompt?: boolean; extraContext?: Record<string, unknown> } = {},
  ): string {
    if (this.chatTemplateSource === undefined) {
      throw new Error('This tokenizer has no chat template (none in tokenizer_config.json, no chat_template.jinja, or no "default" among named templates)');
    }
    // raise_exception, which templates call on malformed conversations, is a jinja built-in (supplying our own
    // is refused as a redeclaration); it throws the template's message, to which we add where it comes from.
    const where = `Chat template in ${this.chatTemplateFile}`;
    if (this.chatTemplateSource.length > TEMPLATE_BUDGET.sourceChars) {
      throw new Error(`${where} is ${this.chatTemplateSource.length} characters, more than the ${TEMPLATE_BUDGET.sourceChars} a chat template needs: ` +
        'replace it with the model\'s original template');
    }
    try {
      this.chatTemplate ??= new Template(this.chatTemplateSource);
      return renderWithinBudget(this.chatTemplate, {
        messages,
        add_generation_prompt: addGenerationPrompt,
        ...this.templateTokens,
        ...extraContext,
      });
    } catch (error) {
      throw new Error(`${where}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** The raw vocabulary piece (e.g. "▁Tom", "<0xC3>"), or '' for an id the tokenizer does not know. */
  tokenText(id: number): string {
    return this.tokenizer.id_to_token(id) ?? '';
  }
}
