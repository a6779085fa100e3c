/**
 * The documented EventBridge pattern examples, encoded as (pattern, event, expected) cases.
 *
 * Sources: the EventBridge User Guide pages "Event patterns", "Matching null values and empty strings",
 * "Arrays in event patterns", "Content filtering" / "Comparison operators" (every operator row and every
 * example), the README of aws/event-ruler (the matcher EventBridge runs), and cases whose outcome was
 * recorded against the real TestEventPattern API (marked "AWS-validated"; LocalStack keeps them as
 * snapshot-verified fixtures).
 */
import { InvalidEventError, InvalidEventPatternError } from '@corpus-pipeline/local-aws/eventbridge/errors';
import {
  compilePattern,
  flattenEvent,
  matchesPattern,
  validatePattern,
} from '@corpus-pipeline/local-aws/eventbridge/pattern';

type Json = Record<string, unknown>;

interface Case {
  readonly name: string;
  readonly pattern: unknown;
  readonly event: unknown;
  readonly expected: boolean;
}

function withDetail(event: Json, detail: Json): Json {
  return { ...event, detail: { ...(event.detail as Json), ...detail } };
}

function without(event: Json, key: string): Json {
  const copy = { ...(event.detail as Json) };
  delete copy[key];
  return { ...event, detail: copy };
}

/** "Event patterns": the EC2 event. */
const ec2Event: Json = {
  version: '0',
  id: '6a7e8feb-b491-4cf7-a9f1-bf3703467718',
  'detail-type': 'EC2 Instance State-change Notification',
  source: 'aws.ec2',
  account: '111122223333',
  time: '2017-12-22T18:43:48Z',
  region: 'us-west-1',
  resources: ['arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0'],
  detail: { 'instance-id': 'i-1234567890abcdef0', state: 'terminated' },
};

/** "Matching null values and empty strings" / "Field matching": the Auto Scaling event. */
const autoscalingEvent: Json = {
  version: '0',
  id: '3e3c153a-8339-4e30-8c35-687ebef853fe',
  'detail-type': 'EC2 Instance Launch Successful',
  source: 'aws.autoscaling',
  account: '123456789012',
  time: '2015-11-11T21:31:47Z',
  region: 'us-east-1',
  resources: [],
  detail: { eventVersion: '', responseElements: null },
};

/** "Value matching": the (truncated) Macie Classic event. */
const macieEvent: Json = {
  version: '0',
  id: '3e355723-fca9-4de3-9fd7-154c289d6b59',
  'detail-type': 'Macie Alert',
  source: 'aws.macie',
  account: '123456789012',
  time: '2017-04-24T22:28:49Z',
  region: 'us-east-1',
  resources: [
    'arn:aws:macie:us-east-1:123456789012:trigger/trigger_id/alert/alert_id',
    'arn:aws:macie:us-east-1:123456789012:trigger/trigger_id',
  ],
  detail: {
    'notification-type': 'ALERT_CREATED',
    name: 'Scanning bucket policies',
    tags: ['Custom_Alert', 'Insider'],
    'risk-score': 80,
    trigger: {
      'rule-arn': 'arn:aws:macie:us-east-1:123456789012:trigger/trigger_id',
      'alert-type': 'basic',
      risk: 8,
    },
  },
};

/** event-ruler README: the sample event. */
const rulerEvent: Json = {
  version: '0',
  id: 'ddddd4-aaaa-7777-4444-345dd43cc333',
  'detail-type': 'EC2 Instance State-change Notification',
  source: 'aws.ec2',
  account: '012345679012',
  time: '2017-10-02T16:24:49Z',
  region: 'us-east-1',
  resources: ['arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000'],
  detail: {
    'c-count': 5,
    'd-count': 3,
    'x-limit': 301.8,
    'source-ip': '10.0.0.33',
    'instance-id': 'i-000000aaaaaa00000',
    state: 'running',
  },
};

/** A minimal envelope for the field-level examples of the operators table. */
function detailEvent(detail: Json): Json {
  return {
    version: '0',
    id: '1',
    'detail-type': 'test-detail-type',
    source: 'test-source',
    account: '123456789012',
    time: '2022-07-13T13:48:01Z',
    region: 'us-east-2',
    resources: [],
    detail,
  };
}

const employees = {
  employees: [
    { firstName: 'John', lastName: 'Doe' },
    { firstName: 'Anna', lastName: 'Smith' },
    { firstName: 'Peter', lastName: 'Jones' },
  ],
};

const employeesNested = {
  employees: [
    [
      { firstName: 'John', lastName: 'Doe' },
      { firstName: 'Anna', lastName: 'Smith' },
    ],
    [{ firstName: 'Peter', lastName: 'Jones' }],
  ],
};

const ec2TerminationPattern = {
  source: ['aws.ec2'],
  'detail-type': ['EC2 Instance State-change Notification'],
  detail: { state: ['terminated'] },
};

const numericPattern = {
  detail: {
    'c-count': [{ numeric: ['>', 0, '<=', 5] }],
    'd-count': [{ numeric: ['<', 10] }],
    'x-limit': [{ numeric: ['=', 3.018e2] }],
  },
};

const complexPattern = {
  time: [{ prefix: '2017-10-02' }],
  detail: {
    state: [{ 'anything-but': 'initializing' }],
    'c-count': [{ numeric: ['>', 0, '<=', 5] }],
    'd-count': [{ numeric: ['<', 10] }],
    'x-limit': [{ 'anything-but': [100, 200, 300] }],
  },
};

const orPattern = {
  detail: {
    $or: [
      { 'c-count': [{ numeric: ['>', 0, '<=', 5] }] },
      { 'd-count': [{ numeric: ['<', 10] }] },
      { 'x-limit': [{ numeric: ['=', 3.018e2] }] },
    ],
  },
};

const cloudwatchOrPattern = {
  source: ['aws.cloudwatch'],
  $or: [{ metricName: ['CPUUtilization', 'ReadLatency'] }, { namespace: ['AWS/EC2', 'AWS/ES'] }],
};

const eventPatternsPage: Case[] = [
  {
    name: 'EC2 termination pattern matches the EC2 event',
    pattern: ec2TerminationPattern,
    event: ec2Event,
    expected: true,
  },
  {
    name: 'EC2 termination pattern does not match a running instance',
    pattern: ec2TerminationPattern,
    event: withDetail(ec2Event, { state: 'running' }),
    expected: false,
  },
  {
    name: 'values in an array OR together (aws.fargate)',
    pattern: { source: ['aws.ec2', 'aws.fargate'] },
    event: { ...ec2Event, source: 'aws.fargate' },
    expected: true,
  },
  {
    name: 'values in an array OR together (aws.ec2)',
    pattern: { source: ['aws.ec2', 'aws.fargate'] },
    event: ec2Event,
    expected: true,
  },
  {
    name: 'values in an array OR together (no value matches)',
    pattern: { source: ['aws.ec2', 'aws.fargate'] },
    event: { ...ec2Event, source: 'aws.s3' },
    expected: false,
  },
  {
    name: 'fields absent from the pattern are ignored',
    pattern: { detail: { state: ['terminated'] } },
    event: ec2Event,
    expected: true,
  },
  {
    name: 'every pattern field must be in the event',
    pattern: { detail: { state: ['terminated'], missing: ['x'] } },
    event: ec2Event,
    expected: false,
  },
  {
    name: 'fields must have the same nesting',
    pattern: { state: ['terminated'] },
    event: ec2Event,
    expected: false,
  },
  {
    name: 'strings match exactly, no case folding',
    pattern: { source: ['AWS.EC2'] },
    event: ec2Event,
    expected: false,
  },
  {
    name: 'field names are case-sensitive (AWS-validated)',
    pattern: { Source: ['aws.ec2'] },
    event: ec2Event,
    expected: false,
  },
  {
    name: 'field matching on a null value',
    pattern: {
      source: ['aws.autoscaling'],
      'detail-type': ['EC2 Instance Launch Successful'],
      detail: { responseElements: [null] },
    },
    event: autoscalingEvent,
    expected: true,
  },
  {
    name: 'value matching on nested numbers (risk-score 80, trigger risk 8)',
    pattern: {
      source: ['aws.macie'],
      'detail-type': ['Macie Alert'],
      detail: { 'risk-score': [80], trigger: { risk: [8] } },
    },
    event: macieEvent,
    expected: true,
  },
  {
    name: 'value matching fails on another nested number',
    pattern: {
      source: ['aws.macie'],
      'detail-type': ['Macie Alert'],
      detail: { 'risk-score': [80], trigger: { risk: [7] } },
    },
    event: macieEvent,
    expected: false,
  },
  {
    name: 'numbers compare by value: [300] matches 300.0 (AWS-validated)',
    pattern: '{"number": [300]}',
    event: '{"id": "1", "source": "s", "detail-type": "d", "number": 300.0}',
    expected: true,
  },
  { name: 'an empty pattern matches every event', pattern: {}, event: ec2Event, expected: true },
  {
    name: 'a key repeated in the pattern: the last one wins (location)',
    pattern: '{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}',
    event: detailEvent({ location: 'eu-west' }),
    expected: true,
  },
  {
    name: 'a key repeated in the pattern: the last one excludes us-east',
    pattern: '{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}',
    event: detailEvent({ location: 'us-east' }),
    expected: false,
  },
  {
    name: 'detail given as a JSON string is not parsed (AWS-validated)',
    pattern: { detail: { 'my-key': ['my-value'] } },
    event: { ...detailEvent({}), detail: '{"my-key": "my-value"}' },
    expected: false,
  },
  {
    name: 'dotted pattern keys reach nested event fields (AWS-validated)',
    pattern: { detail: { 'state.status': ['running'] } },
    event: detailEvent({ state: { status: 'running' } }),
    expected: true,
  },
  {
    name: 'dotted event keys are joined too: detail.state.status.status is not detail.state.status (AWS-validated)',
    pattern: { detail: { state: { status: ['running'] } } },
    event: detailEvent({ 'state.status': { status: 'running' } }),
    expected: false,
  },
  {
    name: 'dotted pattern key with an extra level does not match (AWS-validated)',
    pattern: { detail: { 'state.status': { status: ['running'] } } },
    event: detailEvent({ state: { status: 'running' } }),
    expected: false,
  },
  {
    name: 'boolean true matches true',
    pattern: { detail: { enabled: [true] } },
    event: detailEvent({ enabled: true }),
    expected: true,
  },
  {
    name: 'boolean true does not match the string "true"',
    pattern: { detail: { enabled: [true] } },
    event: detailEvent({ enabled: 'true' }),
    expected: false,
  },
  {
    name: 'boolean false matches false',
    pattern: { detail: { enabled: [false] } },
    event: detailEvent({ enabled: false }),
    expected: true,
  },
  {
    name: 'the number 5 does not match the string "5"',
    pattern: { detail: { n: [5] } },
    event: detailEvent({ n: '5' }),
    expected: false,
  },
];

