// The `transform` setting of a subscription (Ajatus: hermod:partner:<jid> documents; Midgard:
// midgard.partners entries in the config file): node id (or "*") -> the XSLT stylesheet its
// leaves go through, with extra string parameters. One parser, messages naming the field.

export interface TransformSpec {
  /** Path of the stylesheet; relative paths resolve against the transforms folder, then the shipped stylesheets. */
  stylesheet: string;
  /** Extra string parameters for the stylesheet (by local name). */
  params: Record<string, string>;
}

export class TransformSpecError extends Error {}

const PARAM = /^[A-Za-z_][\w.-]*$/;

/**
 * A `transform` setting: node id (or "*") -> stylesheet path, or {"stylesheet", "params"}.
 * `where` prefixes every message (e.g. "hermod:partner:x@y: transform").
 */
export function parseTransform(value: unknown, where: string): Record<string, TransformSpec> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TransformSpecError(`${where}: must be an object mapping node ids (or "*") to a stylesheet, got ${JSON.stringify(value)}`);
  const out: Record<string, TransformSpec> = {};
  for (const [node, raw] of Object.entries(value as Record<string, unknown>)) {
    const at = `${where}["${node}"]`;
    if (node.length === 0) throw new TransformSpecError(`${at}: the node id is empty`);
    const spec = typeof raw === 'string' ? { stylesheet: raw } : raw;
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new TransformSpecError(`${at}: must be a stylesheet path or {"stylesheet", "params"}, got ${JSON.stringify(raw)}`);
    const { stylesheet, params = {}, ...rest } = spec as Record<string, unknown>;
    const unknown = Object.keys(rest)[0];
    if (unknown !== undefined) throw new TransformSpecError(`${at}.${unknown}: unknown key (known: stylesheet, params)`);
    if (typeof stylesheet !== 'string' || stylesheet.length === 0) throw new TransformSpecError(`${at}.stylesheet: must be a non-empty path, got ${JSON.stringify(stylesheet)}`);
    if (typeof params !== 'object' || params === null || Array.isArray(params)) throw new TransformSpecError(`${at}.params: must be an object of string values, got ${JSON.stringify(params)}`);
    for (const [name, v] of Object.entries(params as Record<string, unknown>)) {
      if (!PARAM.test(name)) throw new TransformSpecError(`${at}.params: "${name}" is not a stylesheet parameter name`);
      if (typeof v !== 'string') throw new TransformSpecError(`${at}.params.${name}: must be a string, got ${JSON.stringify(v)}`);
    }
    out[node] = { stylesheet, params: params as Record<string, string> };
  }
  return out;
}

