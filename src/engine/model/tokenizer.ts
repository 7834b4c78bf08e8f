/**
 * Text ⇄ token ids and chat templates, from a model's tokenizer files. A thin layer over
 * `@huggingface/tokenizers` (the tokenizer Transformers.js v4 uses) and `@huggingface/jinja` (its chat
 * template renderer) that smooths over how tokenizer_config.json files are written in the wild.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

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
  /** Parsed on first use, so a template the jinja port cannot parse does not stop plain encoding. */
  private chatTemplate?: Template;

  private constructor(files: TokenizerFiles) {
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
    try {
      this.chatTemplate ??= new Template(this.chatTemplateSource);
      return this.chatTemplate.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        ...this.templateTokens,
        ...extraContext,
      });
    } catch (error) {
      throw new Error(`Chat template: ${(error as Error).message}`, { cause: error });
    }
  }

  /** The raw vocabulary piece (e.g. "▁Tom", "<0xC3>"), or '' for an id the tokenizer does not know. */
  tokenText(id: number): string {
    return this.tokenizer.id_to_token(id) ?? '';
  }
}
