// The XSLT engine with real saxon-js: compile once (cached by content), precise compile errors,
// parameters, JSON reachable through json-to-xml, and run-time failures bounded and reported.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { MemoryStore } from '../../src/store/memory.ts';
import { Quarantine, QUARANTINE_SPACE } from '../../src/transform/quarantine.ts';
import { StylesheetError, TransformError, XsltEngine } from '../../src/transform/xslt.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'hermod-xslt-'));
const engine = new XsltEngine({ timeoutMs: 2_000, maxOutput: 10_000 });
after(async () => {
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

const sheet = (name: string, body: string): string => {
  const file = path.join(dir, name);
  writeFileSync(file, `<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:xs="http://www.w3.org/2001/XMLSchema" exclude-result-prefixes="xs">\n${body}\n</xsl:stylesheet>\n`);
  return file;
};

describe('XSLT engine', () => {
  it('transforms with parameters and reads JSON through json-to-xml', async () => {
    const file = sheet(
      'ok.xsl',
      `<xsl:param name="partner" as="xs:string"/>
  <xsl:template match="/">
    <note from="{$partner}"><xsl:value-of select="json-to-xml(string(/doc))//*[@key='title']"/></note>
  </xsl:template>`,
    );
    const compiled = await engine.compile(file);
    const out = await engine.transform(compiled, `<doc>{"title": "Hello", "n": 1}</doc>`, { partner: 'pubsub.beta.test' });
    assert.match(out, /<note from="pubsub\.beta\.test">Hello<\/note>/);
    const again = await engine.compile(file);
    assert.equal(again.hash, compiled.hash, 'same content, same compiled stylesheet');
  });

  it('reports a stylesheet that does not compile with file, line and message', async () => {
    const file = sheet('bad.xsl', `<xsl:template match="/">\n<out><xsl:value-of select="1 +"/></out>\n</xsl:template>`);
    await assert.rejects(engine.compile(file), (err: unknown) => {
      assert.ok(err instanceof StylesheetError);
      assert.equal(err.file, file);
      assert.equal(err.line, 3);
      assert.match(err.detail, /XPST0003/);
      return true;
    });
  });

  it('turns xsl:message terminate, runaway loops and oversized output into TransformErrors and keeps working', async () => {
    const terminate = await engine.compile(sheet('terminate.xsl', `<xsl:template match="/"><xsl:message terminate="yes">no title</xsl:message></xsl:template>`));
    await assert.rejects(engine.transform(terminate, '<x/>'), (err: unknown) => err instanceof TransformError && /no title/.test(err.message));
    const loop = await engine.compile(
      sheet('loop.xsl', `<xsl:template match="/"><xsl:call-template name="f"><xsl:with-param name="n" select="0"/></xsl:call-template></xsl:template>
  <xsl:template name="f"><xsl:param name="n"/><xsl:if test="$n ge 0"><xsl:call-template name="f"><xsl:with-param name="n" select="$n + 1"/></xsl:call-template></xsl:if></xsl:template>`),
    );
    await assert.rejects(engine.transform(loop, '<x/>'), (err: unknown) => err instanceof TransformError);
    const big = await engine.compile(sheet('big.xsl', `<xsl:template match="/"><out><xsl:for-each select="1 to 5000">xxxxx</xsl:for-each></out></xsl:template>`));
    await assert.rejects(engine.transform(big, '<x/>'), /above the limit/);
    const ok = await engine.compile(sheet('fine.xsl', `<xsl:template match="/"><fine/></xsl:template>`));
    assert.match(await engine.transform(ok, '<x/>'), /<fine\/>/);
  });
});

describe('quarantine', () => {
  it('keeps entries durably, lists, shows, marks for retry and drops them', async () => {
    const q = new Quarantine(new MemoryStore().state(QUARANTINE_SPACE));
    const e = await q.add({ service: 'pubsub.alpha.test', node: '/tags/x', itemId: 'doc-1', payload: '<entry/>', reason: 'XTMM9000: no title', stylesheet: 'a.xsl' });
    assert.deepEqual((await q.list()).map((x) => x.id), [e.id]);
    assert.equal((await q.get(e.id))?.reason, 'XTMM9000: no title');
    assert.equal(await q.retry(e.id), true);
    assert.deepEqual(await q.list(), []);
    assert.deepEqual((await q.pendingRetries()).map((x) => x.itemId), ['doc-1']);
    assert.equal(await q.drop(e.id), true);
    assert.deepEqual(await q.pendingRetries(), []);
    assert.equal(await q.drop(e.id), false);
  });

  it("imports an older Hermod's quarantine folder (entries and retry marks) into the store once", async () => {
    const dataDir = path.join(dir, 'old-site');
    mkdirSync(path.join(dataDir, 'quarantine', 'retry'), { recursive: true });
    const old = (itemId: string): { id: string; at: number; service: string; node: string; itemId: string; payload: string; reason: string; attempts: number } => {
      const id = Quarantine.idOf({ service: 's', node: 'n', itemId });
      return { id, at: 1, service: 's', node: 'n', itemId, payload: '<x/>', reason: 'r', attempts: 1 };
    };
    writeFileSync(path.join(dataDir, 'quarantine', `${old('a').id}.json`), JSON.stringify(old('a')));
    writeFileSync(path.join(dataDir, 'quarantine', 'retry', `${old('b').id}.json`), JSON.stringify(old('b')));
    const store = new MemoryStore();
    const q = new Quarantine(store.state(QUARANTINE_SPACE), { legacyDir: dataDir });
    assert.deepEqual((await q.list()).map((e) => e.itemId), ['a']);
    assert.deepEqual((await q.pendingRetries()).map((e) => e.itemId), ['b']);
    assert.equal(existsSync(path.join(dataDir, 'quarantine')), false);
    assert.equal(existsSync(path.join(dataDir, 'quarantine.imported')), true);
    const again = new Quarantine(store.state(QUARANTINE_SPACE), { legacyDir: dataDir });
    assert.deepEqual((await again.list()).map((e) => e.itemId), ['a'], 'from the store, not imported twice');
  });
});
