/** Greedy decoding from BOS alone on stories260K (../shared/models/README.md), as far as the README quotes it. */
export const STORIES_REFERENCE =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n' +
  'Lily\'s mom said, "Lily, let\'s go to the park." Lily was sad and didn\'t know what to do.';
