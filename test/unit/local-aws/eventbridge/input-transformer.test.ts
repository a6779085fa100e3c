/**
 * Target input: the examples of the EventBridge User Guide page "Transforming target input" (input paths,
 * every row of the input template table, predefined variables, common issues), plus Input and InputPath.
 */
import { EventBridgeValidationError, TargetInputError } from '@corpus-pipeline/local-aws/eventbridge/errors';
import {
  applyInputTransformer,
  computeTargetInput,
  evaluateJsonPath,
  validateTargetInput,
} from '@corpus-pipeline/local-aws/eventbridge/input-transformer';

/** The example EC2 event of the page. */
const event = {
  version: '0',
  id: '7bf73129-1428-4cd3-a780-95db273d1602',
  'detail-type': 'EC2 Instance State-change Notification',
  source: 'aws.ec2',
  account: '123456789012',
  time: '2015-11-11T21:29:54Z',
  region: 'us-east-1',
  resources: ['arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111'],
  detail: { 'instance-id': 'i-0123456789', state: 'RUNNING' },
};

/** The example Input Path of the page. */
const inputPathsMap = {
  timestamp: '$.time',
  instance: '$.detail.instance-id',
  state: '$.detail.state',
  resource: '$.resources[0]',
};

const context = {
  ruleArn: 'arn:aws:events:us-east-2:123456789012:rule/example',
  ruleName: 'example',
  ingestionTime: new Date('2015-11-11T21:29:55.123Z'),
};

function render(inputTemplate: string, paths: Record<string, string> = inputPathsMap): string {
  return applyInputTransformer({ inputPathsMap: paths, inputTemplate }, event, context);
}

describe('input template table', () => {
  test('Simple string', () => {
    expect(render('"instance <instance> is in <state>"')).toBe('"instance i-0123456789 is in RUNNING"');
  });

  test('String with escaped quotes', () => {
    expect(render('"instance \\"<instance>\\" is in <state>"')).toBe(
      '"instance \\"i-0123456789\\" is in RUNNING"',
    );
  });

  test('Simple JSON: string variables get their quotes, output is minified', () => {
    const out = render('{\n  "instance" : <instance>,\n  "state": <state>\n}');
    expect(out).toBe('{"instance":"i-0123456789","state":"RUNNING"}');
  });

  test('JSON with strings and variables', () => {
    const out = render(
      '{\n "instance" : <instance>,\n "state": "<state>",\n "instanceStatus": "instance \\"<instance>\\" is in <state>"\n}',
    );
    expect(JSON.parse(out)).toEqual({
      instance: 'i-0123456789',
      state: 'RUNNING',
      instanceStatus: 'instance "i-0123456789" is in RUNNING',
    });
  });

  test('JSON with a mix of variables and static information', () => {
    const out = render(
      '{\n  "instance" : <instance>,\n  "state": [ 9, <state>, true ],\n  "Transformed" : "Yes"\n}\n',
    );
    expect(out).toBe('{"instance":"i-0123456789","state":[9,"RUNNING",true],"Transformed":"Yes"}');
  });

  test('Including reserved variables in JSON', () => {
    const out = render(
      '{"instance" : <instance>, "state": <state>, "ruleArn" : <aws.events.rule-arn>, "ruleName" : <aws.events.rule-name>, "originalEvent" : <aws.events.event.json>}',
    );
    expect(JSON.parse(out)).toEqual({
      instance: 'i-0123456789',
      state: 'RUNNING',
      ruleArn: 'arn:aws:events:us-east-2:123456789012:rule/example',
      ruleName: 'example',
      originalEvent: event,
    });
  });

  test('Including reserved variables in a string', () => {
    expect(render('"<aws.events.rule-name> triggered"')).toBe('"example triggered"');
  });

  test('the $.resources[0] input path selects an array element', () => {
    expect(render('{"resource": <resource>}')).toBe(
      '{"resource":"arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"}',
    );
  });
});