const nullAndEmptyPage: Case[] = [
  {
    name: 'empty string matches eventVersion ""',
    pattern: { detail: { eventVersion: [''] } },
    event: autoscalingEvent,
    expected: true,
  },
  {
    name: 'null matches responseElements null',
    pattern: { detail: { responseElements: [null] } },
    event: autoscalingEvent,
    expected: true,
  },
  {
    name: 'null does not match an empty string',
    pattern: { detail: { eventVersion: [null] } },
    event: autoscalingEvent,
    expected: false,
  },
  {
    name: 'an empty string does not match null',
    pattern: { detail: { responseElements: [''] } },
    event: autoscalingEvent,
    expected: false,
  },
  {
    name: 'null does not match a missing field',
    pattern: { detail: { nothing: [null] } },
    event: autoscalingEvent,
    expected: false,
  },
  {
    name: 'null does not match an empty array (AWS-validated)',
    pattern: { resources: [null] },
    event: autoscalingEvent,
    expected: false,
  },
  {
    name: 'operators table, Null: UserID is null',
    pattern: { UserID: [null] },
    event: { UserID: null },
    expected: true,
  },
  {
    name: 'operators table, Empty: LastName is empty',
    pattern: { LastName: [''] },
    event: { LastName: '' },
    expected: true,
  },
  {
    name: 'operators table, Empty: a non-empty LastName',
    pattern: { LastName: [''] },
    event: { LastName: 'Doe' },
    expected: false,
  },
];

const arraysPage: Case[] = [
  {
    name: 'pattern array and event array intersect (second event element)',
    pattern: {
      resources: [
        'arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f',
        'arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f',
        'arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f',
      ],
    },
    event: {
      resources: [
        'arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b-bbf0-401d-b893-d5978ed4a025:autoScalingGroupName/ASGTerminate',
        'arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f',
      ],
    },
    expected: true,
  },
  {
    name: 'pattern array and event array do not intersect (AWS-validated)',
    pattern: {
      resources: [
        'arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f',
        'arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f',
      ],
    },
    event: {
      resources: [
        'arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b-bbf0-401d-b893-d5978ed4a025:autoScalingGroupName/ASGTerminate',
      ],
    },
    expected: false,
  },
  {
    name: 'macie tags: an element of an event array matches',
    pattern: { detail: { tags: ['Insider'] } },
    event: macieEvent,
    expected: true,
  },
  {
    name: 'event-ruler: objects in an array are matched through the array',
    pattern: { employees: { firstName: ['Anna'] } },
    event: employees,
    expected: true,
  },
  {
    name: 'event-ruler: fields from different array elements do not combine (Anna Jones)',
    pattern: { employees: { firstName: ['Anna'], lastName: ['Jones'] } },
    event: employees,
    expected: false,
  },
  {
    name: 'event-ruler: fields of the same array element combine (Anna Smith)',
    pattern: { employees: { firstName: ['Anna'], lastName: ['Smith'] } },
    event: employees,
    expected: true,
  },
  {
    name: 'event-ruler: multi-level arrays are crushed (Peter)',
    pattern: { employees: { firstName: ['Peter'] } },
    event: employeesNested,
    expected: true,
  },
  {
    name: 'event-ruler: multi-level arrays stay consistent (Anna Jones)',
    pattern: { employees: { firstName: ['Anna'], lastName: ['Jones'] } },
    event: employeesNested,
    expected: false,
  },
  {
    name: 'event-ruler: multi-level arrays, same element (Peter Jones)',
    pattern: { employees: { firstName: ['Peter'], lastName: ['Jones'] } },
    event: employeesNested,
    expected: true,
  },
];

const prefixSuffix: Case[] = [
  {
    name: 'prefix on time matches 2017-10-02T18:43:48Z',
    pattern: { time: [{ prefix: '2017-10-02' }] },
    event: { ...rulerEvent, time: '2017-10-02T18:43:48Z' },
    expected: true,
  },
  {
    name: 'prefix on time does not match another day',
    pattern: { time: [{ prefix: '2017-10-02' }] },
    event: { ...rulerEvent, time: '2017-10-03T18:43:48Z' },
    expected: false,
  },
  {
    name: 'prefix example: Auto Scaling events from European regions',
    pattern: { source: ['aws.autoscaling'], region: [{ prefix: 'eu-' }] },
    event: { ...autoscalingEvent, region: 'eu-west-1' },
    expected: true,
  },
  {
    name: 'prefix example: a US region is not European',
    pattern: { source: ['aws.autoscaling'], region: [{ prefix: 'eu-' }] },
    event: autoscalingEvent,
    expected: false,
  },
  {
    name: 'operators table, Begins with: Region is in the US',
    pattern: { Region: [{ prefix: 'us-' }] },
    event: { Region: 'us-east-1' },
    expected: true,
  },
  {
    name: 'prefix only applies to strings',
    pattern: { detail: { n: [{ prefix: '1' }] } },
    event: detailEvent({ n: 12 }),
    expected: false,
  },
  {
    name: 'prefix is case-sensitive',
    pattern: { detail: { service: [{ prefix: 'EventB' }] } },
    event: detailEvent({ service: 'eventbridge' }),
    expected: false,
  },
  {
    name: 'prefix equals-ignore-case: EventBridge',
    pattern: { detail: { service: [{ prefix: { 'equals-ignore-case': 'EventB' } }] } },
    event: detailEvent({ service: 'EventBridge' }),
    expected: true,
  },
  {
    name: 'prefix equals-ignore-case: EVENTBRIDGE',
    pattern: { detail: { service: [{ prefix: { 'equals-ignore-case': 'EventB' } }] } },
    event: detailEvent({ service: 'EVENTBRIDGE' }),
    expected: true,
  },
  {
    name: 'prefix equals-ignore-case: eventbridge',
    pattern: { detail: { service: [{ prefix: { 'equals-ignore-case': 'EventB' } }] } },
    event: detailEvent({ service: 'eventbridge' }),
    expected: true,
  },
  {
    name: 'prefix equals-ignore-case still anchors at the start',
    pattern: { detail: { service: [{ prefix: { 'equals-ignore-case': 'EventB' } }] } },
    event: detailEvent({ service: 'Amazon EventBridge' }),
    expected: false,
  },
  {
    name: 'operators table, Begins with (ignore case): eventb',
    pattern: { service: [{ prefix: { 'equals-ignore-case': 'eventb' } }] },
    event: { service: 'EventBridge' },
    expected: true,
  },
  {
    name: 'suffix .png matches image.png',
    pattern: { FileName: [{ suffix: '.png' }] },
    event: { FileName: 'image.png' },
    expected: true,
  },
  {
    name: 'suffix .png is case-sensitive',
    pattern: { FileName: [{ suffix: '.png' }] },
    event: { FileName: 'image.PNG' },
    expected: false,
  },
  {
    name: 'suffix .png does not match a longer extension',
    pattern: { FileName: [{ suffix: '.png' }] },
    event: { FileName: 'image.png.txt' },
    expected: false,
  },
  {
    name: 'suffix equals-ignore-case .png matches image.PNG',
    pattern: { detail: { FileName: [{ suffix: { 'equals-ignore-case': '.png' } }] } },
    event: detailEvent({ FileName: 'image.PNG' }),
    expected: true,
  },
  {
    name: 'operators table, Ends with (ignore case): tBridge',
    pattern: { service: [{ suffix: { 'equals-ignore-case': 'tBridge' } }] },
    event: { service: 'EVENTBRIDGE' },
    expected: true,
  },
  {
    name: 'event-ruler: suffix on source',
    pattern: { source: [{ suffix: 'ec2' }] },
    event: rulerEvent,
    expected: true,
  },
];

