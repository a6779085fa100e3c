import { beforeAll, describe, expect, it } from '@jest/globals';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { corpusKey } from '../../../../lambda/plan/corpus-sources';
import { runInputSchema } from '../../../../lambda/shared/contracts';
import { IngestTrigger } from '../../../../lib/events';
import { LocalEventBus } from '@corpus-pipeline/local-aws/eventbridge';
import { AWS_FIXTURES, fixtureJson, type JsonObject } from '../../aws-shapes/fixtures';

// The S3 ingest rules on the "Object Created" event as the S3 documentation shows it: the two rules' patterns (the
// default bus's forward rule, the ingest bus's start rule) and the input transformer exactly as the IngestTrigger
// construct synthesizes them for CloudFormation, run by the local EventBridge, must turn the documented event into the
// execution input the workflow's Plan accepts, for a file directly under the prefix and a drop's _SUCCESS only.

const BUCKET = 'DOC-EXAMPLE-BUCKET1';
const PREFIX = 'corpora/';
const MACHINE = 'arn:aws:states:ca-central-1:111122223333:stateMachine:corpus';

interface SynthesizedRule {
  bus?: string;
  pattern: JsonObject;
  target: JsonObject;
}

/** The trigger's rules (forward first) and the ingest bus's name, as synthesized. */
function synthesizedRules(): { forward: SynthesizedRule; start: SynthesizedRule; busName: string } {
  const stack = new Stack(new App(), 'Ingest', { env: { account: '111122223333', region: 'ca-central-1' } });
  new IngestTrigger(stack, 'Trigger', {
    bucket: s3.Bucket.fromBucketName(stack, 'Bucket', BUCKET),
    keyPrefix: PREFIX,
    ruleName: 'CorpusPipeline-test-ingest',
    stateMachine: sfn.StateMachine.fromStateMachineArn(stack, 'Machine', MACHINE),
  });
  const template = Template.fromStack(stack);
  const rules = Object.values(template.findResources('AWS::Events::Rule')) as {
    Properties: { EventPattern: JsonObject; Targets: JsonObject[]; EventBusName?: unknown };
  }[];
  const [bus] = Object.values(template.findResources('AWS::Events::EventBus')) as {
    Properties: { Name: string };
  }[];
  if (!bus) throw new Error('IngestTrigger synthesized no bus');
  const forward = rules.find((r) => r.Properties.EventBusName === undefined);
  const start = rules.find((r) => r.Properties.EventBusName !== undefined);
  if (!forward || !start || rules.length !== 2) throw new Error('IngestTrigger should synthesize two rules');
  const of = (r: (typeof rules)[number]): SynthesizedRule => ({
    pattern: r.Properties.EventPattern,
    target: r.Properties.Targets[0] as JsonObject,
  });
  return { forward: of(forward), start: of(start), busName: bus.Properties.Name };
}

let synthesized: ReturnType<typeof synthesizedRules> | undefined;

/** Runs an event through a local EventBridge holding the synthesized rules; returns what the workflow received. */
async function deliverToWorkflow(event: JsonObject): Promise<string[]> {
  // Synthesized once for the suite (a synth takes seconds on a loaded machine).
  synthesized ??= synthesizedRules();
  const { forward, start, busName } = synthesized;
  const busArn = `arn:aws:events:ca-central-1:111122223333:event-bus/${busName}`;
  const delivered: string[] = [];
  const bus: LocalEventBus = new LocalEventBus({
    account: '111122223333',
    region: 'ca-central-1',
    deliver: async (target, inputJson) => {
      // The forward rule's target is the ingest bus: the event goes on to it as it is.
      if (target.arn === busArn)
        bus.emit(JSON.parse(inputJson) as Parameters<LocalEventBus['emit']>[0], busName);
      else delivered.push(inputJson);
    },
  });
  bus.createEventBus(busName);
  bus.addRule({ name: 'forward', eventPattern: forward.pattern, targets: [{ id: 'bus', arn: busArn }] });
  const transformer = start.target.InputTransformer as {
    InputPathsMap: Record<string, string>;
    InputTemplate: string;
  };
  bus.addRule({
    name: 'start',
    eventBusName: busName,
    eventPattern: start.pattern,
    targets: [{ id: 'workflow', arn: MACHINE, inputTransformer: transformer }],
  });
  bus.emit(event as unknown as Parameters<LocalEventBus['emit']>[0]);
  await bus.drain();
  await bus.drain();
  return delivered;
}

