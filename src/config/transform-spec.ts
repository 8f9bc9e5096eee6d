// The `transform` setting of a subscription (Ajatus: hermod:partner:<jid> documents; Midgard:
// midgard.partners entries in the config file): node id (or "*") -> the XSLT stylesheet its
// leaves go through, with extra string parameters. One schema, messages naming the field.

import { z } from 'zod';
import { check, must, nodeMap, text } from './schema-kit.ts';

const PARAM = /^[A-Za-z_][\w.-]*$/;

/** One node's stylesheet: a path, or {"stylesheet": path, "params": {name: string value}}. */
const specSchema = z.preprocess(
  (raw) => (typeof raw === 'string' ? { stylesheet: raw } : raw),
  z.strictObject(
    {
      /** Path of the stylesheet; relative paths resolve against the transforms folder, then the shipped stylesheets. */
      stylesheet: text('must be a non-empty path'),
      /** Extra string parameters for the stylesheet (by local name). */
      params: z
        .record(z.string().regex(PARAM, must('must be a stylesheet parameter name (a letter or _, then letters, digits, _ . -)')), z.string(must('must be a string')), must('must be an object of string values'))
        .default({}),
    },
    must('must be a stylesheet path or {"stylesheet", "params"}'),
  ),
);

/** A `transform` setting: node id (or "*") -> stylesheet. */
export const transformSchema = nodeMap(z.string().min(1, { error: 'the node id is empty' }), specSchema, 'must be an object mapping node ids (or "*") to a stylesheet');

export type TransformSpec = z.output<typeof specSchema>;

export class TransformSpecError extends Error {}

/**
 * A `transform` setting: node id (or "*") -> stylesheet path, or {"stylesheet", "params"}.
 * `where` prefixes every message (e.g. "hermod:partner:x@y: transform"). Throws
 * TransformSpecError naming every bad field ("; "-separated).
 */
export function parseTransform(value: unknown, where: string): Record<string, TransformSpec> {
  const r = check(transformSchema, value, where);
  if (r.problems) throw new TransformSpecError(r.problems.join('; '));
  return r.value;
}