const anythingBut: Case[] = [
  {
    name: 'anything-but "initializing": running',
    pattern: { detail: { state: [{ 'anything-but': 'initializing' }] } },
    event: rulerEvent,
    expected: true,
  },
  {
    name: 'anything-but "initializing": initializing',
    pattern: { detail: { state: [{ 'anything-but': 'initializing' }] } },
    event: withDetail(rulerEvent, { state: 'initializing' }),
    expected: false,
  },
  {
    name: 'anything-but a string matches null (AWS-validated)',
    pattern: { detail: { state: [{ 'anything-but': 'initializing' }] } },
    event: detailEvent({ state: null }),
    expected: true,
  },
  {
    name: 'anything-but does not match a missing field (AWS-validated)',
    pattern: { detail: { state: [{ 'anything-but': 'initializing' }] } },
    event: detailEvent({ other: 'x' }),
    expected: false,
  },
  {
    name: 'anything-but 123: 124',
    pattern: { detail: { 'x-limit': [{ 'anything-but': 123 }] } },
    event: detailEvent({ 'x-limit': 124 }),
    expected: true,
  },
  {
    name: 'anything-but 123: 123',
    pattern: { detail: { 'x-limit': [{ 'anything-but': 123 }] } },
    event: detailEvent({ 'x-limit': 123 }),
    expected: false,
  },
  {
    name: 'anything-but 0: 789 (AWS-validated)',
    pattern: { detail: { 'x-limit': [{ 'anything-but': 0 }] } },
    event: detailEvent({ 'x-limit': 789 }),
    expected: true,
  },
  {
    name: 'anything-but [stopped, overloaded]: running',
    pattern: { detail: { state: [{ 'anything-but': ['stopped', 'overloaded'] }] } },
    event: rulerEvent,
    expected: true,
  },
  {
    name: 'anything-but [stopped, overloaded]: stopped',
    pattern: { detail: { state: [{ 'anything-but': ['stopped', 'overloaded'] }] } },
    event: withDetail(rulerEvent, { state: 'stopped' }),
    expected: false,
  },
  {
    name: 'anything-but [stopped, overloaded]: overloaded',
    pattern: { detail: { state: [{ 'anything-but': ['stopped', 'overloaded'] }] } },
    event: withDetail(rulerEvent, { state: 'overloaded' }),
    expected: false,
  },
  {
    name: 'anything-but [100, 200, 300]: 150',
    pattern: { detail: { 'x-limit': [{ 'anything-but': [100, 200, 300] }] } },
    event: detailEvent({ 'x-limit': 150 }),
    expected: true,
  },
  {
    name: 'anything-but [100, 200, 300]: 200',
    pattern: { detail: { 'x-limit': [{ 'anything-but': [100, 200, 300] }] } },
    event: detailEvent({ 'x-limit': 200 }),
    expected: false,
  },
  {
    name: 'anything-but a number list: the string "200" is something else',
    pattern: { detail: { 'x-limit': [{ 'anything-but': [100, 200, 300] }] } },
    event: detailEvent({ 'x-limit': '200' }),
    expected: true,
  },
  {
    name: 'anything-but prefix "init": running',
    pattern: { detail: { state: [{ 'anything-but': { prefix: 'init' } }] } },
    event: rulerEvent,
    expected: true,
  },
  {
    name: 'anything-but prefix "init": initializing',
    pattern: { detail: { state: [{ 'anything-but': { prefix: 'init' } }] } },
    event: withDetail(rulerEvent, { state: 'initializing' }),
    expected: false,
  },
  {
    name: 'anything-but prefix matches a number (AWS-validated)',
    pattern: { detail: { state: [{ 'anything-but': { prefix: 'init' } }] } },
    event: detailEvent({ state: 12 }),
    expected: true,
  },
  {
    name: 'anything-but prefix list: pending (AWS-validated form)',
    pattern: { detail: { state: [{ 'anything-but': { prefix: ['init', 'run'] } }] } },
    event: detailEvent({ state: 'pending' }),
    expected: true,
  },
  {
    name: 'anything-but prefix list: running',
    pattern: { detail: { state: [{ 'anything-but': { prefix: ['init', 'run'] } }] } },
    event: detailEvent({ state: 'running' }),
    expected: false,
  },
  {
    name: 'example: everything but CloudTrail API calls (an API call)',
    pattern: { 'detail-type': [{ 'anything-but': 'AWS API Call via CloudTrail' }] },
    event: { ...ec2Event, 'detail-type': 'AWS API Call via CloudTrail' },
    expected: false,
  },
  {
    name: 'example: everything but CloudTrail API calls (an EC2 event)',
    pattern: { 'detail-type': [{ 'anything-but': 'AWS API Call via CloudTrail' }] },
    event: ec2Event,
    expected: true,
  },
  {
    name: 'example: everything but EC2 and S3 (EC2)',
    pattern: { source: [{ 'anything-but': ['aws.ec2', 'aws.s3'] }] },
    event: ec2Event,
    expected: false,
  },
  {
    name: 'example: everything but EC2 and S3 (Lambda)',
    pattern: { source: [{ 'anything-but': ['aws.ec2', 'aws.s3'] }] },
    event: { ...ec2Event, source: 'aws.lambda' },
    expected: true,
  },
  {
    name: 'example: only your own events, anything-but prefix "aws." (custom source)',
    pattern: { source: [{ 'anything-but': { prefix: 'aws.' } }] },
    event: { ...ec2Event, source: 'com.mycompany.orders' },
    expected: true,
  },
  {
    name: 'example: only your own events, anything-but prefix "aws." (AWS source)',
    pattern: { source: [{ 'anything-but': { prefix: 'aws.' } }] },
    event: ec2Event,
    expected: false,
  },
  {
    name: 'operators table, Anything-but (begins with): Region not in the US',
    pattern: { Region: [{ 'anything-but': { prefix: 'us-' } }] },
    event: { Region: 'eu-west-1' },
    expected: true,
  },
  {
    name: 'operators table, Anything-but (begins with): us-east-1',
    pattern: { Region: [{ 'anything-but': { prefix: 'us-' } }] },
    event: { Region: 'us-east-1' },
    expected: false,
  },
  {
    name: 'anything-but suffix ".txt": file.png',
    pattern: { detail: { FileName: [{ 'anything-but': { suffix: '.txt' } }] } },
    event: detailEvent({ FileName: 'file.png' }),
    expected: true,
  },
  {
    name: 'anything-but suffix ".txt": file.txt',
    pattern: { detail: { FileName: [{ 'anything-but': { suffix: '.txt' } }] } },
    event: detailEvent({ FileName: 'file.txt' }),
    expected: false,
  },
  {
    name: 'operators table, Anything-but (ends with): .png',
    pattern: { FileName: [{ 'anything-but': { suffix: '.png' } }] },
    event: { FileName: 'a.png' },
    expected: false,
  },
  {
    name: 'anything-but equals-ignore-case "initializing": INITIALIZING',
    pattern: { detail: { state: [{ 'anything-but': { 'equals-ignore-case': 'initializing' } }] } },
    event: detailEvent({ state: 'INITIALIZING' }),
    expected: false,
  },
  {
    name: 'anything-but equals-ignore-case "initializing": pending',
    pattern: { detail: { state: [{ 'anything-but': { 'equals-ignore-case': 'initializing' } }] } },
    event: detailEvent({ state: 'pending' }),
    expected: true,
  },
  {
    name: 'anything-but equals-ignore-case list: pending (AWS-validated)',
    pattern: {
      detail: { state: [{ 'anything-but': { 'equals-ignore-case': ['initializing', 'stopped'] } }] },
    },
    event: detailEvent({ state: 'pending' }),
    expected: true,
  },
  {
    name: 'anything-but equals-ignore-case list: Stopped',
    pattern: {
      detail: { state: [{ 'anything-but': { 'equals-ignore-case': ['initializing', 'stopped'] } }] },
    },
    event: detailEvent({ state: 'Stopped' }),
    expected: false,
  },
  {
    name: 'operators table, Anything-but using a wildcard: a path with /lib/',
    pattern: { FilePath: [{ 'anything-but': { wildcard: '*/lib/*' } }] },
    event: { FilePath: '/usr/lib/node' },
    expected: false,
  },
  {
    name: 'operators table, Anything-but using a wildcard: a path without /lib/',
    pattern: { FilePath: [{ 'anything-but': { wildcard: '*/lib/*' } }] },
    event: { FilePath: '/usr/bin/node' },
    expected: true,
  },
  {
    name: 'anything-but wildcard list: /usr/bin/node',
    pattern: { detail: { FilePath: [{ 'anything-but': { wildcard: ['*/lib/*', '*/bin/*'] } }] } },
    event: detailEvent({ FilePath: '/usr/bin/node' }),
    expected: false,
  },
  {
    name: 'anything-but wildcard list: /usr/share/doc',
    pattern: { detail: { FilePath: [{ 'anything-but': { wildcard: ['*/lib/*', '*/bin/*'] } }] } },
    event: detailEvent({ FilePath: '/usr/share/doc' }),
    expected: true,
  },
  {
    name: 'anything-but wildcard "*/dir/*": dir/init/file (AWS-validated)',
    pattern: { detail: { FilePath: [{ 'anything-but': { wildcard: '*/dir/*' } }] } },
    event: detailEvent({ FilePath: 'dir/init/file' }),
    expected: true,
  },
  {
    name: 'anything-but wildcard "*/init/*": dir/init/file (AWS-validated)',
    pattern: { detail: { FilePath: [{ 'anything-but': { wildcard: '*/init/*' } }] } },
    event: detailEvent({ FilePath: 'dir/init/file' }),
    expected: false,
  },
  {
    name: 'anything-but wildcard "": a non-empty path (AWS-validated)',
    pattern: { detail: { FilePath: [{ 'anything-but': { wildcard: '' } }] } },
    event: detailEvent({ FilePath: 'dir/init/file' }),
    expected: true,
  },
  {
    name: 'operators table, Not: Weather is anything but Raining',
    pattern: { Weather: [{ 'anything-but': ['Raining'] }] },
    event: { Weather: 'Sunny' },
    expected: true,
  },
  {
    name: 'anything-but over an event array: one element is something else',
    pattern: { detail: { tags: [{ 'anything-but': 'Insider' }] } },
    event: macieEvent,
    expected: true,
  },
  {
    name: 'anything-but over an event array: every element excluded',
    pattern: { detail: { tags: [{ 'anything-but': ['Insider', 'Custom_Alert'] }] } },
    event: macieEvent,
    expected: false,
  },
  {
    name: 'anything-but with a null command (AWS-validated PutEvents routing)',
    pattern: {
      source: ['core.update-account-command'],
      detail: { command: [{ 'anything-but': ['no-message'] }] },
    },
    event: { ...detailEvent({ command: null, payload: 'baz' }), source: 'core.update-account-command' },
    expected: true,
  },
];

