// Serialized XML spliced into an ltx tree without re-parsing it. Payloads are stored as the
// XML text they arrived as; ltx writes a child that has write() by calling it.

import { Element } from 'ltx';

export class RawXml {
  constructor(readonly xml: string) {}
  write(writer: (s: string) => void): void {
    writer(this.xml);
  }
  toString(): string {
    return this.xml;
  }
}

/** Appends serialized XML to an element. */
export function appendRaw(parent: Element, raw: string): Element {
  if (raw) parent.children.push(new RawXml(raw) as unknown as Element); // ltx accepts any child with write()
  return parent;
}

/** Serializes a payload element so that it stands alone (its namespace made explicit). */
export function serializePayload(el: Element): string {
  if (el.attrs.xmlns === undefined) {
    const ns = el.getNS();
    if (ns) el.attrs.xmlns = ns;
  }
  return el.toString();
}
