import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Server } from 'node:net';

/**
 * Starts `server` listening on `host` (port 0 picks a free one) and returns the bound port and the `http://` endpoint
 * clients dial. Shared by the local runtime's HTTP servers.
 */
export async function listenLocal(
  server: Server,
  port: number,
  host: string,
): Promise<{ port: number; endpoint: string }> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return { port: bound, endpoint: `http://${urlHost}:${bound}` };
}

/**
 * Stops an HTTP server: no new connections, and the open ones (idle keep-alive sockets of SDK clients would hold
 * close() open) closed at once. Shared by the local runtime's HTTP servers.
 */
export function closeServer(server: HttpServer): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}