const numeric: Case[] = [
  {
    name: 'numeric: c-count 5, d-count 3, x-limit 301.8',
    pattern: numericPattern,
    event: rulerEvent,
    expected: true,
  },
  {
    name: 'numeric: > 0 excludes 0',
    pattern: numericPattern,
    event: withDetail(rulerEvent, { 'c-count': 0 }),
    expected: false,
  },
  {
    name: 'numeric: <= 5 excludes 6',
    pattern: numericPattern,
    event: withDetail(rulerEvent, { 'c-count': 6 }),
    expected: false,
  },
  {
    name: 'numeric: < 10 excludes 10',
    pattern: numericPattern,
    event: withDetail(rulerEvent, { 'd-count': 10 }),
    expected: false,
  },
  {
    name: 'numeric: = 3.018e2 excludes 301.81',
    pattern: numericPattern,
    event: withDetail(rulerEvent, { 'x-limit': 301.81 }),
    expected: false,
  },
  {
    name: 'numeric only matches JSON numbers (AWS-validated)',
    pattern: { detail: { 'c-count': [{ numeric: ['>', 0] }] } },
    event: detailEvent({ 'c-count': '5' }),
    expected: false,
  },
  {
    name: 'numeric never matches null (AWS-validated)',
    pattern: { detail: { 'c-count': [{ numeric: ['>', 0] }] } },
    event: detailEvent({ 'c-count': null }),
    expected: false,
  },
  {
    name: 'numeric: 101.0 > 100 (AWS-validated)',
    pattern: { number: [{ numeric: ['>', 100] }] },
    event: { number: 101.0 },
    expected: true,
  },
  {
    name: 'operators table, Numeric (equals): Price is 100',
    pattern: { Price: [{ numeric: ['=', 100] }] },
    event: { Price: 100 },
    expected: true,
  },
  {
    name: 'operators table, Numeric (equals): Price is 100.5',
    pattern: { Price: [{ numeric: ['=', 100] }] },
    event: { Price: 100.5 },
    expected: false,
  },
  {
    name: 'operators table, Numeric (range): 20 is in (10, 20]',
    pattern: { Price: [{ numeric: ['>', 10, '<=', 20] }] },
    event: { Price: 20 },
    expected: true,
  },
  {
    name: 'operators table, Numeric (range): 10 is not in (10, 20]',
    pattern: { Price: [{ numeric: ['>', 10, '<=', 20] }] },
    event: { Price: 10 },
    expected: false,
  },
  {
    name: 'numeric: >= is inclusive',
    pattern: { n: [{ numeric: ['>=', 200, '<', 500] }] },
    event: { n: 200 },
    expected: true,
  },
  {
    name: 'numeric: < in a range is exclusive',
    pattern: { n: [{ numeric: ['>=', 200, '<', 500] }] },
    event: { n: 500 },
    expected: false,
  },
  {
    name: 'numeric: negative bounds',
    pattern: { n: [{ numeric: ['>', -10, '<', -1] }] },
    event: { n: -5.5 },
    expected: true,
  },
  {
    name: 'numeric over an event array: one element in range',
    pattern: { n: [{ numeric: ['>', 10] }] },
    event: { n: [1, 2, 30] },
    expected: true,
  },
];