describe('predefined variables', () => {
  test('aws.events.event is the envelope without detail (detail-type spelled detailType)', () => {
    const out = JSON.parse(render('{"e": <aws.events.event>}')) as { e: Record<string, unknown> };
    expect(out.e).toEqual({
      version: '0',
      id: event.id,
      detailType: event['detail-type'],
      source: 'aws.ec2',
      account: '123456789012',
      time: '2015-11-11T21:29:54Z',
      region: 'us-east-1',
      resources: event.resources,
    });
  });

  test('aws.events.event.ingestion-time is when the bus received the event (ISO 8601)', () => {
    expect(render('{"t": <aws.events.event.ingestion-time>}')).toBe('{"t":"2015-11-11T21:29:55Z"}');
    const withoutTime = applyInputTransformer(
      { inputTemplate: '"<aws.events.event.ingestion-time>"' },
      event,
      { ruleArn: context.ruleArn, ruleName: context.ruleName },
    );
    expect(withoutTime).toBe('"2015-11-11T21:29:54Z"');
  });

  test('predefined variables need no InputPathsMap and accept the CloudFormation spelling', () => {
    const out = applyInputTransformer(
      { InputTemplate: '{"rule": <aws.events.rule-name>, "arn": "<aws.events.rule-arn>"}' },
      event,
      context,
    );
    expect(JSON.parse(out)).toEqual({ rule: 'example', arn: context.ruleArn });
  });
});

describe('common issues', () => {
  test('a path that matches nothing creates no variable: empty inside a string (AWS-validated)', () => {
    const paths = { ...inputPathsMap, command: '$.detail.notinmessage' };
    expect(render('"Event of <instance> type, info extracted from detail <command>"', paths)).toBe(
      '"Event of i-0123456789 type, info extracted from detail "',
    );
  });

  test('a path that matches nothing renders null in a JSON value position', () => {
    const paths = { ...inputPathsMap, command: '$.detail.notinmessage' };
    expect(render('{"state": <state>, "command": <command>}', paths)).toBe(
      '{"state":"RUNNING","command":null}',
    );
  });

  test('an object referenced inside a string loses its inner quotes', () => {
    expect(render('"Detail is <detail>"', { detail: '$.detail' })).toBe(
      '"Detail is {instance-id:i-0123456789,state:RUNNING}"',
    );
  });

  test('an object placed as a JSON value is embedded as JSON', () => {
    expect(render('{"detail": <detail>}', { detail: '$.detail' })).toBe(
      '{"detail":{"instance-id":"i-0123456789","state":"RUNNING"}}',
    );
  });

  test('values extracted by path are not escaped inside strings', () => {
    const quoted = { ...event, detail: { ...event.detail, state: 'say "hi"' } };
    const out = applyInputTransformer(
      { inputPathsMap: { state: '$.detail.state' }, inputTemplate: '{"msg": "state <state>"}' },
      quoted,
      context,
    );
    expect(out).toBe('{"msg": "state say "hi""}');
  });

  test('numbers, booleans and null render as JSON in values and as text in strings', () => {
    const typed = { ...event, detail: { n: 42, ok: true, none: null } };
    const paths = { n: '$.detail.n', ok: '$.detail.ok', none: '$.detail.none' };
    const json = applyInputTransformer(
      { inputPathsMap: paths, inputTemplate: '{"n": <n>, "ok": <ok>, "none": <none>}' },
      typed,
      context,
    );
    expect(json).toBe('{"n":42,"ok":true,"none":null}');
    const text = applyInputTransformer(
      { inputPathsMap: paths, inputTemplate: '"<n> <ok> <none>"' },
      typed,
      context,
    );
    expect(text).toBe('"42 true null"');
  });

  test('multi-line text output: each line wrapped in quotes', () => {
    const out = render('"<instance> is <state>"\n"Since <timestamp>"');
    expect(out).toBe('"i-0123456789 is RUNNING"\n"Since 2015-11-11T21:29:54Z"');
  });

  test('plain text templates work too', () => {
    expect(render('Rule <aws.events.rule-name> saw <instance>')).toBe('Rule example saw i-0123456789');
  });

  test('whitespace inside JSON strings survives minification', () => {
    expect(render('{ "a" : "two  spaces <state>" ,\n "b" : [ 1 , 2 ] }')).toBe(
      '{"a":"two  spaces RUNNING","b":[1,2]}',
    );
  });
});

