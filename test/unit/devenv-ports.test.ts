// Busy ports, the first-minute error of the demo and the tests on a machine where the system's
// own Prosody or ejabberd listens on every address: the message names the process that holds
// the port and what to do. Real sockets, held by this test process. (startXmppEnv refusing with
// it: test/devenv.test.ts, which runs as root.)
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { after, describe, it } from 'node:test';
import { describeBusyPorts, listenersOn } from '../../src/devenv/ports.ts';

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

const BASE = `127.255.${process.pid % 256}`;

describe('busy ports', () => {
  it('a listener on every address is found for any loopback address, and the message says to stop it', async () => {
    const port = await listen('0.0.0.0', 0);
    const found = listenersOn(`${BASE}.3`, [port]);
    assert.deepEqual(found.map((l) => [l.address, l.port, l.pid, l.command]), [['0.0.0.0', port, process.pid, 'node']]);
    const msg = describeBusyPorts('ejabberd (beta.test)', `${BASE}.3`, [port]);
    assert.match(msg, new RegExp(`ports already in use: ${port} by node \\(pid ${process.pid}\\) listening on 0\\.0\\.0\\.0; a server listening on every address takes these ports on all loopback addresses too: stop it or make it listen on one address`));
  });
});