const ipAddress: Case[] = [
  {
    name: 'cidr 10.0.0.0/24 includes 10.0.0.0',
    pattern: { detail: { sourceIPAddress: [{ cidr: '10.0.0.0/24' }] } },
    event: detailEvent({ sourceIPAddress: '10.0.0.0' }),
    expected: true,
  },
  {
    name: 'cidr 10.0.0.0/24 includes 10.0.0.255',
    pattern: { detail: { sourceIPAddress: [{ cidr: '10.0.0.0/24' }] } },
    event: detailEvent({ sourceIPAddress: '10.0.0.255' }),
    expected: true,
  },
  {
    name: 'cidr 10.0.0.0/24 excludes 10.0.1.0',
    pattern: { detail: { sourceIPAddress: [{ cidr: '10.0.0.0/24' }] } },
    event: detailEvent({ sourceIPAddress: '10.0.1.0' }),
    expected: false,
  },
  {
    name: 'cidr 10.0.0.0/8 includes 10.0.0.33 (event-ruler)',
    pattern: { detail: { 'source-ip': [{ cidr: '10.0.0.0/8' }] } },
    event: rulerEvent,
    expected: true,
  },
  {
    name: 'cidr IPv6 /64 includes 2001:0db8:1234:1a00:0:0:0:0 (AWS-validated)',
    pattern: { detail: { sourceIPAddress: [{ cidr: '2001:db8:1234:1a00::/64' }] } },
    event: detailEvent({ sourceIPAddress: '2001:0db8:1234:1a00:0000:0000:0000:0000' }),
    expected: true,
  },
  {
    name: 'cidr IPv6 /64 excludes 2001:0db8:123f:1a01:: (AWS-validated)',
    pattern: { detail: { sourceIPAddress: [{ cidr: '2001:db8:1234:1a00::/64' }] } },
    event: detailEvent({ sourceIPAddress: '2001:0db8:123f:1a01:0000:0000:0000:0000' }),
    expected: false,
  },
  {
    name: 'cidr IPv6 compressed address inside the range',
    pattern: { ip: [{ cidr: '2001:db8::/32' }] },
    event: { ip: '2001:db8:1::1' },
    expected: true,
  },
  {
    name: 'cidr IPv6 with an embedded IPv4 address',
    pattern: { ip: [{ cidr: '::ffff:10.0.0.0/120' }] },
    event: { ip: '::ffff:10.0.0.7' },
    expected: true,
  },
  {
    name: 'cidr never matches a number (AWS-validated)',
    pattern: { detail: { sourceIPAddress: [{ cidr: '10.0.0.0/24' }] } },
    event: detailEvent({ sourceIPAddress: 123 }),
    expected: false,
  },
  {
    name: 'cidr never matches a non-IP string',
    pattern: { ip: [{ cidr: '10.0.0.0/24' }] },
    event: { ip: 'not-an-ip' },
    expected: false,
  },
  {
    name: 'an IPv4 cidr does not match an IPv6 address',
    pattern: { ip: [{ cidr: '0.0.0.0/0' }] },
    event: { ip: '2001:db8::1' },
    expected: false,
  },
];

const exists: Case[] = [
  {
    name: 'exists true: detail.state present',
    pattern: { detail: { state: [{ exists: true }] } },
    event: ec2Event,
    expected: true,
  },
  {
    name: 'exists true: no detail.state field (c-count is an object)',
    pattern: { detail: { state: [{ exists: true }] } },
    event: { 'detail-type': 'EC2 Instance State-change Notification', detail: { 'c-count': { c1: 100 } } },
    expected: false,
  },
  {
    name: 'exists false: no detail.c-count field',
    pattern: { detail: { 'c-count': [{ exists: false }] } },
    event: { detail: { state: ['initializing', 'running'] } },
    expected: true,
  },
  {
    name: 'exists false: c-count is not a leaf, so it counts as absent',
    pattern: { detail: { 'c-count': [{ exists: false }] } },
    event: { detail: { state: ['initializing', 'running'], 'c-count': { c1: 100 } } },
    expected: true,
  },
  {
    name: 'exists false: c-count present',
    pattern: { detail: { 'c-count': [{ exists: false }] } },
    event: rulerEvent,
    expected: false,
  },
  {
    name: 'example: events that have a description',
    pattern: { detail: { description: [{ exists: true }] } },
    event: detailEvent({ description: 'text' }),
    expected: true,
  },
  {
    name: 'example: events without a description',
    pattern: { detail: { description: [{ exists: true }] } },
    event: detailEvent({}),
    expected: false,
  },
  {
    name: 'operators table, Exists: ProductName exists',
    pattern: { ProductName: [{ exists: true }] },
    event: { ProductName: 'Widget' },
    expected: true,
  },
  {
    name: 'operators table, Does not exist: ProductName missing',
    pattern: { ProductName: [{ exists: false }] },
    event: { Other: 'x' },
    expected: true,
  },
  {
    name: 'exists true on a null value: null is a value',
    pattern: { detail: { responseElements: [{ exists: true }] } },
    event: autoscalingEvent,
    expected: true,
  },
  {
    name: 'exists on a nested leaf (AWS-validated)',
    pattern: { dynamodb: { presentKey: { S: [{ exists: true }] } } },
    event: { dynamodb: { id: { S: 'test1234' }, presentKey: { S: 'test123' } } },
    expected: true,
  },
  {
    name: 'exists false on a present nested leaf (AWS-validated)',
    pattern: { detail: { level1: { level2: { level4: [{ exists: false }] } } } },
    event: detailEvent({ level1: { level2: { level4: 'v' } } }),
    expected: false,
  },
  {
    name: 'exists true inside a list of objects: one element has the field (AWS-validated)',
    pattern: { detail: { automations: { id: [{ exists: true }] } } },
    event: detailEvent({ automations: [{ key1: 'value1' }, { id: 'match-does-exist' }, { key2: 'value2' }] }),
    expected: true,
  },
  {
    name: 'exists true on an empty array (AWS-validated)',
    pattern: { resources: [{ exists: true }] },
    event: autoscalingEvent,
    expected: false,
  },
  {
    name: 'exists false on an empty array',
    pattern: { resources: [{ exists: false }] },
    event: autoscalingEvent,
    expected: true,
  },
  {
    name: 'anything-but OR exists false: the field is absent (AWS-validated)',
    pattern: {
      dynamodb: { NewImage: { homemade: { S: [{ 'anything-but': ['roses'] }, { exists: false }] } } },
    },
    event: { dynamodb: { NewImage: { homemade: { N: '789' } } } },
    expected: true,
  },
  {
    name: 'anything-but OR exists false: the parent is absent (AWS-validated)',
    pattern: {
      dynamodb: { NewImage: { homemade: { S: [{ 'anything-but': ['roses'] }, { exists: false }] } } },
    },
    event: { dynamodb: { NewImage: { purchased: { N: '789' } } } },
    expected: true,
  },
  {
    name: 'anything-but OR exists false: ABCD is not roses (AWS-validated)',
    pattern: {
      dynamodb: { NewImage: { homemade: { S: [{ 'anything-but': ['roses'] }, { exists: false }] } } },
    },
    event: { dynamodb: { NewImage: { homemade: { S: 'ABCD', N: '1234' } } } },
    expected: true,
  },
  {
    name: 'anything-but OR exists false: roses is excluded and present',
    pattern: {
      dynamodb: { NewImage: { homemade: { S: [{ 'anything-but': ['roses'] }, { exists: false }] } } },
    },
    event: { dynamodb: { NewImage: { homemade: { S: 'roses' } } } },
    expected: false,
  },
  {
    name: 'several operators in one list OR together (AWS-validated)',
    pattern: { my_key: [{ exists: true }, { prefix: 'IGNORED' }, { suffix: 'IGNORED' }] },
    event: { my_key: 'my-value' },
    expected: true,
  },
];

const equalsIgnoreCase: Case[] = [
  {
    name: 'equals-ignore-case on detail-type',
    pattern: { 'detail-type': [{ 'equals-ignore-case': 'ec2 instance state-change notification' }] },
    event: ec2Event,
    expected: true,
  },
  {
    name: 'operators table, Equals (ignore case): Name is Alice',
    pattern: { Name: [{ 'equals-ignore-case': 'alice' }] },
    event: { Name: 'Alice' },
    expected: true,
  },
  {
    name: 'equals-ignore-case is not a prefix match',
    pattern: { Name: [{ 'equals-ignore-case': 'alice' }] },
    event: { Name: 'Alicia' },
    expected: false,
  },
  {
    name: 'operators table, Equals: Name is Alice',
    pattern: { Name: ['Alice'] },
    event: { Name: 'Alice' },
    expected: true,
  },
  {
    name: 'equals-ignore-case "" matches "" (AWS-validated)',
    pattern: { detail: { value: [{ 'equals-ignore-case': '' }] } },
    event: detailEvent({ value: '' }),
    expected: true,
  },
  {
    name: 'equals-ignore-case only applies to strings',
    pattern: { detail: { value: [{ 'equals-ignore-case': '5' }] } },
    event: detailEvent({ value: 5 }),
    expected: false,
  },
];

