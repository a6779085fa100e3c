/** The only key pair s3rver accepts; every local client signs with it (the other emulators accept any). */
export const LOCAL_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
