// The tools behind Hermod's one config schema (zod): leaf builders whose errors read
// "must be …, got <value>", the reader that turns zod's issues into messages naming the key
// ("midgard.partners[0].jid: must be a JID, got …"), and the lister that yields every described
// key with its default for `hermod --help` and the README tables. Knows no config key itself: the
// schemas live in config.ts, midgard-config.ts and transform-spec.ts.

import path from 'node:path';
import { z } from 'zod';
import { normalizeJid } from '../xmpp/jid.ts';

type Schema = z.core.$ZodType;
type Issue = z.core.$ZodRawIssue;

/** A value as messages show it: strings quoted, anything else as JSON. */
const show = (v: unknown): string => (typeof v === 'string' ? `"${v}"` : JSON.stringify(v) ?? String(v));

/**
 * Error option for a value of the wrong type or form: "<phrase>, got <value>" (phrase: "must be …").
 * An absent value falls through to "missing (… is required)", and an object's unknown or bad keys
 * to their own messages; `abort` keeps it to one message per key.
 */
export const must = (phrase: string) => ({
  abort: true,
  error: (iss: Issue): string | undefined => (iss.input === undefined || iss.code === 'unrecognized_keys' || iss.code === 'invalid_key' ? undefined : `${phrase}, got ${show(iss.input)}`),
});

/** Like `must`, without echoing the value (a URL may carry credentials). */
export const withoutValue = (message: string) => ({ abort: true, error: (iss: Issue): string | undefined => (iss.input === undefined ? undefined : message) });

/** A non-empty string. */
export const text = (phrase = 'must be a non-empty string') => z.string(must(phrase)).min(1, must(phrase));

/** A number above 0. */
export const positive = () => z.number(must('must be a positive number')).positive(must('must be a positive number'));

/** A whole number from 1 to `max`. */
export function whole(max = Number.MAX_SAFE_INTEGER, phrase = `must be a whole number ${max === Number.MAX_SAFE_INTEGER ? 'of at least 1' : `from 1 to ${max}`}`) {
  return z.number(must(phrase)).int(must(phrase)).min(1, must(phrase)).max(max, must(phrase));
}

/** A whole number from 0 (e.g. a duration that may be off). */
export function wholeOrZero(phrase = 'must be a whole number of at least 0') {
  return z.number(must(phrase)).int(must(phrase)).min(0, must(phrase));
}

/** pubsub#digest_frequency asked of partners, ms: 0 (no digests) or 10 ms to 1 min (the bounds of Hermod's own service). */
export function digestMs() {
  const phrase = 'must be 0 (no digests) or a whole number of milliseconds from 10 to 60000';
  return z.number(must(phrase)).int(must(phrase)).refine((ms) => ms === 0 || (ms >= 10 && ms <= 60_000), must(phrase));
}

/** A string `normalize` accepts (e.g. a JID), as `normalize` returns it. */
export const parsed = <T>(phrase: string, normalize: (s: string) => T | undefined) =>
  z
    .string(must(phrase))
    .refine((s) => normalize(s) !== undefined, must(phrase))
    .transform((s) => normalize(s) as T);

/** A bare JID (no resource), normalised. */
export const bareJid = (phrase: string) =>
  parsed(phrase, (s) => {
    const jid = normalizeJid(s);
    return jid && !jid.includes('/') ? jid : undefined;
  });

/** Options for a check across keys of an object: it runs whenever the value is an object, so it is listed with the other problems. */
export const whenObject = { when: (payload: { value: unknown }): boolean => typeof payload.value === 'object' && payload.value !== null && !Array.isArray(payload.value) };

/** A path in the config file, resolved against `baseDir` (the config file's folder). */
export const filePath = (baseDir: string) => text().transform((p) => path.resolve(baseDir, p));

const nodeMaps = new WeakSet<Schema>();

