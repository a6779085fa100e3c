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
    store: S3rverFilesystemStore;
  }

  /** s3rver's filesystem store (lib/stores/filesystem.js). */
  interface S3rverFilesystemStore {
    getMetadata(bucket: string, key: string): Promise<Record<string, string | undefined>>;
    getBucket(bucket: string): Promise<unknown>;
    existsObject(bucket: string, key: string): Promise<boolean>;
    /** The path of an object's file (`resource` 'object'), or of a bucket's `uploads` folder when `key` is undefined. */
    getResourcePath(bucket: string, key: string | undefined, resource: string): string;
    /** Stores part `partNumber` of upload `uploadId` from a stream; resolves with its size and MD5 (hex). */
    putPart(
      bucket: string,
      uploadId: string,
      partNumber: number,
      content: NodeJS.ReadableStream,
    ): Promise<{ size: number; md5: string }>;
    /** Assembles the parts (ETags without quotes) into the upload's object. */
    putObjectMultipart(
      bucket: string,
      uploadId: string,
      parts: Array<{ number: number; etag: string }>,
    ): Promise<{ size: number; md5: string }>;
  }
  export = S3rver;
}

declare module 's3rver/lib/controllers/bucket' {
  /** The Koa handler for GET Bucket (ListObjects / ListObjectsV2); looked up on this module per request. */
  export let getBucket: (ctx: unknown) => Promise<void>;
}

declare module 's3rver/lib/middleware/authentication' {
  /** Makes s3rver's request-signature middleware; it reads `ctx.params.bucket` and `ctx.params.key`. */
  function authenticationMiddleware(): (ctx: unknown, next: () => Promise<unknown>) => Promise<unknown>;
  export = authenticationMiddleware;
}

declare module 's3rver/lib/models/error' {
  /** s3rver's error type, rendered as an S3 XML error response. */
  class S3Error extends Error {
    constructor(code: string, message: string, detail?: Record<string, unknown>);
    code: string;
  }
  export = S3Error;
}
