import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  envFor,
  FUNCTION_ENV,
  LAMBDA_PROVIDED_ENV,
  PLATFORM_ENV,
  PROCESS_ENV,
  type FunctionKey,
} from '../../../lambda/shared/contracts/env';
import { FUNCTION_ENTRIES } from '../../../lib/functions';
import { PROJECT_ROOT } from '../../../lib/paths';
import { environmentSettings, resourcesOfType, synthEnvironment, type Synthesized } from './synth-helpers';

/**
 * The function environments are one contract (lambda/shared/contracts/env.ts): the stack sets what each handler's
 * schema reads, and each handler reads its own schema. The compile-time half is `envFor` in lib/functions.ts; these
 * tests check the synthesized template and the handler sources against the same schemas.
 */

const FUNCTION_KEYS = Object.keys(FUNCTION_ENTRIES) as FunctionKey[];
const SCHEMA_KEYS = (key: FunctionKey): string[] =>
  Object.keys((FUNCTION_ENV[key] as unknown as { shape: Record<string, unknown> }).shape);
/** The variables a schema cannot do without: those an empty environment is refused for. */
const requiredKeys = (key: FunctionKey): string[] => {
  const parsed = FUNCTION_ENV[key].safeParse({});
  return parsed.success ? [] : [...new Set(parsed.error.issues.map((i) => String(i.path[0])))];
};
/** Variables a handler may read that the stack leaves to a default, on purpose. */
const LEFT_TO_DEFAULT: Partial<Record<FunctionKey, string[]>> = { reconcile: ['RECONCILE_CONCURRENCY'] };

/** The environment of each function of a synthesized stack, by function key (`Functions/<Id>/Function`). */
function environments(s: Synthesized): Record<FunctionKey, Record<string, unknown>> {
  const byId: Record<string, FunctionKey> = {
    Plan: 'plan',
    ConverseBatch: 'converse',
    Finalize: 'finalize',
    SubmitJob: 'submitJob',
    JobState: 'jobState',
    Reconcile: 'reconcile',
    Collect: 'collect',
    ConverseItems: 'converseItems',
    FailureLaneConsumer: 'failureLaneConsumer',
  };
  const found: Partial<Record<FunctionKey, Record<string, unknown>>> = {};
  for (const [logicalId, resource] of resourcesOfType(s.json, 'AWS::Lambda::Function')) {
    const id = Object.keys(byId).find((name) => logicalId.startsWith(`Functions${name}Function`));
    if (!id) continue;
    const props = resource.Properties as { Environment: { Variables: Record<string, unknown> } };
    found[byId[id]!] = props.Environment.Variables;
  }
  expect(Object.keys(found).sort()).toEqual([...FUNCTION_KEYS].sort());
  return found as Record<FunctionKey, Record<string, unknown>>;
}

describe('the function environments in the template', () => {
  // Every optional variable turned on: an unknown model (format, quota names), results queue, VPC, allowed buckets,
  // a system prompt, an auto threshold, a customer managed key.
  const modelId = 'acme.writer-v1:0';
  const local = environmentSettings('local');
  const full = synthEnvironment('full', {
    full: {
      ...local,
      modelId,
      model: {
        format: 'openai-chat',
        batchQuotaModelName: 'Acme Writer',
        batchQuotaNames: { maxRecordsPerJob: 'Records per job for Acme Writer' },
      },
      pricing: { [modelId]: { inputPerMillion: 1, outputPerMillion: 2 } },
      prompt: { template: 'Summarise: {{text}}', system: 'Be brief.' },
      ingest: { allowedBuckets: ['partner-corpora'] },
      kms: { customerManagedKey: true },
      batch: {
        ...(local.batch as Record<string, unknown>),
        autoThreshold: 500,
        vpc: { subnetIds: ['subnet-0a1'], securityGroupIds: ['sg-0c3'] },
      },
      resultsQueue: { enabled: true },
    },
  });
  const dev = synthEnvironment('dev');
  afterAll(() => {
    full.cleanup();
    dev.cleanup();
  });

  test.each(FUNCTION_KEYS)(
    '%s: with every option on, the keys are its schema keys plus the platform ones',
    (key) => {
      const set = Object.keys(environments(full)[key]).sort();
      const expected = new Set([...SCHEMA_KEYS(key), ...PLATFORM_ENV]);
      for (const name of [...LAMBDA_PROVIDED_ENV, ...(LEFT_TO_DEFAULT[key] ?? [])]) expected.delete(name);
      if (key === 'plan') for (const name of PROCESS_ENV) expected.add(name);
      expect(set).toEqual([...expected].sort());
    },
  );

  test.each(FUNCTION_KEYS)('%s: with the defaults, every variable its schema requires is set', (key) => {
    const set = Object.keys(environments(dev)[key]);
    const required = requiredKeys(key).filter(
      (name) => !(LAMBDA_PROVIDED_ENV as readonly string[]).includes(name),
    );
    expect(required.length).toBeGreaterThan(0);
    expect(required.filter((name) => !set.includes(name))).toEqual([]);
    const known = new Set<string>([...SCHEMA_KEYS(key), ...PLATFORM_ENV, ...PROCESS_ENV]);
    expect(set.filter((name) => !known.has(name))).toEqual([]);
  });

  test('the environment each function gets parses with its schema (tokens stand in for resource names)', () => {
    const resolved = (vars: Record<string, unknown>): Record<string, string> =>
      Object.fromEntries(
        Object.entries(vars).map(([name, value]) => [
          name,
          typeof value === 'string' ? value : `resolved-${name}`,
        ]),
      );
    for (const key of FUNCTION_KEYS) {
      const parsed = FUNCTION_ENV[key].safeParse({
        AWS_REGION: 'us-east-1',
        ...resolved(environments(full)[key]),
      });
      expect({ key, issues: parsed.success ? [] : parsed.error.issues }).toEqual({ key, issues: [] });
    }
  });
});