/** A record keyed by node ids (or "*"): messages show its keys as `["/node"]` (marked on the key schema, which clones keep). */
export function nodeMap<K extends z.core.$ZodRecordKey, V extends z.ZodType>(key: K, value: V, phrase: string) {
  nodeMaps.add(key);
  return z.record(key, value, must(phrase));
}

const NOUN: Record<string, string> = { object: 'an object', string: 'a string', number: 'a number', boolean: 'true or false', array: 'an array' };

/** Messages for what the schemas leave to the defaults: absent keys, unknown keys, bad record keys. */
function generic(iss: Issue): string {
  if (iss.code === 'unrecognized_keys') return `unknown key (known: ${Object.keys(shapeOf(iss.inst as Schema) ?? {}).join(', ')})`;
  if (iss.code === 'invalid_key') return iss.issues[0]?.message ?? 'not a valid key';
  const noun = iss.code === 'invalid_type' ? (NOUN[iss.expected] ?? iss.expected) : 'a value';
  return iss.input === undefined ? `missing (${noun} is required)` : `must be ${noun}, got ${show(iss.input)}`;
}

/** What a schema is under optional/default/transform wrappers, with its description and default. */
function unwrap(schema: Schema): { base: Schema; description?: string; shownDefault?: string; defaultValue?: unknown } {
  const found: { description?: string; shownDefault?: string; defaultValue?: unknown } = {};
  let s = schema;
  for (;;) {
    const meta = z.globalRegistry.get(s);
    found.description ??= meta?.description;
    if (typeof meta?.default === 'string') found.shownDefault ??= meta.default;
    const def = s._zod.def as { type: string; innerType?: Schema; in?: Schema; out?: Schema; defaultValue?: unknown };
    if ((def.type === 'default' || def.type === 'prefault') && !('defaultValue' in found)) found.defaultValue = def.defaultValue;
    // a pipe is schema -> .transform(), or z.preprocess(): transform -> schema
    const next = def.type === 'pipe' ? (def.in?._zod.def.type === 'transform' ? def.out : def.in) : def.innerType;
    if (!next || !['optional', 'default', 'prefault', 'nullable', 'readonly', 'catch', 'pipe'].includes(def.type)) return { base: s, ...found };
    s = next;
  }
}

const shapeOf = (s: Schema): Record<string, Schema> | undefined => {
  const def = unwrap(s).base._zod.def as { type: string; shape?: Record<string, Schema> };
  return def.type === 'object' ? def.shape : undefined;
};

/** One step of an issue's path: how it is written, and the schema below it. */
function step(schema: Schema | undefined, seg: PropertyKey, first: boolean): { text: string; next: Schema | undefined } {
  const plain = typeof seg === 'number' ? `[${seg}]` : /^[A-Za-z_$][\w$]*$/.test(String(seg)) ? `${first ? '' : '.'}${String(seg)}` : `["${String(seg)}"]`;
  if (!schema) return { text: plain, next: undefined };
  const base = unwrap(schema).base;
  const def = base._zod.def as { type: string; options?: Schema[]; element?: Schema; keyType?: Schema; valueType?: Schema; shape?: Record<string, Schema> };
  if (def.type === 'union') {
    for (const option of def.options ?? []) {
      const r = step(option, seg, first);
      if (r.next) return r;
    }
  }
  if (def.type === 'array' && typeof seg === 'number') return { text: plain, next: def.element };
  if (def.type === 'record') return { text: def.keyType && nodeMaps.has(def.keyType) ? `["${String(seg)}"]` : plain, next: def.valueType };
  if (def.type === 'object') return { text: plain, next: def.shape?.[String(seg)] };
  return { text: plain, next: undefined };
}

/** The key an issue path names, e.g. ["midgard", "access", "/n", "whitelist", 0] -> `midgard.access["/n"].whitelist[0]`. */
function keyPath(schema: Schema, path: readonly PropertyKey[], prefix = ''): string {
  let out = prefix;
  let s: Schema | undefined = schema;
  for (const seg of path) {
    const r = step(s, seg, out === '');
    out += r.text;
    s = r.next;
  }
  return out;
}