describe('computeTargetInput', () => {
  test('no input settings: the whole event as compact JSON', () => {
    expect(computeTargetInput({}, event, context)).toBe(JSON.stringify(event));
  });

  test('Input: the static JSON text as given', () => {
    expect(computeTargetInput({ input: '{"hello": "world"}' }, event, context)).toBe('{"hello": "world"}');
  });

  test('InputPath: the selected part of the event', () => {
    expect(JSON.parse(computeTargetInput({ inputPath: '$.detail' }, event, context))).toEqual(event.detail);
  });

  test('InputPath to a string delivers a JSON string (AWS-validated)', () => {
    expect(computeTargetInput({ inputPath: '$.detail.state' }, event, context)).toBe('"RUNNING"');
  });

  test('InputPath that selects nothing is an error', () => {
    expect(() => computeTargetInput({ inputPath: '$.detail.nothing' }, event, context)).toThrow(
      TargetInputError,
    );
  });

  test('InputTransformer', () => {
    expect(
      computeTargetInput(
        { inputTransformer: { inputPathsMap, inputTemplate: '{"s": <state>}' } },
        event,
        context,
      ),
    ).toBe('{"s":"RUNNING"}');
  });
});

describe('evaluateJsonPath', () => {
  test.each([
    ['$', event],
    ['$.detail.instance-id', 'i-0123456789'],
    ["$['detail']['state']", 'RUNNING'],
    ['$.resources[0]', event.resources[0]],
    ['$.resources[*]', event.resources[0]],
    ['$..state', 'RUNNING'],
  ])('%s', (path, expected) => {
    expect(evaluateJsonPath(event, path)).toEqual({ found: true, value: expected });
  });

  test.each(['$.nothing', '$.resources[3]', '$.detail.state.deeper', '$..nothing'])(
    '%s is absent',
    (path) => {
      expect(evaluateJsonPath(event, path)).toEqual({ found: false });
    },
  );

  test('several matches of a wildcard path come back as an array', () => {
    expect(evaluateJsonPath(event, '$.detail.*')).toEqual({
      found: true,
      value: ['i-0123456789', 'RUNNING'],
    });
  });

  test('paths must start with $', () => {
    expect(() => evaluateJsonPath(event, 'detail.state')).toThrow(TargetInputError);
  });
});

describe('validateTargetInput (PutTargets checks)', () => {
  const cases: [string, Parameters<typeof validateTargetInput>[0], string][] = [
    [
      'two input modes',
      { inputPath: '$.detail', inputTransformer: { inputTemplate: '"x"' } },
      'Only one of Input, InputPath, or InputTransformer must be provided for target t1.',
    ],
    ['Input that is not JSON', { input: '{nope' }, 'Input for target t1 is not valid JSON text.'],
    [
      'InputPath that is not a path',
      { inputPath: 'detail' },
      'InputPath for target t1 is not a valid JSON path.',
    ],
    [
      'an undefined placeholder (AWS-validated wording)',
      { inputTransformer: { inputPathsMap: { a: '$.a' }, inputTemplate: '"<a> <notdefinedkey>"' } },
      'InputTemplate for target t1 contains invalid placeholder notdefinedkey.',
    ],
    [
      'a reserved variable name',
      { inputTransformer: { inputPathsMap: { 'aws.events.rule-arn': '$.a' }, inputTemplate: '"x"' } },
      'InputPathsMap for target t1 redefines the reserved variable aws.events.rule-arn.',
    ],
    [
      'a path that is not a JSON path',
      { inputTransformer: { inputPathsMap: { a: 'detail' }, inputTemplate: '"<a>"' } },
      'InputPathsMap for target t1 maps a to an invalid JSON path detail.',
    ],
    [
      'more than 100 variables',
      {
        inputTransformer: {
          inputPathsMap: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`v${i}`, '$.a'])),
          inputTemplate: '"x"',
        },
      },
      'InputPathsMap for target t1 has 101 entries; at most 100 are allowed.',
    ],
  ];

  test.each(cases)('%s', (_name, config, message) => {
    let caught: unknown;
    try {
      validateTargetInput(config, 't1');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(EventBridgeValidationError);
    expect((caught as Error).message).toBe(message);
  });

  test('valid settings pass', () => {
    expect(() => validateTargetInput({}, 't1')).not.toThrow();
    expect(() => validateTargetInput({ input: '"static"' }, 't1')).not.toThrow();
    expect(() =>
      validateTargetInput(
        {
          inputTransformer: {
            inputPathsMap,
            inputTemplate: '{"i": <instance>, "r": <aws.events.rule-name>}',
          },
        },
        't1',
      ),
    ).not.toThrow();
  });
});
