#!/usr/bin/env node
// The `corpus` CLI. The sources are TypeScript; tsx compiles them on load so `npx corpus` always runs the
// code in the working tree, with no build step to forget.
// The SDK warns that its releases from 2027 need Node 22. The deployed functions run Node 22; this process is the
// offline runtime on the developer's machine, where the warning only clutters the run's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
require('tsx/cjs');
require('./corpus.ts');
