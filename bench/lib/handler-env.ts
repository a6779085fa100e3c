/**
 * Imported first by run-all.ts: the handler modules read their environment when they load, so it must be in place
 * before any benchmark module imports one.
 */
import { HANDLER_ENV } from './services';

for (const [key, value] of Object.entries(HANDLER_ENV)) process.env[key] ??= value;
