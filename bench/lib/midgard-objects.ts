// Midgard objects for the benchmark and tests: midgard_article objects serialized as
// midgard-core sends them (docs: /work/shared/design/FORMATS.md "the replication XML format"),
// of realistic sizes (0.8–4 KiB: title, abstract, a few paragraphs of HTML content, metadata, one
// parameter), the same in every run (a small deterministic generator).

import { createHash } from 'node:crypto';

const TOPIC = '51bd22ef3b8b066c7e72680ab6ad8845';
const PERSON = '71140207f06e996d5c124d58e11fa3cd';
const WORDS = 'midgard replication content topic article site news event photo community open source framework release meetup page editor'.split(' ');

const guidOf = (label: string): string => createHash('md5').update(label).digest('hex');
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Words chosen by a small deterministic generator (the same objects in every run). */
function text(seed: number, words: number): string {
  let x = seed * 2654435761 + 1;
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out.push(WORDS[x % WORDS.length] as string);
  }
  return out.join(' ');
}

/** A serialized midgard_article (with one parameter) as midgard-core sends it; `revised` as `HH:MM:SS` after 2026-11-30 00:00. */
export function article(label: string, i: number, revision = 1): { guid: string; xml: string } {
  const guid = guidOf(`${label}-${i}`);
  const paragraphs = 1 + (i % 5);
  const content = Array.from({ length: paragraphs }, (_, p) => `<p>${text(i * 7 + p, 20 + ((i * 13 + p * 29) % 60))}</p>`).join('\n');
  const stamp = (s: number): string => `2026-11-30 ${String(Math.floor(s / 3600) % 24).padStart(2, '0')}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}+0000`;
  const xml = `<?xml version="1.0"?>
<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8">
  <midgard_article guid="${guid}" purge="no" action="${revision === 1 ? 'created' : 'updated'}">
    <name>${label}-${i}</name>
    <title>${esc(text(i, 4 + (i % 6)))}</title>
    <abstract>${esc(text(i + 1, 10 + (i % 20)))}</abstract>
    <content>${esc(content)}</content>
    <topic>${TOPIC}</topic>
    <up>0</up>
    <metadata>
      <creator>${PERSON}</creator>
      <created>${stamp(0)}</created>
      <revisor>${PERSON}</revisor>
      <revised>${stamp(revision)}</revised>
      <revision>${revision}</revision>
      <approver></approver>
      <approved>0000-00-00 00:00:00+0000</approved>
      <isapproved>0</isapproved>
      <deleted>0</deleted>
      <score>0</score>
    </metadata>
  </midgard_article>
  <midgard_parameter guid="${guidOf(`${label}-${i}-param`)}" purge="no" action="created">
    <domain>midcom.helper.datamanager2</domain>
    <name>schema_name</name>
    <value>default</value>
    <parentguid>${guid}</parentguid>
  </midgard_parameter>
</midgard_object>
`;
  return { guid, xml };
}