const wildcard: Case[] = [
  {
    name: 'operators table, Wildcard: a .png within dir',
    pattern: { FileName: [{ wildcard: 'dir/*.png' }] },
    event: { FileName: 'dir/image.png' },
    expected: true,
  },
  {
    name: 'wildcard * also spans slashes',
    pattern: { FileName: [{ wildcard: 'dir/*.png' }] },
    event: { FileName: 'dir/sub/image.png' },
    expected: true,
  },
  {
    name: 'wildcard: another extension',
    pattern: { FileName: [{ wildcard: 'dir/*.png' }] },
    event: { FileName: 'dir/image.jpg' },
    expected: false,
  },
  {
    name: 'wildcard: another folder',
    pattern: { FileName: [{ wildcard: 'dir/*.png' }] },
    event: { FileName: 'other/image.png' },
    expected: false,
  },
  {
    name: 'wildcard is anchored at both ends',
    pattern: { FileName: [{ wildcard: 'dir/*' }] },
    event: { FileName: 'xdir/icon.png' },
    expected: false,
  },
  {
    name: 'wildcard * matches zero characters',
    pattern: { FileName: [{ wildcard: '*.png' }] },
    event: { FileName: '.png' },
    expected: true,
  },
  {
    name: 'wildcard *Title* matches Title in the middle',
    pattern: { name: [{ wildcard: '*Title*' }] },
    event: { name: 'The Title Here' },
    expected: true,
  },
  {
    name: 'wildcard on an event bus ARN (AWS-validated)',
    pattern: { EventBusArn: [{ wildcard: 'arn:aws:events:us-east-1:*:event-bus/*' }] },
    event: { EventBusArn: 'arn:aws:events:us-east-1:123456789012:event-bus/myEventBus' },
    expected: true,
  },
  {
    name: 'wildcard with repeating sequences after a wildcard (AWS-validated)',
    pattern: { FileName: [{ wildcard: '/Users/*/dir/dir/dir/dir/dir/doc.txt' }] },
    event: { FileName: '/Users/ls_user/dir/dir/dir/dir/dir/doc.txt' },
    expected: true,
  },
  {
    name: 'wildcard /Users/*/doc.txt vs notmatchingdoc.txt (AWS-validated)',
    pattern: { FileName: [{ wildcard: '/Users/*/doc.txt' }] },
    event: { FileName: '/Users/ls_user/dir/dir/dir/dir/dir/notmatchingdoc.txt' },
    expected: false,
  },
  {
    name: 'wildcard \\* is a literal star',
    pattern: { name: [{ wildcard: 'value\\*end' }] },
    event: { name: 'value*end' },
    expected: true,
  },
  {
    name: 'wildcard \\* does not expand',
    pattern: { name: [{ wildcard: 'value\\*end' }] },
    event: { name: 'valueXend' },
    expected: false,
  },
  {
    name: 'wildcard \\\\ is a literal backslash',
    pattern: { name: [{ wildcard: 'a\\\\b' }] },
    event: { name: 'a\\b' },
    expected: true,
  },
  {
    name: 'wildcard \\\\ needs the backslash',
    pattern: { name: [{ wildcard: 'a\\\\b' }] },
    event: { name: 'ab' },
    expected: false,
  },
  {
    name: 'wildcard ? is not special',
    pattern: { source: [{ wildcard: 'com.example.?' }] },
    event: { source: 'com.example.a' },
    expected: false,
  },
  {
    name: 'wildcard only applies to strings',
    pattern: { n: [{ wildcard: '1*' }] },
    event: { n: 12 },
    expected: false,
  },
  {
    name: 'event-ruler: Simple*Service',
    pattern: { source: [{ wildcard: 'Simple*Service' }] },
    event: { source: 'SimpleQueueService' },
    expected: true,
  },
  {
    name: 'exact values never treat * or \\ specially (AWS-validated)',
    pattern: { detail: { escape_star: ['*'], escape_backslash: ['\\'] } },
    event: detailEvent({ escape_star: '*', escape_backslash: '\\' }),
    expected: true,
  },
];

const complexAndOr: Case[] = [
  {
    name: 'complex example: all conditions hold',
    pattern: complexPattern,
    event: rulerEvent,
    expected: true,
  },
  {
    name: 'complex example: x-limit 200 is excluded',
    pattern: complexPattern,
    event: withDetail(rulerEvent, { 'x-limit': 200 }),
    expected: false,
  },
  {
    name: 'complex example: state initializing is excluded',
    pattern: complexPattern,
    event: withDetail(rulerEvent, { state: 'initializing' }),
    expected: false,
  },
  {
    name: 'complex example: another day',
    pattern: complexPattern,
    event: { ...rulerEvent, time: '2017-10-03T00:00:00Z' },
    expected: false,
  },
  {
    name: 'event-ruler complex example with a cidr',
    pattern: {
      ...complexPattern,
      detail: { ...complexPattern.detail, 'source-ip': [{ cidr: '10.0.0.0/8' }] },
    },
    event: rulerEvent,
    expected: true,
  },
  { name: '$or example: the c-count branch holds', pattern: orPattern, event: rulerEvent, expected: true },
  {
    name: '$or example: only d-count < 10 holds (AWS-validated)',
    pattern: orPattern,
    event: detailEvent({ 'c-count': 0, 'd-count': 0, 'x-limit': 9.018e2 }),
    expected: true,
  },
  {
    name: '$or example: no branch holds (AWS-validated)',
    pattern: orPattern,
    event: detailEvent({ 'c-count': 0, 'd-count': 10, 'x-limit': 9.018e2 }),
    expected: false,
  },
  {
    name: '$or: source AND (metricName OR namespace), metricName',
    pattern: cloudwatchOrPattern,
    event: { source: 'aws.cloudwatch', metricName: 'CPUUtilization' },
    expected: true,
  },
  {
    name: '$or: source AND (metricName OR namespace), namespace',
    pattern: cloudwatchOrPattern,
    event: { source: 'aws.cloudwatch', namespace: 'AWS/ES' },
    expected: true,
  },
  {
    name: '$or: neither branch',
    pattern: cloudwatchOrPattern,
    event: { source: 'aws.cloudwatch', namespace: 'AWS/Lambda' },
    expected: false,
  },
  {
    name: '$or: the AND part fails',
    pattern: cloudwatchOrPattern,
    event: { source: 'aws.ec2', metricName: 'CPUUtilization' },
    expected: false,
  },
  {
    name: '$or: parallel ORs at two levels',
    pattern: {
      $or: [{ metricName: ['CPUUtilization', 'ReadLatency'] }, { namespace: ['AWS/EC2', 'AWS/ES'] }],
      detail: { $or: [{ source: ['aws.cloudwatch'] }, { 'detail-type': ['CloudWatch Alarm State Change'] }] },
    },
    event: { namespace: 'AWS/EC2', detail: { 'detail-type': 'CloudWatch Alarm State Change' } },
    expected: true,
  },
  {
    name: '$or: parallel ORs, the second fails',
    pattern: {
      $or: [{ metricName: ['CPUUtilization', 'ReadLatency'] }, { namespace: ['AWS/EC2', 'AWS/ES'] }],
      detail: { $or: [{ source: ['aws.cloudwatch'] }, { 'detail-type': ['CloudWatch Alarm State Change'] }] },
    },
    event: { namespace: 'AWS/EC2', detail: { 'detail-type': 'Other' } },
    expected: false,
  },
  {
    name: '$or with an AND inside: metricType AND namespace',
    pattern: {
      source: ['aws.cloudwatch'],
      $or: [
        { metricName: ['CPUUtilization', 'ReadLatency'] },
        { metricType: ['MetricType'], namespace: ['AWS/EC2', 'AWS/ES'] },
        { scope: ['Service'] },
      ],
    },
    event: { source: 'aws.cloudwatch', metricType: 'MetricType', namespace: 'AWS/ES' },
    expected: true,
  },
  {
    name: '$or with an AND inside: half of the AND is not enough',
    pattern: {
      source: ['aws.cloudwatch'],
      $or: [
        { metricName: ['CPUUtilization', 'ReadLatency'] },
        { metricType: ['MetricType'], namespace: ['AWS/EC2', 'AWS/ES'] },
        { scope: ['Service'] },
      ],
    },
    event: { source: 'aws.cloudwatch', metricType: 'MetricType' },
    expected: false,
  },
  {
    name: 'nested $or and AND',
    pattern: {
      source: ['aws.cloudwatch'],
      $or: [
        { metricName: ['CPUUtilization', 'ReadLatency'] },
        {
          metricType: ['MetricType'],
          namespace: ['AWS/EC2', 'AWS/ES'],
          $or: [{ metricId: [1234] }, { spaceId: [1000] }],
        },
        { scope: ['Service'] },
      ],
    },
    event: { source: 'aws.cloudwatch', metricType: 'MetricType', namespace: 'AWS/EC2', spaceId: 1000 },
    expected: true,
  },
  {
    name: 'nested $or: the inner OR fails',
    pattern: {
      source: ['aws.cloudwatch'],
      $or: [
        { metricName: ['CPUUtilization', 'ReadLatency'] },
        {
          metricType: ['MetricType'],
          namespace: ['AWS/EC2', 'AWS/ES'],
          $or: [{ metricId: [1234] }, { spaceId: [1000] }],
        },
        { scope: ['Service'] },
      ],
    },
    event: { source: 'aws.cloudwatch', metricType: 'MetricType', namespace: 'AWS/EC2', spaceId: 1 },
    expected: false,
  },
  {
    name: '$or that is an object is an ordinary field name (event-ruler backward compatibility)',
    pattern: {
      source: ['aws.cloudwatch'],
      $or: { metricType: ['MetricType'], namespace: ['AWS/EC2', 'AWS/ES'] },
    },
    event: { source: 'aws.cloudwatch', $or: { metricType: 'MetricType', namespace: 'AWS/EC2' } },
    expected: true,
  },
  {
    name: 'operators table, Or: PaymentType is Credit or Debit',
    pattern: { PaymentType: ['Credit', 'Debit'] },
    event: { PaymentType: 'Debit' },
    expected: true,
  },
  {
    name: 'operators table, Or (multiple fields): Location is New York',
    pattern: { $or: [{ Location: ['New York'] }, { Day: ['Monday'] }] },
    event: { Location: 'New York', Day: 'Friday' },
    expected: true,
  },
  {
    name: 'operators table, Or (multiple fields): neither',
    pattern: { $or: [{ Location: ['New York'] }, { Day: ['Monday'] }] },
    event: { Location: 'Boston', Day: 'Friday' },
    expected: false,
  },
  {
    name: 'operators table, And: New York and Monday',
    pattern: { Location: ['New York'], Day: ['Monday'] },
    event: { Location: 'New York', Day: 'Monday' },
    expected: true,
  },
  {
    name: 'operators table, And: only one holds',
    pattern: { Location: ['New York'], Day: ['Monday'] },
    event: { Location: 'New York', Day: 'Friday' },
    expected: false,
  },
  {
    name: 'a rule using many operators at once',
    pattern: {
      source: [{ exists: true }],
      'detail-type': [{ prefix: 'core.app' }],
      detail: {
        amount: [200],
        salary: [2000, 4000],
        admins: ['skyli', { prefix: 'hey' }, { prefix: 'ad' }],
        test1: [{ 'anything-but': 200 }],
        test4: [{ 'anything-but': { prefix: 'test4' } }],
        ip: [{ cidr: '10.102.1.0/24' }],
        'num-test5': [{ numeric: ['>=', 200, '<=', 500] }],
      },
    },
    event: {
      source: 'core.update-account-command',
      'detail-type': 'core.app.backend',
      detail: {
        amount: 200,
        salary: 2000,
        admins: 'admin',
        test1: 300,
        test4: 'this test4',
        ip: '10.102.1.100',
        'num-test5': 500,
      },
    },
    expected: true,
  },
];

