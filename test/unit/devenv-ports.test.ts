// Busy ports, the first-minute error of the demo and the tests on a machine where the system's
// own Prosody or ejabberd listens on every address: the devenv refuses before starting anything,
// with a PortsBusyError naming the process that holds the port and what to do. Real sockets,
// held by this test process (no server is started).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { after, describe, it } from 'node:test';
import { describeBusyPorts, listenersOn } from '../../src/devenv/ports.ts';
import { PortsBusyError, PORTS, startXmppEnv } from '../../src/devenv/servers.ts';

const servers: Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

async function listen(host: string, port: number): Promise<number> {
  const server = createServer();
  servers.push(server);
  server.listen(port, host);
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

// 127.255.x: the devenv's own addresses (derived from PIDs) never use 255 as second octet.
const BASE = `127.255.${process.pid % 256}`;

describe('busy ports', () => {
  it('startXmppEnv refuses with PortsBusyError naming this process when its c2s port is taken on its address', async () => {
    await listen(`${BASE}.2`, PORTS.c2s);
    await assert.rejects(startXmppEnv({ ipBase: BASE, ejabberd: false }), (err: unknown) => {
      assert.ok(err instanceof PortsBusyError, String(err));
      assert.match(err.message, new RegExp(`^cannot start Prosody \\(alpha\\.test\\) on ${BASE.replace(/\./g, '\\.')}\\.2: ports already in use: ${PORTS.c2s} by node \\(pid ${process.pid}\\) listening on ${BASE.replace(/\./g, '\\.')}\\.2; another Hermod demo, test or benchmark`));
      return true;
    });
  });

  it('a listener on every address is found for any loopback address, and the message says to stop it', async () => {
    const port = await listen('0.0.0.0', 0);
    const found = listenersOn(`${BASE}.3`, [port]);
    assert.deepEqual(found.map((l) => [l.address, l.port, l.pid, l.command]), [['0.0.0.0', port, process.pid, 'node']]);
    const msg = describeBusyPorts('ejabberd (beta.test)', `${BASE}.3`, [port]);
    assert.match(msg, new RegExp(`ports already in use: ${port} by node \\(pid ${process.pid}\\) listening on 0\\.0\\.0\\.0; a server listening on every address takes these ports on all loopback addresses too: stop it or make it listen on one address`));
  });
});