/** The documented event, with its object moved under the ingest prefix. */
function documentedUpload(key = `${PREFIX}example-key.jsonl`): JsonObject {
  const event = fixtureJson(AWS_FIXTURES.s3ObjectCreated);
  ((event.detail as JsonObject).object as JsonObject).key = key;
  return event;
}

describe('the S3 ingest rules on the documented Object Created event', () => {
  beforeAll(() => {
    synthesized = synthesizedRules();
  }, 60_000);

  it('turns the documented event into the run input the workflow accepts', async () => {
    const delivered = await deliverToWorkflow(documentedUpload());
    expect(delivered).toHaveLength(1);
    const input = runInputSchema.parse(JSON.parse(delivered[0] as string));
    expect(input).toEqual({
      bucket: BUCKET,
      key: `${PREFIX}example-key.jsonl`,
      etag: 'b1946ac92492d2347c6235b4d2611184',
      size: 5,
      trigger: 's3',
    });
  });

  it('ignores objects outside the ingest prefix (the documented key as is)', async () => {
    expect(await deliverToWorkflow(fixtureJson(AWS_FIXTURES.s3ObjectCreated))).toEqual([]);
  });

  it("passes the event's key through unchanged (spaces, non-ASCII)", async () => {
    const delivered = await deliverToWorkflow(documentedUpload(`${PREFIX}reviews 2024 é.jsonl`));
    expect(runInputSchema.parse(JSON.parse(delivered[0] as string)).key).toBe(
      `${PREFIX}reviews 2024 é.jsonl`,
    );
  });

  it('starts a run for a .jsonl, .jsonl.gz or .gz file directly under the prefix, not for other names', async () => {
    for (const name of ['a.jsonl', 'a.jsonl.gz', 'part-0.gz']) {
      expect(await deliverToWorkflow(documentedUpload(`${PREFIX}${name}`))).toHaveLength(1);
    }
    for (const name of ['README.md', 'a.json', 'a.jsonl.tmp', '_SUCCESS']) {
      expect({ name, runs: await deliverToWorkflow(documentedUpload(`${PREFIX}${name}`)) }).toEqual({
        name,
        runs: [],
      });
    }
  });

  it('starts nothing for a file inside a drop folder, whatever its name', async () => {
    for (const key of [`${PREFIX}drop-1/a.jsonl`, `${PREFIX}drop-1/b.jsonl.gz`, `${PREFIX}drop-1/sub/c.gz`]) {
      expect({ key, runs: await deliverToWorkflow(documentedUpload(key)) }).toEqual({ key, runs: [] });
    }
  });

  it('starts the run of a drop folder when its _SUCCESS lands: Plan reads the key as the folder', async () => {
    const delivered = await deliverToWorkflow(documentedUpload(`${PREFIX}drop-1/_SUCCESS`));
    expect(delivered).toHaveLength(1);
    const input = runInputSchema.parse(JSON.parse(delivered[0] as string));
    expect(input.key).toBe(`${PREFIX}drop-1/_SUCCESS`);
    expect(corpusKey(input.key)).toEqual({ key: `${PREFIX}drop-1/`, prefix: true });
  });

  it('starts nothing for files outside the prefix, even with a corpus name', async () => {
    for (const key of ['other/a.jsonl', 'a.jsonl', 'other/drop/_SUCCESS']) {
      expect({ key, runs: await deliverToWorkflow(documentedUpload(key)) }).toEqual({ key, runs: [] });
    }
  });

  it('reads only fields the documented event has', () => {
    const documented = fixtureJson(AWS_FIXTURES.s3ObjectCreated);
    const { start } = synthesizedRules();
    const transformer = start.target.InputTransformer as JsonObject;
    const paths = Object.values(transformer.InputPathsMap as Record<string, string>);
    expect(paths.length).toBeGreaterThan(0);
    // The local S3 event has no version-id (test/unit/aws-shapes/simulator-shapes.test.ts allows that): keep it unread.
    expect(paths.filter((path) => path.includes('version-id'))).toEqual([]);
    for (const path of paths) {
      let at: unknown = documented;
      for (const step of path.replace(/^\$\./, '').split('.')) at = (at as JsonObject | undefined)?.[step];
      expect({ path, found: at !== undefined }).toEqual({ path, found: true });
    }
  });
});
