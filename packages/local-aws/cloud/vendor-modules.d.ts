// Ambient declarations for the untyped CommonJS package s3rver 3.7.1 (dynalite is loaded lazily and typed where
// it is loaded, in emulators.ts).
// Only the members the local runtime uses are declared.

declare module 's3rver' {
  import type { EventEmitter } from 'node:events';
  import type { AddressInfo } from 'node:net';
  import type { Server } from 'node:http';

  /** Options of the s3rver constructor. */
  interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    serviceEndpoint?: string;
    configureBuckets?: Array<{ name: string; configs?: Array<string | Buffer> }>;
  }

  /** An in-process S3 server (a Koa application). Emits 'event' with AWS S3 notification records. */
  class S3rver extends EventEmitter {
    constructor(options?: S3rverOptions);
    run(): Promise<AddressInfo>;
    close(): Promise<void>;
    httpServer?: Server;
    /** The filesystem store. */
    store: { getMetadata(bucket: string, key: string): Promise<Record<string, string | undefined>> };
  }
  export = S3rver;
}

declare module 's3rver/lib/controllers/bucket' {
  /** The Koa handler for GET Bucket (ListObjects / ListObjectsV2); looked up on this module per request. */
  export let getBucket: (ctx: unknown) => Promise<void>;
}

declare module 's3rver/lib/models/error' {
  /** s3rver's error type, rendered as an S3 XML error response. */
  class S3Error extends Error {
    constructor(code: string, message: string, detail?: Record<string, unknown>);
    code: string;
  }
  export = S3Error;
}
