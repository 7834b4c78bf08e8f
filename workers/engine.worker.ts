/** The engine in its own thread: the page talks to it through comlink and never blocks. */
import * as Comlink from 'comlink';
import { createEngine } from '../src/engine/api.ts';

Comlink.expose(createEngine());
