// pubsub#node_config <-> NodeConfig: one table of fields (name, type, label, codec). Used for
// configure get/submit, create-and-configure and the default configuration.

import type { Element } from 'ltx';
import { fail } from '../pubsub/errors.ts';
import { ITEM_EXPIRE_LIMIT, MAX_ITEMS_LIMIT, MAX_PAYLOAD_LIMIT } from '../pubsub/node-config.ts';
import {
  ACCESS_MODELS,
  CHILDREN_ASSOCIATION_POLICIES,
  ITEM_REPLY,
  NODE_TYPES,
  NOTIFICATION_TYPES,
  PUBLISH_MODELS,
  PUBLISH_NODE_FULL,
  SEND_LAST_PUBLISHED_ITEM,
  type NodeConfig,
} from '../pubsub/types.ts';
import { PubsubError } from '../pubsub/errors.ts';
import { buildForm, parseForm, type FieldType, type FormField } from './forms.ts';
import { normalizeJid } from './jid.ts';
import { NS } from './ns.ts';

interface FieldSpec<K extends keyof NodeConfig> {
  var: string;
  key: K;
  type: FieldType;
  label: string;
  /** The options the form offers: the values this service honours (parse accepts every registered one). */
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

/** roster_groups_allowed, collection, children: one value per line (multi-valued fields reach parse() joined by newlines). */
function lines(value: string | undefined): string[] {
  return [...new Set((value ?? '').split('\n').filter((g) => g !== ''))];
}

/** jid-multi fields: each value a valid JID, normalised. */
function jids(value: string | undefined, name: string): string[] {
  return lines(value).map((raw) => normalizeJid(raw) ?? fail('not-acceptable', `${name}: '${raw}' is not a valid JID`));
}

/** children_max: a whole number or 'max'. */
function count(value: string | undefined, name: string): number | 'max' {
  if (value === 'max') return 'max';
  if (value !== undefined && /^\d{1,9}$/.test(value)) return Number(value);
  return fail('not-acceptable', `${name} must be a whole number or 'max' (got '${value ?? ''}')`);
}

const formatLines = (values: string[]): string => values.join('\n');

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
  { var: 'pubsub#roster_groups_allowed', key: 'rosterGroupsAllowed', type: 'list-multi', label: 'Roster groups allowed to subscribe (roster access model)', parse: lines, format: formatLines },
  boolField('pubsub#presence_based_delivery', 'presenceBasedDelivery', 'Deliver notifications only to available users'),
  { var: 'pubsub#item_expire', key: 'itemExpire', type: 'text-single', label: 'Seconds after which items are removed (or max)', parse: seconds, format: String },
  { var: 'pubsub#publish_node_full', key: 'publishNodeFull', type: 'list-single', label: 'What publishing to a full node does', options: PUBLISH_NODE_FULL, parse: choice(PUBLISH_NODE_FULL), format: String },
  // Metadata: stored and shown, not acted upon (§5.4, §16.4.3).
  { var: 'pubsub#contact', key: 'contact', type: 'jid-multi', label: 'The JIDs of those to contact with questions', parse: jids, format: formatLines },
  { var: 'pubsub#language', key: 'language', type: 'text-single', label: 'The default language of the node (a language tag such as en)', parse: text, format: String },
  { var: 'pubsub#body_xslt', key: 'bodyXslt', type: 'text-single', label: 'URL of an XSL transformation of payloads into a message body (not applied by this service)', parse: text, format: String },
  { var: 'pubsub#dataform_xslt', key: 'dataformXslt', type: 'text-single', label: 'URL of an XSL transformation of payloads into a data form (not applied by this service)', parse: text, format: String },
  { var: 'pubsub#itemreply', key: 'itemReply', type: 'list-single', label: 'Whom replies to items go to (items carry their publisher)', options: ['publisher'], parse: choice(ITEM_REPLY), format: String },
  // Fixed by what this service is: leaf nodes, permanent subscriptions (node-config.ts refuses the rest).
  { var: 'pubsub#node_type', key: 'nodeType', type: 'list-single', label: 'The node type (leaf nodes only)', options: ['leaf'], parse: choice(NODE_TYPES), format: String },
  { var: 'pubsub#collection', key: 'collection', type: 'text-multi', label: 'The collections the node is in (none: no collection nodes)', parse: lines, format: formatLines },
  { var: 'pubsub#children', key: 'children', type: 'text-multi', label: 'The child nodes (none: leaf node)', parse: lines, format: formatLines },
  { var: 'pubsub#children_association_policy', key: 'childrenAssociationPolicy', type: 'list-single', label: 'Who may associate child nodes (nobody: leaf node)', options: ['owners'], parse: choice(CHILDREN_ASSOCIATION_POLICIES), format: String },
  { var: 'pubsub#children_association_whitelist', key: 'childrenAssociationWhitelist', type: 'jid-multi', label: 'Who may associate child nodes (none: leaf node)', parse: jids, format: formatLines },
  { var: 'pubsub#children_max', key: 'childrenMax', type: 'text-single', label: 'The maximum number of child nodes (0: leaf node)', parse: count, format: String },
  boolField('pubsub#subscribe', 'subscribe', 'Whether to allow subscription requests (existing and owner-set subscriptions stay)'),
  boolField('pubsub#tempsub', 'tempsub', 'Whether subscriptions are temporary, bound to presence (not supported)'),
  boolField('pubsub#purge_offline', 'purgeOffline', 'Whether to purge all items when the publisher goes offline (not supported)'),
] as const satisfies ReadonlyArray<FieldSpec<keyof NodeConfig>>;

