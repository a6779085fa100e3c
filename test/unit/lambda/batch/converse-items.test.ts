import { beforeEach, describe, expect, it } from '@jest/globals';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { handler } from '../../../../lambda/converse-items';
import { gatherConverseItems, type ConverseItemsDeps } from '../../../../lambda/batch/converse-items';
import { runKeys, type WorkItem } from '../../../../lambda/shared/contracts';
import { FakeS3 } from '../helpers';
import { BUCKET } from './batch-output';
import { useClientMocks } from '../../../support/aws-mocks';

const [s3Mock] = useClientMocks(S3Client);
const RUN = 'run-ci';

let s3: FakeS3;

function deps(): ConverseItemsDeps {
  return { s3: new S3Client({}), outputBucket: BUCKET };
}

function item(recordId: string, line: number, format: WorkItem['format'] = 'converse'): WorkItem {
  return {
    recordId,
    format,
    modelInput:
      format === 'converse'
        ? { messages: [{ role: 'user', content: [{ text: recordId }] }] }
        : { anthropic_version: 'bedrock-2023-05-31', max_tokens: 8, messages: [] },
    line,
  };
}

function gathered(): WorkItem[] {
  return s3.lines<WorkItem>(BUCKET, runKeys.converseItems(RUN));
}

beforeEach(() => {
  // Page size 1: the redrive files are listed across continuation tokens.
  s3 = new FakeS3(s3Mock, { listPageSize: 1 }).install();
});

describe('gatherConverseItems', () => {
  it('writes the tail, then each redrive file in key order, dropping record ids seen before', async () => {
    s3.putLines(BUCKET, runKeys.converseTail(RUN), [item('t-1', 3), item('t-2', 9, 'native')]);
    // Listed out of order on purpose; shard-10 sorts before shard-2 as S3 lists keys.
    s3.putLines(BUCKET, `${runKeys.redrivePrefix(RUN)}shard-2.jsonl`, [item('b-1', 1), item('t-2', 2)]);
    s3.putLines(BUCKET, `${runKeys.redrivePrefix(RUN)}shard-10.jsonl`, [item('a-1', 4), item('a-2', 5)]);
    // Another run's redrive files are not this run's.
    s3.putLines(BUCKET, 'runs/run-other/redrive/shard-0.jsonl', [item('x-1', 1)]);

    const out = await gatherConverseItems({ runId: RUN }, deps());
    expect(out).toEqual({ itemsKey: runKeys.converseItems(RUN), records: 5 });
    expect(out.itemsKey).toBe(`runs/${RUN}/converse-items.jsonl`);
    expect(gathered()).toEqual([
      item('t-1', 3),
      item('t-2', 9, 'native'),
      item('a-1', 4),
      item('a-2', 5),
      item('b-1', 1),
    ]);
    expect(s3Mock.commandCalls(ListObjectsV2Command).length).toBeGreaterThan(1);
  });

  it('a retry rewrites the same bytes', async () => {
    s3.putLines(BUCKET, runKeys.converseTail(RUN), [item('t-1', 3)]);
    s3.putLines(BUCKET, `${runKeys.redrivePrefix(RUN)}shard-0.jsonl`, [item('r-1', 1)]);
    await gatherConverseItems({ runId: RUN }, deps());
    const first = s3.text(BUCKET, runKeys.converseItems(RUN));
    await gatherConverseItems({ runId: RUN }, deps());
    expect(s3.text(BUCKET, runKeys.converseItems(RUN))).toBe(first);
  });

  it('without a tail: only the redrive files', async () => {
    s3.putLines(BUCKET, `${runKeys.redrivePrefix(RUN)}shard-0.jsonl`, [item('r-1', 1), item('r-2', 2)]);
    const out = await gatherConverseItems({ runId: RUN }, deps());
    expect(out.records).toBe(2);
    expect(gathered().map((w) => w.recordId)).toEqual(['r-1', 'r-2']);
  });

  it('without redrive files: only the tail', async () => {
    s3.putLines(BUCKET, runKeys.converseTail(RUN), [item('t-1', 3)]);
    const out = await gatherConverseItems({ runId: RUN }, deps());
    expect(out.records).toBe(1);
    expect(gathered()).toEqual([item('t-1', 3)]);
  });

  it('with neither: writes an empty items file and reports no records', async () => {
    const out = await gatherConverseItems({ runId: RUN }, deps());
    expect(out).toEqual({ itemsKey: runKeys.converseItems(RUN), records: 0 });
    expect(s3.text(BUCKET, runKeys.converseItems(RUN))).toBe('');
  });

  it('rejects a line that is not a WorkItem, naming the file and line', async () => {
    s3.put(
      BUCKET,
      `${runKeys.redrivePrefix(RUN)}shard-3.jsonl`,
      `${JSON.stringify(item('r-1', 1))}\n\n{"recordId":"r-2"}\n`,
    );
    await expect(gatherConverseItems({ runId: RUN }, deps())).rejects.toMatchObject({
      name: 'InvalidConverseItemError',
      message: expect.stringContaining(`runs/${RUN}/redrive/shard-3.jsonl line 3 is not a WorkItem`),
    });
  });
});

describe('ConverseItems handler', () => {
  it('gathers into the output bucket of its environment', async () => {
    expect(process.env.OUTPUT_BUCKET).toBe(BUCKET);
    s3.putLines(BUCKET, runKeys.converseTail(RUN), [item('t-1', 3)]);
    await expect(handler({ runId: RUN })).resolves.toEqual({
      itemsKey: runKeys.converseItems(RUN),
      records: 1,
    });
    expect(gathered()).toEqual([item('t-1', 3)]);
  });

  it('rejects an event without runId with InvalidEventError', async () => {
    await expect(handler({})).rejects.toMatchObject({
      name: 'InvalidEventError',
      message: expect.stringContaining('ConverseItems expects {runId}'),
    });
  });
});
