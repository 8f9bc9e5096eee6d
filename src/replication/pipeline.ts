// Pipelined publishing: the publications and retractions of a whole batch of documents run
// concurrently (at most `limit` at once) instead of one after another, with the order that
// matters kept: the phases of one document run in their order, and the steps on one node run in
// the order of the documents in the batch (feed order), each after the one before it on that node
// has settled. Deadlock-free: every wait points to an earlier (document, step). A publisher
// commits the replication state of the documents whose steps all completed, and only then may the
// batch's checkpoint move (src/sources/source.ts): a crash at any point hands the documents not
// recorded over again (their revisions republished; a partner's sink writes a revision it has
// as a no-op, new_edits=false), and none is lost.

import { PubsubError } from '../pubsub/errors.ts';
import type { PublishOutcome, PubsubService } from '../pubsub/service.ts';

/** One publication or retraction of a document on one node; resolving to 'stop' ends the document there (a final refusal). */
export interface PipelineStep {
  node: string;
  run(): Promise<void | 'stop'>;
}

/**
 * How a document's steps ended: 'done' (all ran), 'stopped' (one resolved 'stop'; the rest were
 * not run), 'skipped' (another document's step failed first: not run, handled again with the
 * batch), or the error its step threw.
 */
export type PipelineOutcome = 'done' | 'stopped' | 'skipped' | { error: unknown };

/** Default bound of steps in flight. */
export const PIPELINE_LIMIT = 32;

/**
 * One document's steps in phases: the steps of a phase may run at the same time (on different
 * nodes), a phase starts once every step of the one before completed (e.g. publications, then
 * the retractions that a partner must only see after them).
 */
export type PipelineJob = PipelineStep[][];

/**
 * Runs the steps of `jobs` (one per document, documents in feed order) with at most `limit` in
 * flight, in the order described above. After the first step that throws, steps not yet started
 * are skipped. Resolves, once every started step has settled, to one outcome per job (never
 * rejects).
 */
export async function runPipelined(jobs: PipelineJob[], limit = PIPELINE_LIMIT): Promise<PipelineOutcome[]> {
  let inFlight = 0;
  const waiting: Array<() => void> = [];
  const acquire = (): Promise<void> | undefined => {
    if (inFlight < limit) {
      inFlight++;
      return undefined;
    }
    return new Promise<void>((resolve) => waiting.push(resolve)); // the permit is handed over by release()
  };
  const release = (): void => {
    const next = waiting.shift();
    if (next) next();
    else inFlight--;
  };
  let failed = false;
  const nodeTail = new Map<string, Promise<unknown>>();
  /** The outcome of a job so far, given the outcomes of a phase's steps. */
  const worst = (outcomes: PipelineOutcome[]): PipelineOutcome => outcomes.find((o) => typeof o === 'object') ?? outcomes.find((o) => o !== 'done') ?? 'done';
  const results: Array<Promise<PipelineOutcome>> = [];
  for (const phases of jobs) {
    let previous: Promise<PipelineOutcome> = Promise.resolve('done');
    for (const phase of phases) {
      const before = previous;
      const steps = phase.map((step) => {
        const afterNode = nodeTail.get(step.node);
        const current = (async (): Promise<PipelineOutcome> => {
          const was = await before;
          await afterNode;
          if (was !== 'done') return was;
          if (failed) return 'skipped';
          await acquire();
          try {
            return (await step.run()) === 'stop' ? 'stopped' : 'done';
          } catch (error) {
            failed = true;
            return { error };
          } finally {
            release();
          }
        })();
        nodeTail.set(step.node, current);
        return current;
      });
      previous = steps.length === 0 ? before : Promise.all(steps).then(worst);
    }
    results.push(previous);
  }
  return Promise.all(results);
}

/** A publication that may go to its node in one call together with others of the batch (runBatched). */
export interface BatchedStep<T> {
  node: string;
  item: T;
}

/** One document's batchable publications, then its other steps in phases (as PipelineJob). */
export interface BatchedJob<T> {
  publications: Array<BatchedStep<T>>;
  then: PipelineJob;
}

/** Bounds of one publishMany call of runBatched: items, and their summed `weight` (bytes). */
export interface BatchBounds<T> {
  maxItems: number;
  maxWeight: number;
  weight(item: T): number;
}

