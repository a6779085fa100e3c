#!/usr/bin/env node
// The `corpus` CLI. The sources are TypeScript; tsx compiles them on load so `npx corpus` always runs the
// code in the working tree, with no build step to forget.
require('tsx/cjs');
require('./corpus.ts');