const putEventsEnvelope: Json = {
  version: '0',
  id: '0b5c1a7e-7a0a-4d43-8f38-1f1d9c3c2a11',
  'detail-type': 'Corpus Run Completed',
  source: 'corpus.pipeline',
  account: '123456789012',
  time: '2024-05-01T12:00:00Z',
  region: 'eu-west-1',
  resources: ['arn:aws:states:eu-west-1:123456789012:execution:pipeline:run-1'],
  detail: { runId: 'run-1' },
};

const topLevelFields: Case[] = [
  {
    name: 'top-level: source',
    pattern: { source: ['corpus.pipeline'] },
    event: putEventsEnvelope,
    expected: true,
  },
  {
    name: 'top-level: detail-type',
    pattern: { 'detail-type': ['Corpus Run Completed'] },
    event: putEventsEnvelope,
    expected: true,
  },
  {
    name: 'top-level: account',
    pattern: { account: ['123456789012'] },
    event: putEventsEnvelope,
    expected: true,
  },
  {
    name: 'top-level: another account',
    pattern: { account: ['210987654321'] },
    event: putEventsEnvelope,
    expected: false,
  },
  { name: 'top-level: region', pattern: { region: ['eu-west-1'] }, event: putEventsEnvelope, expected: true },
  {
    name: 'top-level: region prefix',
    pattern: { region: [{ prefix: 'us-' }] },
    event: putEventsEnvelope,
    expected: false,
  },
  {
    name: 'top-level: resources (prefix on an array element)',
    pattern: { resources: [{ prefix: 'arn:aws:states:' }] },
    event: putEventsEnvelope,
    expected: true,
  },
  {
    name: 'top-level: time prefix',
    pattern: { time: [{ prefix: '2024-05-01' }] },
    event: putEventsEnvelope,
    expected: true,
  },
  {
    name: 'top-level: id',
    pattern: { id: ['0b5c1a7e-7a0a-4d43-8f38-1f1d9c3c2a11'] },
    event: putEventsEnvelope,
    expected: true,
  },
  { name: 'top-level: version', pattern: { version: ['0'] }, event: putEventsEnvelope, expected: true },
];

describe('matchesPattern: documented examples', () => {
  const sections: [string, Case[]][] = [
    ['Event patterns', eventPatternsPage],
    ['Null values and empty strings', nullAndEmptyPage],
    ['Arrays', arraysPage],
    ['Prefix and suffix', prefixSuffix],
    ['Anything-but', anythingBut],
    ['Numeric', numeric],
    ['IP address', ipAddress],
    ['Exists', exists],
    ['Equals-ignore-case', equalsIgnoreCase],
    ['Wildcard', wildcard],
    ['Complex and $or', complexAndOr],
    ['Top-level fields', topLevelFields],
  ];
  for (const [section, cases] of sections) {
    describe(section, () => {
      test.each(cases)('$name', ({ pattern, event, expected }) => {
        expect(matchesPattern(pattern, event)).toBe(expected);
      });
    });
  }

  test('every section holds both matching and non-matching cases', () => {
    const all = sections.flatMap(([, cases]) => cases);
    expect(all.length).toBeGreaterThan(150);
    expect(all.filter((c) => c.expected).length).toBeGreaterThan(40);
    expect(all.filter((c) => !c.expected).length).toBeGreaterThan(40);
  });
});