/**
 * Runs `jobs` (one per document, in feed order) with their publications batched: per node, the
 * publications of every job, in job order, go in consecutive calls of `publishMany` (each at
 * most `bounds.maxItems` items and `bounds.maxWeight`, a single heavier item alone), the nodes
 * at the same time; `publishMany` resolves to one result per item ('stop': a final refusal of
 * that item; `{error}`: that item failed, the job ends with this error; neither stops the
 * others) or rejects (nothing of the call written: its first item's job ends with that error,
 * the other jobs of the call and those after it on the node are 'skipped'). Then the jobs whose publications all completed
 * run the rest of their steps with runPipelined (`limit`); after any rejection those are
 * 'skipped' instead (handled again with the batch). The order that matters is kept: a job's
 * later steps after its publications, the publications on one node in job order. Resolves to one
 * outcome per job (as runPipelined; never rejects).
 */
export async function runBatched<T>(jobs: Array<BatchedJob<T>>, publishMany: (node: string, items: T[]) => Promise<Array<void | 'stop' | { error: unknown }>>, bounds: BatchBounds<T>, limit = PIPELINE_LIMIT): Promise<PipelineOutcome[]> {
  const outcomes = new Array<PipelineOutcome>(jobs.length).fill('done');
  const byNode = new Map<string, Array<{ job: number; item: T }>>();
  for (const [job, { publications }] of jobs.entries()) {
    for (const { node, item } of publications) {
      let list = byNode.get(node);
      if (!list) byNode.set(node, (list = []));
      list.push({ job, item });
    }
  }
  const settle = (job: number, outcome: PipelineOutcome): void => {
    const was = outcomes[job] as PipelineOutcome;
    if (typeof was !== 'object' && (typeof outcome === 'object' || was === 'done')) outcomes[job] = outcome;
  };
  let failed = false;
  await Promise.all(
    [...byNode].map(async ([node, list]) => {
      for (let from = 0; from < list.length; ) {
        let to = from + 1;
        for (let weight = bounds.weight(list[from]?.item as T); to < list.length && to - from < bounds.maxItems; to++) {
          weight += bounds.weight(list[to]?.item as T);
          if (weight > bounds.maxWeight) break;
        }
        const chunk = list.slice(from, to);
        from = to;
        try {
          const results = await publishMany(node, chunk.map((c) => c.item));
          for (const [i, { job }] of chunk.entries()) {
            const result = results[i];
            if (result === 'stop') settle(job, 'stopped');
            else if (result) settle(job, result);
          }
        } catch (error) {
          failed = true;
          // Blamed on the chunk's first item (as publishing one at a time would); nothing of it was
          // written: the others, and those after it on the node, are skipped (handled again).
          settle((chunk[0] as { job: number }).job, { error });
          for (const { job } of [...chunk.slice(1), ...list.slice(from)]) settle(job, 'skipped');
          return;
        }
      }
    }),
  );
  // Loops, not per-call callbacks, on this per-batch path: see src/util/hot-loops.md.
  const rest: number[] = [];
  for (let i = 0; i < jobs.length; i++) {
    if (outcomes[i] !== 'done') continue;
    for (const phase of (jobs[i] as BatchedJob<T>).then) {
      if (phase.length > 0) {
        rest.push(i);
        break;
      }
    }
  }
  if (failed) for (const i of rest) outcomes[i] = 'skipped';
  else {
    const phases: Array<BatchedJob<T>['then']> = [];
    for (const i of rest) phases.push((jobs[i] as BatchedJob<T>).then);
    const after = await runPipelined(phases, limit);
    for (let k = 0; k < rest.length; k++) outcomes[rest[k] as number] = after[k] as PipelineOutcome;
  }
  return outcomes;
}

/**
 * Bounds of one PubsubService.publishMany call (one node lock, one store write) of a publisher's
 * batch: at most 250 entries and 4 MiB of payload (`payloadOf`'s UTF-16 length: near enough).
 */
export function publishChunk<T>(payloadOf: (item: T) => string): BatchBounds<T> {
  return { maxItems: 250, maxWeight: 4 * 1024 * 1024, weight: (item) => payloadOf(item).length };
}

/**
 * Publishes `entries` (item id, payload as XML text) on `node` in one PubsubService.publishMany
 * call, resolving to one outcome per entry, in order (PublishOutcome: `{id}` or the PubsubError
 * refusing that entry). A refusal of the whole call (a PubsubError other than
 * internal-server-error: the node gone, publishing forbidden) becomes that refusal for every
 * entry; anything else (the store failing) rejects.
 */
export async function publishEntries(service: Pick<PubsubService, 'publishMany'>, actor: string, node: string, entries: Array<{ id: string; payload: string }>): Promise<PublishOutcome[]> {
  try {
    const requests: Array<{ item: { id: string; payload: string } }> = [];
    for (const item of entries) requests.push({ item });
    return await service.publishMany(actor, node, requests);
  } catch (err) {
    if (!(err instanceof PubsubError) || err.condition === 'internal-server-error') throw err;
    return entries.map(() => ({ error: err }));
  }
}