const MULTI: ReadonlySet<FieldType> = new Set(['text-multi', 'list-multi', 'jid-multi']);
const splitMulti = (text: string): string[] => (text === '' ? [] : text.split('\n'));

const BY_VAR = new Map<string, FieldSpec<keyof NodeConfig>>(FIELDS.map((f) => [f.var, f as FieldSpec<keyof NodeConfig>]));

/** Every pubsub#node_config field Hermod understands (for tests and the README table). */
export const NODE_CONFIG_FIELDS: readonly string[] = FIELDS.map((f) => f.var);

/**
 * The node configuration form (every registered pubsub#node_config field, XEP-0060 §16.4.3);
 * `accessModels` narrows the access_model options to those the service offers now. Type
 * 'result' (configuration notifications) carries no options.
 */
export function configForm(config: NodeConfig, type: 'form' | 'result' = 'form', accessModels?: readonly string[]): Element {
  const fields: FormField[] = FIELDS.map((f) => {
    const spec = f as FieldSpec<keyof NodeConfig>;
    // A result (§8.2.5.3 notification) reports values; only a form to fill in offers options.
    const options = type === 'result' ? undefined : spec.key === 'accessModel' && accessModels ? accessModels : spec.options;
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
    withinBounds(name, values);
    change[spec.key] = spec.parse(MULTI.has(spec.type) ? values.join('\n') : values[0], name);
  }
  return change as Partial<NodeConfig>;
}

/** Most characters of one value, and most values, of a node configuration field: what a node keeps, caches and sends in every configuration notification. */
export const FIELD_VALUE_MAX = 4096;
export const FIELD_VALUES_MAX = 256;

/** not-acceptable, naming the field, for a value or a list beyond FIELD_VALUE_MAX / FIELD_VALUES_MAX. */
function withinBounds(name: string, values: readonly string[]): void {
  if (values.length > FIELD_VALUES_MAX) fail('not-acceptable', `${name}: at most ${FIELD_VALUES_MAX} values (got ${values.length})`);
  for (const value of values) if (value.length > FIELD_VALUE_MAX) fail('not-acceptable', `${name}: a value of at most ${FIELD_VALUE_MAX} characters (got ${value.length})`);
}

/**
 * Reads a §7.1.5 publish-options form: each field is a precondition on the node configuration
 * of the same name (the service compares it with the node's value). A field that is not a
 * node configuration field, or a value no node can have, is precondition-not-met: the XEP
 * says such a publish MUST be rejected.
 */
export function parsePublishOptions(x: Element): Partial<NodeConfig> {
  const form = parseForm(x);
  if (form.formType !== NS.PUBSUB_PUBLISH_OPTIONS) fail('bad-request', `publish-options need FORM_TYPE ${NS.PUBSUB_PUBLISH_OPTIONS}`);
  const preconditions: Partial<Record<keyof NodeConfig, unknown>> = {};
  for (const [name, values] of form.fields) {
    const spec = BY_VAR.get(name);
    if (!spec) fail('precondition-not-met', `publish option ${name} is not a node configuration field of this service`);
    try {
      preconditions[spec.key] = spec.parse(MULTI.has(spec.type) ? values.join('\n') : values[0], name);
    } catch (err) {
      // A value no node can have is a precondition no node meets.
      if (err instanceof PubsubError) fail('precondition-not-met', `publish option ${err.text ?? name}`);
      throw err;
    }
  }
  return preconditions as Partial<NodeConfig>;
}
