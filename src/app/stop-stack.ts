// One stack of things to undo, used both for a clean shutdown and for a start that fails half
// way: each part that opens something pushes how to close it right after opening it, and
// `unwind` closes them newest first. A failing step is logged and the rest still run, so one
// stuck part never leaves the others open.

export interface StopLog {
  error(msg: string, fields?: Record<string, unknown>): void;
}

export class StopStack {
  private readonly steps: Array<{ name: string; run: () => unknown }> = [];
  private unwinding: Promise<void> | undefined;

  constructor(private readonly log: StopLog) {}

  /** Registers `run` (sync or async) to be called by `unwind`, before everything pushed earlier. */
  push(name: string, run: () => unknown): void {
    if (this.unwinding) throw new Error(`cannot add '${name}': already stopping`);
    this.steps.push({ name, run });
  }

  /** What is registered, oldest first (for tests and diagnostics). */
  get names(): string[] {
    return this.steps.map((s) => s.name);
  }

  /**
   * Runs every registered step, newest first, each awaited; failures are logged with the step's
   * name and do not stop the others. Idempotent: a second call returns the first call's promise.
   */
  unwind(): Promise<void> {
    this.unwinding ??= (async () => {
      for (let step = this.steps.pop(); step; step = this.steps.pop()) {
        try {
          await step.run();
        } catch (err) {
          this.log.error('stop step failed', { step: step.name, reason: err instanceof Error ? err.message : String(err) });
        }
      }
    })();
    return this.unwinding;
  }
}

/**
 * Runs `build` with a fresh stack; if it throws, unwinds what it had opened and rethrows, so a
 * start that fails half way leaves nothing open.
 */
export async function buildOrUnwind<T>(stack: StopStack, build: (stack: StopStack) => Promise<T>): Promise<T> {
  try {
    return await build(stack);
  } catch (err) {
    await stack.unwind();
    throw err;
  }
}
