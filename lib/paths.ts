import * as path from 'node:path';

/** The repository root: entry paths and the workflow definition are resolved against it. */
export const PROJECT_ROOT = path.resolve(__dirname, '..');

/** The workflow definition file, relative to {@link PROJECT_ROOT}. */
export const DEFINITION_FILE = 'statemachine/pipeline.asl.json';
