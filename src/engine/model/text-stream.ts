/**
 * Turns generated token ids into text as it becomes final. Decoding one token alone is wrong (SentencePiece
 * decoders strip the leading space of the first piece; a multi-byte character may span several byte-fallback
 * tokens), and re-decoding everything is O(n) per token. So, as text-generation-inference does, decode a short
 * window that starts at the tokens emitted last and emit only what it adds beyond their text.
 */
export class TokenTextStream {
  /** Tokens from the start of the decode window: the first `emittedCount` are already emitted, the rest pending. */
  private window: number[] = [];
  private emittedCount = 0;
  private emitted = '';

  constructor(private readonly decode: (ids: number[]) => string) {}

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }

  /** Adds one token; returns the newly final text, '' while it ends in an incomplete multi-byte character. */
  push(id: number): string {
    this.window.push(id);
    return this.advance(false);
  }

  /** Emits whatever remains, incomplete characters included (as U+FFFD, like a full decode). */
  flush(): string {
    return this.advance(true);
  }

  private advance(force: boolean): string {
    const emittedText = this.decodeOrEmpty(this.window.slice(0, this.emittedCount));
    const windowText = this.decodeOrEmpty(this.window);
    // A trailing U+FFFD is a character whose remaining byte tokens have not arrived yet.
    if (windowText.length <= emittedText.length || (!force && windowText.endsWith('\uFFFD'))) return '';

    const fresh = windowText.slice(emittedText.length);
    this.emitted += fresh;
    // The next window starts at the tokens just emitted: enough context for the decoder, and bounded.
    this.window = this.window.slice(this.emittedCount);
    this.emittedCount = this.window.length;
    return fresh;
  }

  private decodeOrEmpty(ids: number[]): string {
    return ids.length === 0 ? '' : this.decode(ids);
  }
}