describe('validatePattern: malformed patterns', () => {
  const invalid: [string, unknown, string][] = [
    ['not JSON', '{"not": closed mark"', 'Filter is not valid JSON'],
    ['an array', '["not", "a", "dict"]', 'Filter is not an object'],
    ['a string value (AWS-validated)', { string: 'my-value' }, '"string" must be an object or an array'],
    ['a number value (AWS-validated)', { int: 42 }, '"int" must be an object or an array'],
    ['an empty array (AWS-validated)', { resources: [] }, 'Empty arrays are not allowed'],
    [
      'an array inside the values',
      { a: [['x']] },
      'Match value must be String, number, true, false, or null',
    ],
    [
      'two keys in a match expression',
      { a: [{ prefix: 'x', suffix: 'y' }] },
      'Only one key allowed in match expression',
    ],
    ['an unknown operator (AWS-validated)', { my_key: [{ EXISTS: true }] }, 'Unrecognized match type EXISTS'],
    [
      'an upper-case operator (AWS-validated)',
      { detail: { equal: [{ NUMERIC: ['=', 5] }] } },
      'Unrecognized match type NUMERIC',
    ],
    [
      'a numeric prefix (AWS-validated)',
      { time: [{ prefix: 123 }] },
      'prefix match pattern must be a string',
    ],
    [
      'a list prefix (AWS-validated)',
      { time: [{ prefix: ['2022-07-13'] }] },
      'prefix match pattern must be a string',
    ],
    [
      'a numeric suffix (AWS-validated)',
      { FileName: [{ suffix: 123 }] },
      'suffix match pattern must be a string',
    ],
    [
      'a list suffix (AWS-validated)',
      { FileName: [{ suffix: ['.png'] }] },
      'suffix match pattern must be a string',
    ],
    [
      'prefix with an unknown inner key',
      { a: [{ prefix: { wildcard: 'x' } }] },
      'Unsupported prefix pattern: wildcard',
    ],
    [
      'a list equals-ignore-case (AWS-validated)',
      { 'detail-type': [{ 'equals-ignore-case': ['ec2'] }] },
      'equals-ignore-case match pattern must be a string',
    ],
    [
      'an object equals-ignore-case (AWS-validated)',
      { 'detail-type': [{ 'equals-ignore-case': { prefix: 'ec2' } }] },
      'equals-ignore-case match pattern must be a string',
    ],
    [
      'a numeric wildcard (AWS-validated)',
      { EventBusArn: [{ wildcard: 123 }] },
      'wildcard match pattern must be a string',
    ],
    [
      'a list wildcard (AWS-validated)',
      { EventBusArn: [{ wildcard: ['arn:*'] }] },
      'wildcard match pattern must be a string',
    ],
    [
      'consecutive wildcards (AWS-validated)',
      { EventBusArn: [{ wildcard: 'arn:aws:events:us-east-1:**:event-bus/*' }] },
      'Consecutive wildcard characters at pos 26',
    ],
    [
      'too many wildcards (AWS-validated)',
      { EventBusArn: [{ wildcard: '*:*:*:*:*:event-bus/*' }] },
      'Rule is too complex - try using fewer wildcard characters or fewer repeating character sequences after a wildcard character',
    ],
    [
      'a backslash escaping another character',
      { a: [{ wildcard: 'a\\b' }] },
      'Invalid escape character at pos 1',
    ],
    [
      'exists that is not a boolean',
      { a: [{ exists: 'yes' }] },
      'exists match pattern must be either true or false.',
    ],
    ['numeric that is not an array', { a: [{ numeric: 5 }] }, 'Value of numeric must be an array.'],
    ['an empty numeric', { a: [{ numeric: [] }] }, 'Invalid member in numeric match: ]'],
    ['numeric starting with a number', { a: [{ numeric: [5, '>'] }] }, 'Invalid member in numeric match: 5'],
    [
      'an unknown numeric operator',
      { a: [{ numeric: ['!=', 5] }] },
      'Unrecognized numeric range operator: !=',
    ],
    ['a non-numeric equals', { a: [{ numeric: ['=', '5'] }] }, 'Value of equals must be numeric'],
    [
      'a missing upper value (AWS-validated)',
      { detail: { 'c-count': [{ numeric: ['>', 0, '<'] }] } },
      'Value of < must be numeric',
    ],
    [
      'two lower bounds (AWS-validated)',
      { detail: { 'c-count': [{ numeric: ['>', 0, '>', 0] }] } },
      'Bad numeric range operator: >',
    ],
    ['a range after <', { a: [{ numeric: ['<', 5, '>', 1] }] }, 'Too many elements in numeric expression'],
    ['bottom above top', { a: [{ numeric: ['>', 10, '<', 5] }] }, 'Bottom must be less than top'],
    [
      'too many range terms',
      { a: [{ numeric: ['>', 1, '<', 5, '=', 3] }] },
      'Too many terms in numeric range expression',
    ],
    [
      'a CIDR without a mask (AWS-validated)',
      { ip: [{ cidr: '10.0.0.0' }] },
      "Malformed CIDR, one '/' required",
    ],
    [
      'a CIDR with a bad mask (AWS-validated)',
      { ip: [{ cidr: '10.0.0.0/xx' }] },
      'Malformed CIDR, mask bits must be an integer',
    ],
    [
      'a CIDR with a bad IPv4 address (AWS-validated)',
      { ip: [{ cidr: 'xx.11.xx/24' }] },
      'Nonstandard IP address: xx.11.xx',
    ],
    [
      'a CIDR with a bad IPv6 address (AWS-validated)',
      { ip: [{ cidr: 'xxxx:db8:1234:1a00::/64' }] },
      'Nonstandard IP address: xxxx:db8:1234:1a00::',
    ],
    [
      'a CIDR that is a list (AWS-validated)',
      { ip: [{ cidr: ['bad-type'] }] },
      'prefix match pattern must be a string',
    ],
    [
      'a CIDR mask too large',
      { ip: [{ cidr: '10.0.0.0/33' }] },
      'Malformed CIDR, mask bits must be between 0 and 32',
    ],
    [
      'anything-but null',
      { a: [{ 'anything-but': null }] },
      'Value of anything-but must be an array or single string/number value.',
    ],
    [
      'anything-but list with null',
      { a: [{ 'anything-but': ['x', null] }] },
      'Inside anything but list, start|null|boolean is not supported.',
    ],
    [
      'anything-but with an unknown inner key',
      { a: [{ 'anything-but': { numeric: ['>', 1] } }] },
      'Unsupported anything-but pattern: numeric',
    ],
    [
      'anything-but numeric prefix (AWS-validated)',
      { detail: { state: [{ 'anything-but': { prefix: 123 } }] } },
      'prefix/suffix match pattern must be a string',
    ],
    [
      'anything-but prefix list with a number (AWS-validated)',
      { detail: { state: [{ 'anything-but': { prefix: [123, 'test'] } }] } },
      'prefix/suffix match pattern must be a string',
    ],
    [
      'anything-but numeric suffix (AWS-validated)',
      { detail: { FileName: [{ 'anything-but': { suffix: 123 } }] } },
      'prefix/suffix match pattern must be a string',
    ],
    [
      'anything-but empty prefix',
      { a: [{ 'anything-but': { prefix: '' } }] },
      'Null prefix/suffix not allowed',
    ],
    [
      'anything-but prefix ignoring case (AWS-validated)',
      { detail: { FileName: [{ 'anything-but': { prefix: { 'equals-ignore-case': 'file' } } }] } },
      'Value of anything-but must be an array or single string/number value.',
    ],
    [
      'anything-but suffix ignoring case (AWS-validated)',
      { detail: { FileName: [{ 'anything-but': { suffix: { 'equals-ignore-case': '.png' } } }] } },
      'Value of anything-but must be an array or single string/number value.',
    ],
    [
      'anything-but equals-ignore-case number (AWS-validated)',
      { detail: { state: [{ 'anything-but': { 'equals-ignore-case': 123 } }] } },
      'Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.',
    ],
    [
      'anything-but equals-ignore-case number list (AWS-validated)',
      { detail: { state: [{ 'anything-but': { 'equals-ignore-case': [123, 456] } }] } },
      'Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.',
    ],
    [
      'anything-but wildcard number (AWS-validated)',
      { detail: { FilePath: [{ 'anything-but': { wildcard: 123 } }] } },
      'wildcard match pattern must be a string',
    ],
    [
      'anything-but wildcard list with a number (AWS-validated)',
      { detail: { state: [{ 'anything-but': { wildcard: [123, '*/dir/*'] } }] } },
      'wildcard match pattern must be a string',
    ],
    [
      'an invalid value inside an $or branch',
      { $or: [{ a: ['x'] }, { b: 'y' }] },
      '"b" must be an object or an array',
    ],
  ];

  test.each(invalid)('%s', (_name, pattern, reason) => {
    let caught: unknown;
    try {
      validatePattern(pattern);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidEventPatternError);
    const error = caught as InvalidEventPatternError;
    expect(error.name).toBe('InvalidEventPatternError');
    expect(error.code).toBe('InvalidEventPatternException');
    expect(error.reason.startsWith(reason)).toBe(true);
    expect(error.message).toBe(`Event pattern is not valid. Reason: ${error.reason}`);
  });

  test('matchesPattern validates the pattern before matching', () => {
    expect(() => matchesPattern({ source: 'aws.ec2' }, ec2Event)).toThrow(InvalidEventPatternError);
  });

  test('valid patterns pass', () => {
    for (const pattern of [
      ec2TerminationPattern,
      numericPattern,
      complexPattern,
      orPattern,
      cloudwatchOrPattern,
      {},
    ]) {
      expect(() => validatePattern(pattern)).not.toThrow();
    }
  });
});

describe('events and compiled patterns', () => {
  test('events can be JSON text; non-objects are refused', () => {
    expect(matchesPattern(ec2TerminationPattern, JSON.stringify(ec2Event))).toBe(true);
    expect(() => matchesPattern({}, '[1, 2]')).toThrow(InvalidEventError);
    expect(() => matchesPattern({}, 'not json')).toThrow(InvalidEventError);
    expect(() => matchesPattern({}, 42)).toThrow(InvalidEventError);
  });

  test('a compiled pattern keeps its source and matches flattened events', () => {
    const compiled = compilePattern(JSON.stringify(complexPattern));
    expect(compiled.source).toBe(JSON.stringify(complexPattern));
    const flat = flattenEvent(rulerEvent);
    expect(compiled.matches(flat)).toBe(true);
    expect(compilePattern(ec2TerminationPattern).matches(flat)).toBe(false);
    expect(compiled.matches(without(rulerEvent, 'c-count'))).toBe(false);
  });

  test('array consistency holds across levels of nesting', () => {
    const event = {
      detail: {
        items: [
          { sku: 'a', tags: [{ k: 'color', v: 'red' }], qty: 1 },
          { sku: 'b', tags: [{ k: 'color', v: 'blue' }], qty: 2 },
        ],
      },
    };
    expect(
      matchesPattern({ detail: { items: { sku: ['b'], tags: { v: ['blue'] }, qty: [2] } } }, event),
    ).toBe(true);
    expect(matchesPattern({ detail: { items: { sku: ['a'], tags: { v: ['blue'] } } } }, event)).toBe(false);
    expect(matchesPattern({ detail: { items: { sku: ['a'], qty: [2] } } }, event)).toBe(false);
  });
});
