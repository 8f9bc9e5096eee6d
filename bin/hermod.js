#!/usr/bin/env node
// Entry point of the `hermod` command. Hermod is written in TypeScript and runs through tsx's
// loader, so `npm ci` is the only install step (no build to remember).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
