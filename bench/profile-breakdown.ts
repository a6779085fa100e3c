/**
 * Where Plan's CPU goes, from the V8 CPU profiles of one plan child (`BENCH_PROFILE_DIR`): every sample that is not
 * idle goes to one task, Plan's own code by the innermost Plan function on its stack, the SDK's hashing and copying by
 * the sampled function, the rest to "SDK requests, HTTP, streams". Prints each task's share of the busy samples of
 * all the profiles given (a process writes one per thread: `CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile`).
 *
 *   npx tsx bench/profile-breakdown.ts <dir>/CPU.*.<pid>.*.cpuprofile
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Plan's tasks, by the names of its functions (the bench bundles unminified, so the names survive). */
const PLAN_TASKS: [string, RegExp][] = [
  [
    'validate: decode lines, JSON.parse, checks',
    /^(parseBlock|take|readRecord|nestedDeeperThan|templateRequest|detectFormat|normaliseId|cleanLine|isNativeMessagesBody|hasNonConverseFields|parseLine)$/,
  ],
  ['canonical JSON (sort keys, serialize)', /^(canonicalJson|sortedData|canonicalWalk)$/],
  ['content hash (SHA-256)', /^sha256$/],
  ['encode item lines', /^(add|finish|reserve)$/],
  [
    'second pass (read items, cut lines, shard files)',
    /^(writeShards|place|readLineBuffers|cutItemLine|shardFileFor|toTailRaw|closeShardFile|writeLine)$/,
  ],
  ['ledger lookups', /^lookupPublished$/],
  ['items and failures writer', /^(writeLines|writeFailure|flush)$/],
  ['duplicate tracker', /^(check|hash64|grow)$/],
  [
    'cut blocks, hand over to the worker',
    /^(cutBlocks|ownedConcat|countLines|parseCorpus|settle|lastIndexIn|splitAt)$/,
  ],
  ['corpus pass bookkeeping', /^(readCorpus|writeOldestChunk|submitChunk|countToProcess|recordFailure)$/],
];

/** Native work named by the sampled function itself (name, and where it comes from). */
const LEAF_TASKS: [string, RegExp, RegExp][] = [
  ['uploads: SigV4 payload SHA-256 (SDK)', /^update$/, /hash/],
  ['uploads: CRC32 checksum (SDK)', /^crc32$/, /zlib/],
  ['buffer copies (Buffer.concat)', /^_copyActual$/, /buffer/],
  ['messages between threads', /^postMessage$/, /.*/],
];

const busy = new Map<string, number>();
let total = 0;
for (const file of process.argv.slice(2)) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const nodes = new Map<number, ProfileNode>();
  const parents = new Map<number, number>();
  for (const node of profile.nodes) {
    nodes.set(node.id, node);
    for (const child of node.children ?? []) parents.set(child, node.id);
  }
  const memo = new Map<number, string | undefined>();
  const planTask = (id: number | undefined): string | undefined => {
    if (id === undefined) return undefined;
    if (memo.has(id)) return memo.get(id);
    const name = nodes.get(id)?.callFrame.functionName ?? '';
    const task = PLAN_TASKS.find(([, pattern]) => pattern.test(name))?.[0] ?? planTask(parents.get(id));
    memo.set(id, task);
    return task;
  };
  profile.samples.forEach((id, i) => {
    const node = nodes.get(id);
    const micros = profile.timeDeltas[i] ?? 0;
    if (!node || node.callFrame.functionName === '(idle)') return;
    const { functionName, url } = node.callFrame;
    const own = planTask(id);
    const leaf = LEAF_TASKS.find(([, name, from]) => name.test(functionName) && from.test(url))?.[0];
    // Plan's own SHA-256 also ends in the crypto binding: it is the content hash, not the SDK's.
    const task =
      functionName === '(garbage collector)'
        ? 'garbage collection'
        : ((own === 'content hash (SHA-256)' ? own : leaf) ?? own ?? 'SDK requests, HTTP, streams, start-up');
    busy.set(task, (busy.get(task) ?? 0) + micros);
    total += micros;
  });
}
for (const [task, micros] of [...busy].sort((a, b) => b[1] - a[1])) {
  console.log(`${((100 * micros) / total).toFixed(1).padStart(5)}%  ${task}`);
}
