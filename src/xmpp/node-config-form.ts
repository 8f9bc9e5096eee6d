// pubsub#node_config <-> NodeConfig: one table of fields (name, type, label, codec). Used for
// configure get/submit, create-and-configure and the default configuration.

import type { Element } from 'ltx';
import { fail } from '../pubsub/errors.ts';
import { ITEM_EXPIRE_LIMIT, MAX_ITEMS_LIMIT, MAX_PAYLOAD_LIMIT } from '../pubsub/node-config.ts';
import { ACCESS_MODELS, NOTIFICATION_TYPES, PUBLISH_MODELS, SEND_LAST_PUBLISHED_ITEM, type NodeConfig } from '../pubsub/types.ts';
import { buildForm, parseForm, type FieldType, type FormField } from './forms.ts';
import { NS } from './ns.ts';

interface FieldSpec<K extends keyof NodeConfig> {
  var: string;
  key: K;
  type: FieldType;
  label: string;
  options?: readonly string[];
  parse(value: string | undefined, name: string): NodeConfig[K];
  format(value: NodeConfig[K]): string;
}

function bool(value: string | undefined, name: string): boolean {
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  return fail('not-acceptable', `${name} must be a boolean (true/false/1/0)`);
}

const text = (value: string | undefined): string => value ?? '';

function choice<T extends string>(options: readonly T[]) {
  return (value: string | undefined, name: string): T => {
    if (value !== undefined && (options as readonly string[]).includes(value)) return value as T;
    return fail('not-acceptable', `${name} must be one of ${options.join(', ')} (got '${value ?? ''}')`);
  };
}

function maxItems(value: string | undefined, name: string): number | 'max' {
  if (value === 'max') return 'max';
  if (value !== undefined && /^\d+$/.test(value) && Number(value) <= MAX_ITEMS_LIMIT) return Number(value);
  return fail('not-acceptable', `${name} must be a whole number from 0 to ${MAX_ITEMS_LIMIT} or 'max' (got '${value ?? ''}')`);
}

function bytes(value: string | undefined, name: string): number {
  if (value !== undefined && /^\d{1,9}$/.test(value) && Number(value) >= 1 && Number(value) <= MAX_PAYLOAD_LIMIT) return Number(value);
  return fail('not-acceptable', `${name} must be a number of bytes from 1 to ${MAX_PAYLOAD_LIMIT} (got '${value ?? ''}')`);
}

function seconds(value: string | undefined, name: string): number | 'max' {
  if (value === 'max') return 'max';
  if (value !== undefined && /^\d{1,9}$/.test(value) && Number(value) >= 1 && Number(value) <= ITEM_EXPIRE_LIMIT) return Number(value);
  return fail('not-acceptable', `${name} must be a number of seconds from 1 to ${ITEM_EXPIRE_LIMIT} or 'max' (got '${value ?? ''}')`);
}

/** roster_groups_allowed: one value per group (multi-valued fields reach parse() joined by newlines). */
function groups(value: string | undefined): string[] {
  return [...new Set((value ?? '').split('\n').filter((g) => g !== ''))];
}

const boolField = <K extends keyof NodeConfig>(v: string, key: K, label: string): FieldSpec<K> => ({
  var: v,
  key,
  type: 'boolean',
  label,
  parse: bool as FieldSpec<K>['parse'],
  format: (b) => (b ? '1' : '0'),
});

