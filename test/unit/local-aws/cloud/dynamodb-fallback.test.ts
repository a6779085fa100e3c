// The LevelDB native addon cannot be made to fail inside jest's module registry, so the scenario runs in a child
// process whose preload makes `require('classic-level')` throw, as on a platform without a prebuild.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

jest.setTimeout(60_000);

it('runs DynamoDB in memory, with a warning, when the LevelDB native binding cannot load', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'corpus-dynamo-fallback-'));
  try {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        '--require',
        path.join(__dirname, 'fixtures', 'no-native-level.cjs'),
        '--import',
        'tsx',
        path.join(__dirname, 'fixtures', 'dynamodb-fallback-scenario.ts'),
        path.join(dir, 'db'),
      ],
      { cwd: path.resolve(__dirname, '../../../..'), timeout: 50_000 },
    );
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(result).toEqual({
      persistent: false,
      directory: null,
      n: '1',
      warnings: [
        expect.stringMatching(/LevelDB native binding unavailable \(simulated: .*\); tables are in memory/),
      ],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
