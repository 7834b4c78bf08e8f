import { mount } from 'svelte';
import App from './App.svelte';
import { registerServiceWorker } from './lib/offline.ts';

mount(App, { target: document.getElementById('app')! });
void registerServiceWorker();