const FIELDS = [
  { var: 'pubsub#title', key: 'title', type: 'text-single', label: 'A friendly name for the node', parse: text, format: String },
  { var: 'pubsub#description', key: 'description', type: 'text-single', label: 'A description of the node', parse: text, format: String },
  { var: 'pubsub#type', key: 'type', type: 'text-single', label: 'The type of node data, usually a namespace of the payload', parse: text, format: String },
  { var: 'pubsub#access_model', key: 'accessModel', type: 'list-single', label: 'Who may subscribe and retrieve items', options: ACCESS_MODELS, parse: choice(ACCESS_MODELS), format: String },
  { var: 'pubsub#publish_model', key: 'publishModel', type: 'list-single', label: 'Who may publish items', options: PUBLISH_MODELS, parse: choice(PUBLISH_MODELS), format: String },
  { var: 'pubsub#max_items', key: 'maxItems', type: 'text-single', label: 'Max number of items to persist (or max)', parse: maxItems, format: String },
  boolField('pubsub#persist_items', 'persistItems', 'Persist items to storage'),
  boolField('pubsub#deliver_payloads', 'deliverPayloads', 'Deliver payloads with event notifications'),
  boolField('pubsub#deliver_notifications', 'deliverNotifications', 'Deliver event notifications'),
  boolField('pubsub#notify_retract', 'notifyRetract', 'Notify subscribers when items are removed from the node'),
  boolField('pubsub#notify_delete', 'notifyDelete', 'Notify subscribers when the node is deleted'),
  boolField('pubsub#notify_config', 'notifyConfig', 'Notify subscribers when the node configuration changes'),
  boolField('pubsub#notify_sub', 'notifySub', 'Notify owners about new subscribers and unsubscribes'),
  { var: 'pubsub#max_payload_size', key: 'maxPayloadSize', type: 'text-single', label: 'The maximum payload size in bytes', parse: bytes, format: String },
  { var: 'pubsub#notification_type', key: 'notificationType', type: 'list-single', label: 'Message type of notifications', options: NOTIFICATION_TYPES, parse: choice(NOTIFICATION_TYPES), format: String },
  { var: 'pubsub#send_last_published_item', key: 'sendLastPublishedItem', type: 'list-single', label: 'When to send the last published item', options: SEND_LAST_PUBLISHED_ITEM, parse: choice(SEND_LAST_PUBLISHED_ITEM), format: String },
  { var: 'pubsub#roster_groups_allowed', key: 'rosterGroupsAllowed', type: 'list-multi', label: 'Roster groups allowed to subscribe (roster access model)', parse: groups, format: (g: string[]) => g.join('\n') },
  boolField('pubsub#presence_based_delivery', 'presenceBasedDelivery', 'Deliver notifications only to available users'),
  { var: 'pubsub#item_expire', key: 'itemExpire', type: 'text-single', label: 'Seconds after which items are removed (or max)', parse: seconds, format: String },
] as const satisfies ReadonlyArray<FieldSpec<keyof NodeConfig>>;

const MULTI: ReadonlySet<FieldType> = new Set(['text-multi', 'list-multi', 'jid-multi']);
const splitMulti = (text: string): string[] => (text === '' ? [] : text.split('\n'));

const BY_VAR = new Map<string, FieldSpec<keyof NodeConfig>>(FIELDS.map((f) => [f.var, f as FieldSpec<keyof NodeConfig>]));

/** Every pubsub#node_config field Hermod understands (for tests and the README table). */
export const NODE_CONFIG_FIELDS: readonly string[] = FIELDS.map((f) => f.var);

/** The node configuration form; `accessModels` narrows the access_model options to those the service offers now. */
export function configForm(config: NodeConfig, type: 'form' | 'result' = 'form', accessModels?: readonly string[]): Element {
  const fields: FormField[] = FIELDS.map((f) => {
    const spec = f as FieldSpec<keyof NodeConfig>;
    const options = spec.key === 'accessModel' && accessModels ? accessModels : spec.options;
    return {
      var: spec.var,
      type: spec.type,
      label: spec.label,
      values: MULTI.has(spec.type) ? splitMulti(spec.format(config[spec.key])) : [spec.format(config[spec.key])],
      ...(options ? { options: options.map((value) => ({ value })) } : {}),
    };
  });
  return buildForm(type, NS.PUBSUB_NODE_CONFIG, fields);
}

/**
 * Reads a submitted node_config form into a partial config. A cancel form changes nothing;
 * an unknown field or a bad value is not-acceptable with the field named.
 */
export function parseConfigForm(x: Element): Partial<NodeConfig> {
  const form = parseForm(x);
  if (form.type === 'cancel') return {};
  if (form.type !== 'submit') fail('not-acceptable', `a node configuration must be a data form of type submit (got '${form.type}')`);
  if (form.formType !== undefined && form.formType !== NS.PUBSUB_NODE_CONFIG) {
    fail('not-acceptable', `FORM_TYPE must be ${NS.PUBSUB_NODE_CONFIG}`);
  }
  const change: Partial<Record<keyof NodeConfig, unknown>> = {};
  for (const [name, values] of form.fields) {
    const spec = BY_VAR.get(name);
    if (!spec) fail('not-acceptable', `node configuration field ${name} is not supported by this service`);
    change[spec.key] = spec.parse(MULTI.has(spec.type) ? values.join('\n') : values[0], name);
  }
  return change as Partial<NodeConfig>;
}

/**
 * Reads a §7.1.5 publish-options form: each field is a precondition on the node configuration
 * of the same name. A field this service does not know can never be met.
 */
export function parsePublishOptions(x: Element): Partial<NodeConfig> {
  const form = parseForm(x);
  if (form.formType !== NS.PUBSUB_PUBLISH_OPTIONS) fail('bad-request', `publish-options need FORM_TYPE ${NS.PUBSUB_PUBLISH_OPTIONS}`);
  const preconditions: Partial<Record<keyof NodeConfig, unknown>> = {};
  for (const [name, values] of form.fields) {
    const spec = BY_VAR.get(name);
    if (!spec) fail('precondition-not-met', `publish option ${name} is not a node configuration field of this service`);
    preconditions[spec.key] = spec.parse(MULTI.has(spec.type) ? values.join('\n') : values[0], name);
  }
  return preconditions as Partial<NodeConfig>;
}