const typeMismatch = (iss: z.core.$ZodIssue): boolean => iss.path.length === 0 && ['invalid_type', 'invalid_value', 'invalid_union'].includes(iss.code);

/**
 * A union (e.g. a JID string or a {"jid", …} object) whose value has the type of exactly one
 * option reports that option's problems (`partners[0].jid: …`), not "must be one of the forms".
 */
function fromUnion(iss: z.core.$ZodIssue): z.core.$ZodIssue[] {
  if (iss.code !== 'invalid_union') return [iss];
  const matched = iss.errors.filter((errors) => !errors.some(typeMismatch));
  const only = matched.length === 1 ? matched[0] : undefined;
  return only ? only.flatMap((inner) => fromUnion({ ...inner, path: [...iss.path, ...inner.path] })) : [iss];
}

/**
 * Validates `raw` against `schema`: the value, or one message per problem, each "key: …" with the
 * key written from `prefix` (e.g. "midgard", or "hermod:partner:x: transform") and the issue path.
 */
export function check<S extends z.ZodType>(schema: S, raw: unknown, prefix = ''): { value: z.output<S>; problems?: undefined } | { value?: undefined; problems: string[] } {
  const result = schema.safeParse(raw, { error: generic });
  if (result.success) return { value: result.data };
  const problems = result.error.issues.flatMap(fromUnion).flatMap((iss) => {
    if (iss.code === 'unrecognized_keys') return iss.keys.map((key) => `${keyPath(schema, [...iss.path, key], prefix)}: ${iss.message}`);
    const at = keyPath(schema, iss.path, prefix);
    return [at === '' ? iss.message : `${at}: ${iss.message}`];
  });
  return { problems };
}

/** A default as the README writes it: `value` in backticks (JSON with spaces, bare top-level strings). */
function shown(v: unknown): string {
  const json = (x: unknown): string =>
    Array.isArray(x) ? `[${x.map(json).join(', ')}]` : typeof x === 'object' && x !== null ? `{${Object.entries(x).map(([k, e]) => `${JSON.stringify(k)}: ${json(e)}`).join(', ')}}` : JSON.stringify(x);
  return `\`${typeof v === 'string' ? v : json(v)}\``;
}

/** One documented key: dotted path, meaning and default (Markdown, as in the README tables). */
export interface KeyDoc {
  key: string;
  meaning: string;
  default: string;
}

/**
 * Every key of `schema` that has a description (`.describe()`/`.meta({description})`), in schema
 * order, with its default: `.meta({default: "…"})` when given, else the `.default()` value, else "none".
 */
export function describedKeys(schema: Schema, prefix = ''): KeyDoc[] {
  return Object.entries(shapeOf(schema) ?? {}).flatMap(([name, child]) => {
    const key = prefix ? `${prefix}.${name}` : name;
    const { description, shownDefault, defaultValue } = unwrap(child);
    const own = description === undefined ? [] : [{ key, meaning: description, default: shownDefault ?? (defaultValue === undefined ? 'none' : shown(defaultValue)) }];
    return [...own, ...describedKeys(child, key)];
  });
}

/** `describedKeys` as plain text for --help: "key = default" and the meaning below, wrapped at `width`. */
export function keyHelp(keys: KeyDoc[], width = 100): string {
  const plain = (md: string): string => md.replaceAll('`', '');
  const wrap = (line: string, indent: string): string[] => {
    const out: string[] = [];
    let cur = '';
    for (const word of line.split(' ')) {
      if (cur && indent.length + cur.length + 1 + word.length > width) {
        out.push(indent + cur);
        cur = word;
      } else cur = cur ? `${cur} ${word}` : word;
    }
    return [...out, indent + cur];
  };
  return keys.flatMap((k) => [`  ${k.key} = ${plain(k.default)}`, ...wrap(plain(k.meaning), '      ')]).join('\n');
}
