// The failure-lane consumer reads its environment when it is imported, as in Lambda. test/setup/lambda-env.ts may
// predate the runs table and the claim lease: this supplies them (imported before the consumer).
process.env.RUNS_TABLE ??= 'runs-table';
process.env.CLAIM_LEASE_SECONDS ??= '1200';

export {};
