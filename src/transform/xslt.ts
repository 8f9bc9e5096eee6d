// XSLT 3.0 for per-subscription transformations (saxon-js). Stylesheets are compiled once to SEF
// by the xslt3 compiler and cached by content hash (lru-cache); a stylesheet that does not
// compile is a StylesheetError naming the file, line and message. Transforms run in a worker
// thread, bounded in time (the worker is terminated) and in output size, so a bad stylesheet
// cannot stall or bloat Hermod. Errors are TransformError with the reason, for quarantine.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { LRUCache } from 'lru-cache';

const COMPILER = fileURLToPath(new URL('../../node_modules/xslt3/xslt3.js', import.meta.url));
const WORKER = new URL('./xslt-worker.mjs', import.meta.url);

export interface CompiledStylesheet {
  file: string;
  hash: string;
  sef: string;
}

export class StylesheetError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly detail: string,
  ) {
    super(`stylesheet ${file}${line !== undefined ? ` line ${line}` : ''}: ${detail}`);
    this.name = 'StylesheetError';
  }
}

export class TransformError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TransformError';
  }
}

/**
 * A transform that did not run to its end for a reason that is not its stylesheet's: Hermod
 * stopping, the worker restarted for another request's runaway transform, saxon-js not loaded in
 * time (a loaded machine). Its leaf is tried again, not quarantined (src/replication/transforms.ts).
 */
export class TransformInterrupted extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TransformInterrupted';
  }
}

export interface XsltOptions {
  /** Longest a transform may run. */
  timeoutMs?: number;
  /** Largest output (characters). */
  maxOutput?: number;
  /** Longest a compilation may take. */
  compileTimeoutMs?: number;
}

interface Pending {
  resolve: (output: string) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class XsltEngine {
  private readonly cache = new LRUCache<string, CompiledStylesheet>({ max: 256 });
  private worker: Worker | undefined;
  private workerReady: Promise<void> | undefined;
  /** Fails `workerReady` while saxon-js is still loading (close(): the requests waiting for it end at once). */
  private readyFail: ((err: Error) => void) | undefined;
  /** close() was called: no transform runs any more (each is interrupted). */
  private closed = false;
  private readonly pending = new Map<number, Pending>();
  private counter = 0;
  private readonly timeoutMs: number;
  private readonly maxOutput: number;
  private readonly compileTimeoutMs: number;

  constructor(options: XsltOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.maxOutput = options.maxOutput ?? 8 * 1024 * 1024;
    this.compileTimeoutMs = options.compileTimeoutMs ?? 60_000;
  }

  /** Compiles (or finds in the cache) the stylesheet in `file`. */
  async compile(file: string): Promise<CompiledStylesheet> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new StylesheetError(file, undefined, `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const hash = createHash('sha256').update(text).digest('hex');
    const cached = this.cache.get(hash);
    if (cached) return { ...cached, file };
    const dir = await mkdtemp(path.join(tmpdir(), 'hermod-sef-'));
    try {
      const out = path.join(dir, 'out.sef.json');
      const { code, stderr } = await run(process.execPath, [COMPILER, `-xsl:${file}`, `-export:${out}`, '-nogo', '-relocate:on'], this.compileTimeoutMs);
      if (code !== 0) {
        const line = /on line (\d+)/.exec(stderr)?.[1];
        const detail = stderr
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l && l !== 'Failed to compile stylesheet')
          .join(' ');
        throw new StylesheetError(file, line === undefined ? undefined : Number(line), detail || `compiler exited with ${code}`);
      }
      const compiled = { file, hash, sef: await readFile(out, 'utf8') };
      this.cache.set(hash, compiled);
      return compiled;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Runs a compiled stylesheet on an XML document; string parameters by local name. Transforms
   * run one at a time, so a runaway one fails alone.
   */
  transform(stylesheet: CompiledStylesheet, source: string, params: Record<string, string> = {}): Promise<string> {
    const result = this.queue.then(() => this.runOne(stylesheet, source, params));
    this.queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private queue: Promise<void> = Promise.resolve();

  private async runOne(stylesheet: CompiledStylesheet, source: string, params: Record<string, string>): Promise<string> {
    if (this.closed) throw new TransformInterrupted('shutting down');
    const { worker, ready } = this.ensureWorker();
    await ready; // the time limit is the stylesheet's: it starts once the worker has loaded saxon-js
    if (this.closed) throw new TransformInterrupted('shutting down'); // closed while it loaded: its worker is gone
    const id = ++this.counter;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TransformError(`transform by ${stylesheet.file} ran longer than ${this.timeoutMs} ms and was stopped`));
        this.restartWorker();
      }, this.timeoutMs);
      this.pending.set(id, {
        resolve: (output) => {
          if (output.length > this.maxOutput) reject(new TransformError(`transform by ${stylesheet.file} produced ${output.length} characters, above the limit of ${this.maxOutput}`));
          else resolve(output);
        },
        reject,
        timer,
      });
      worker.postMessage({ id, sef: stylesheet.sef, source, params });
    });
  }

  /**
   * The worker, started if needed, and a promise that resolves once it has loaded saxon-js
   * (rejects with a TransformError when it fails to; a TransformInterrupted when it takes longer
   * than compileTimeoutMs, or the engine closes meanwhile).
   */
  private ensureWorker(): { worker: Worker; ready: Promise<void> } {
    if (this.worker && this.workerReady) return { worker: this.worker, ready: this.workerReady };
    const worker = new Worker(WORKER);
    worker.unref();
    let loaded: () => void = () => undefined;
    let failed: (err: Error) => void = () => undefined;
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TransformInterrupted(`transform worker did not load saxon-js within ${this.compileTimeoutMs} ms`)), this.compileTimeoutMs);
      loaded = () => (clearTimeout(timer), resolve());
      failed = (err) => (clearTimeout(timer), reject(err));
    });
    this.readyFail = failed;
    void ready.then(() => {
      if (this.readyFail === failed) this.readyFail = undefined;
    }, () => (this.worker === worker ? this.restartWorker() : undefined));
    worker.on('message', (msg: { id: number; ok: boolean; output?: string; error?: string; ready?: boolean }) => {
      if (msg.ready) return loaded();
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.output ?? '');
      else p.reject(new TransformError(msg.error ?? 'transform failed'));
    });
    worker.on('error', (err) => {
      failed(new TransformError(`transform worker failed: ${err.message}`));
      this.failAll(new TransformError(`transform worker failed: ${err.message}`));
    });
    this.worker = worker;
    this.workerReady = ready;
    return { worker, ready };
  }

  /** Terminates the worker (a runaway transform); the other requests under way are interrupted (tried again), the next starts anew. */
  private restartWorker(): void {
    const worker = this.worker;
    this.worker = undefined;
    this.workerReady = undefined;
    this.failAll(new TransformInterrupted('transform worker restarted after another transform ran too long'));
    void worker?.terminate();
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }

  /** Ends the worker; transforms under way or asked for later reject with TransformInterrupted (shutting down). */
  async close(): Promise<void> {
    this.closed = true;
    this.readyFail?.(new TransformInterrupted('shutting down'));
    this.readyFail = undefined;
    this.failAll(new TransformInterrupted('shutting down'));
    await this.worker?.terminate();
    this.worker = undefined;
    this.workerReady = undefined;
  }
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}