describe('envFor', () => {
  test('is checked against the schema at compile time', () => {
    const converseItems = envFor('converseItems', { OUTPUT_BUCKET: 'out' });
    expect(converseItems).toEqual({ OUTPUT_BUCKET: 'out' });
    // @ts-expect-error: a misspelt variable does not compile
    envFor('converseItems', { OUTPUT_BUCKT: 'out' });
    // @ts-expect-error: a missing required variable does not compile
    envFor('jobState', { JOBS_TTL_DAYS: '30' });
    // @ts-expect-error: a variable the schema does not read does not compile, even from a spread
    envFor('jobState', { JOBS_TABLE: 't', ...{ LEDGER_TABLE: 'l' } });
    // Defaulted and optional variables may be left out.
    expect(envFor('reconcile', { JOBS_TABLE: 't' })).toEqual({ JOBS_TABLE: 't' });
  });
});

describe('the handlers read their own schema', () => {
  const lambdaDir = path.join(PROJECT_ROOT, 'lambda');
  const sources = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) sources.set(full, fs.readFileSync(full, 'utf8'));
    }
  };
  walk(lambdaDir);

  /** The function key whose schema a readEnv argument names, directly or through `const X = FUNCTION_ENV.key`. */
  function schemaOf(argument: string, source: string): string | undefined {
    const direct = /^FUNCTION_ENV\.(\w+)$/.exec(argument);
    if (direct) return direct[1];
    const alias = new RegExp(`const ${argument} = FUNCTION_ENV\\.(\\w+)`).exec(source);
    return alias?.[1];
  }

  /** Which file reads which function's schema. */
  const readers = new Map<string, string[]>();
  for (const [file, source] of sources) {
    for (const match of source.matchAll(/readEnv\(\s*([\w.]+)\s*[,)]/g)) {
      const key = schemaOf(match[1]!, source);
      if (key === undefined)
        throw new Error(`${file} calls readEnv(${match[1]}): not a schema of FUNCTION_ENV`);
      readers.set(key, [...(readers.get(key) ?? []), file]);
    }
  }

  /** The file and the files it imports relatively (one hop): where a handler's environment may be read. */
  function handlerFiles(entry: string): string[] {
    const file = path.join(PROJECT_ROOT, entry);
    const source = sources.get(file) ?? '';
    const imported = [...source.matchAll(/from '(\.[^']+)'/g)].map((m) =>
      path.resolve(path.dirname(file), m[1]!),
    );
    return [file, ...imported.flatMap((base) => [`${base}.ts`, path.join(base, 'index.ts')])];
  }

  test.each(FUNCTION_KEYS)('%s reads FUNCTION_ENV.%s, and only its handler does', (key) => {
    const files = readers.get(key) ?? [];
    expect(files).toHaveLength(1);
    expect(handlerFiles(FUNCTION_ENTRIES[key])).toContain(files[0]);
  });

  test('no handler reads a variable outside the contract', () => {
    const known = new Set<string>([
      ...FUNCTION_KEYS.flatMap(SCHEMA_KEYS),
      ...PLATFORM_ENV,
      ...PROCESS_ENV,
      ...LAMBDA_PROVIDED_ENV,
    ]);
    const unknown: string[] = [];
    for (const [file, source] of sources) {
      for (const match of source.matchAll(/process\.env\.(\w+)|process\.env\[['"](\w+)['"]\]/g)) {
        const name = match[1] ?? match[2]!;
        if (!known.has(name)) unknown.push(`${path.relative(PROJECT_ROOT, file)}: ${name}`);
      }
    }
    expect(unknown).toEqual([]);
  });
});
