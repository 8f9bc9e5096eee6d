// XEP-0004 data forms: parse a submitted form into field values, build forms for replies.
// Knows nothing of what the fields mean.

import { Element } from 'ltx';
import { badRequest } from './errors.ts';
import { NS } from './ns.ts';

export type FieldType = 'boolean' | 'fixed' | 'hidden' | 'jid-multi' | 'jid-single' | 'list-multi' | 'list-single' | 'text-multi' | 'text-private' | 'text-single';

export interface FormField {
  var: string;
  type?: FieldType;
  label?: string;
  values: string[];
  options?: Array<{ value: string; label?: string }>;
}

export interface SubmittedForm {
  type: string;
  formType: string | undefined;
  fields: Map<string, string[]>;
}

/** Parses an <x xmlns='jabber:x:data'/>; rejects duplicate or unnamed fields. */
export function parseForm(x: Element): SubmittedForm {
  const fields = new Map<string, string[]>();
  for (const field of x.getChildren('field')) {
    const name = field.attrs.var as string | undefined;
    if (!name) throw badRequest('data form field without var');
    if (fields.has(name)) throw badRequest(`data form field ${name} appears twice`);
    fields.set(
      name,
      field.getChildren('value').map((v) => v.getText()),
    );
  }
  const formType = fields.get('FORM_TYPE')?.[0];
  fields.delete('FORM_TYPE');
  return { type: (x.attrs.type as string | undefined) ?? '', formType, fields };
}

/** Finds the data form child of an element (e.g. <configure/>), if any. */
export function findForm(parent: Element | undefined): Element | undefined {
  return parent?.getChild('x', NS.DATA_FORMS);
}

export function buildForm(type: 'form' | 'result' | 'submit', formType: string, fields: FormField[], title?: string): Element {
  const x = new Element('x', { xmlns: NS.DATA_FORMS, type });
  if (title) x.c('title').t(title);
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(formType);
  for (const f of fields) {
    const el = x.c('field', { var: f.var, ...(f.type ? { type: f.type } : {}), ...(f.label ? { label: f.label } : {}) });
    for (const o of f.options ?? []) el.c('option', o.label ? { label: o.label } : {}).c('value').t(o.value);
    for (const v of f.values) el.c('value').t(v);
  }
  return x;
}

export function parseBoolean(name: string, value: string | undefined): boolean {
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  throw badRequest(`field ${name} must be a boolean (true/false/1/0)`);
}
