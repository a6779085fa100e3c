import { beforeAll, describe, expect, it } from '@jest/globals';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { runInputSchema } from '../../../../lambda/shared/contracts';
import { IngestTrigger } from '../../../../lib/events';
import { LocalEventBus } from '@corpus-pipeline/local-aws/eventbridge';
import { AWS_FIXTURES, fixtureJson, type JsonObject } from '../../aws-shapes/fixtures';

// The S3 ingest rule on the "Object Created" event as the S3 documentation shows it: the rule's pattern and input
// transformer exactly as the IngestTrigger construct synthesizes them for CloudFormation, run by the local
// EventBridge, must turn the documented event into the execution input the workflow's Plan accepts.

const BUCKET = 'DOC-EXAMPLE-BUCKET1';
const PREFIX = 'corpora/';

/** The ingest rule's EventPattern and its one target's InputTransformer, as synthesized. */
function synthesizedRule(): { pattern: JsonObject; transformer: JsonObject } {
  const stack = new Stack(new App(), 'Ingest', { env: { account: '111122223333', region: 'ca-central-1' } });
  new IngestTrigger(stack, 'Trigger', {
    bucket: s3.Bucket.fromBucketName(stack, 'Bucket', BUCKET),
    keyPrefix: PREFIX,
    ruleName: 'CorpusPipeline-test-ingest',
    stateMachine: sfn.StateMachine.fromStateMachineArn(
      stack,
      'Machine',
      'arn:aws:states:ca-central-1:111122223333:stateMachine:corpus',
    ),
  });
  const rules = Template.fromStack(stack).findResources('AWS::Events::Rule');
  const [rule] = Object.values(rules) as {
    Properties: { EventPattern: JsonObject; Targets: JsonObject[] };
  }[];
  if (!rule) throw new Error('IngestTrigger synthesized no rule');
  const transformer = rule.Properties.Targets[0]?.InputTransformer as JsonObject | undefined;
  if (!transformer) throw new Error('the ingest rule target has no InputTransformer');
  return { pattern: rule.Properties.EventPattern, transformer };
}

let synthesized: { pattern: JsonObject; transformer: JsonObject } | undefined;

/** Runs an event through a local bus holding the synthesized rule; returns what the target received. */
async function deliverToWorkflow(event: JsonObject): Promise<string[]> {
  // Synthesized once for the suite (a synth takes seconds on a loaded machine).
  synthesized ??= synthesizedRule();
  const { pattern, transformer } = synthesized;
  const delivered: string[] = [];
  const bus = new LocalEventBus({
    account: '111122223333',
    region: 'ca-central-1',
    deliver: async (_target, inputJson) => {
      delivered.push(inputJson);
    },
  });
  bus.addRule({
    name: 'ingest',
    eventPattern: pattern,
    targets: [
      {
        id: 'workflow',
        arn: 'arn:aws:states:ca-central-1:111122223333:stateMachine:corpus',
        inputTransformer: transformer as { InputPathsMap: Record<string, string>; InputTemplate: string },
      },
    ],
  });
  bus.emit(event as unknown as Parameters<LocalEventBus['emit']>[0]);
  await bus.drain();
  return delivered;
}

/** The documented event, with its object moved under the ingest prefix. */
function documentedUpload(key = `${PREFIX}example-key`): JsonObject {
  const event = fixtureJson(AWS_FIXTURES.s3ObjectCreated);
  ((event.detail as JsonObject).object as JsonObject).key = key;
  return event;
}

describe('the S3 ingest rule on the documented Object Created event', () => {
  beforeAll(() => {
    synthesized = synthesizedRule();
  }, 60_000);

  it('turns the documented event into the run input the workflow accepts', async () => {
    const delivered = await deliverToWorkflow(documentedUpload());
    expect(delivered).toHaveLength(1);
    const input = runInputSchema.parse(JSON.parse(delivered[0] as string));
    expect(input).toEqual({
      bucket: BUCKET,
      key: `${PREFIX}example-key`,
      etag: 'b1946ac92492d2347c6235b4d2611184',
      size: 5,
      trigger: 's3',
    });
  });

  it('ignores objects outside the ingest prefix (the documented key as is)', async () => {
    expect(await deliverToWorkflow(fixtureJson(AWS_FIXTURES.s3ObjectCreated))).toEqual([]);
  });

  it("passes the event's key through unchanged (spaces, non-ASCII)", async () => {
    const delivered = await deliverToWorkflow(documentedUpload(`${PREFIX}reviews 2024/é.jsonl`));
    expect(runInputSchema.parse(JSON.parse(delivered[0] as string)).key).toBe(
      `${PREFIX}reviews 2024/é.jsonl`,
    );
  });

  it('reads only fields the documented event has', () => {
    const documented = fixtureJson(AWS_FIXTURES.s3ObjectCreated);
    const { transformer } = synthesizedRule();
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
