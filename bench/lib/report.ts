// Writing results: bench/results/<date>-<scenario>.json|.md|.svg, and the machine description
// that goes with every result file.

import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import path from 'node:path';
import { roundAll } from './stats.ts';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  node: string;
  prosody: string;
  ejabberd: string;
  virtualised: string;
}

function pkgVersion(name: string): string {
  try {
    return execFileSync('dpkg-query', ['-W', '-f=${Version}', name], { encoding: 'utf8', timeout: 5000 }).trim();
  } catch {
    return 'unknown';
  }
}

function osName(): string {
  try {
    const text = execFileSync('cat', ['/etc/os-release'], { encoding: 'utf8', timeout: 2000 });
    return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(text)?.[1] ?? os.type();
  } catch {
    return os.type();
  }
}

function hypervisor(): string {
  try {
    const text = execFileSync('lscpu', [], { encoding: 'utf8', timeout: 5000 });
    const vendor = /^Hypervisor vendor:\s*(.*)$/m.exec(text)?.[1];
    return vendor ? `yes (${vendor})` : 'no';
  } catch {
    return 'unknown';
  }
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    os: osName(),
    node: process.version,
    prosody: pkgVersion('prosody'),
    ejabberd: pkgVersion('ejabberd'),
    virtualised: hypervisor(),
  };
}

export function machineLine(m: Machine): string {
  return `${m.cores} × ${m.cpu} (${m.virtualised === 'no' ? 'bare metal' : `virtual machine: ${m.virtualised}`}), ${m.memoryGiB} GiB RAM, ${m.os}, Linux ${m.kernel}, Node ${m.node}, Prosody ${m.prosody}, ejabberd ${m.ejabberd}`;
}

export const today = (): string => new Date().toISOString().slice(0, 10);

export class Reporter {
  readonly written: string[] = [];

  constructor(
    readonly dir: string,
    readonly date: string,
    readonly meta: Record<string, unknown>,
  ) {}

  file(scenario: string, ext: string): string {
    return path.join(this.dir, `${this.date}-${scenario}.${ext}`);
  }

  /** The results of a scenario written earlier today in this folder, if any. */
  async read(scenario: string): Promise<unknown> {
    try {
      return (JSON.parse(await readFile(this.file(scenario, 'json'), 'utf8')) as { results?: unknown }).results;
    } catch {
      return undefined;
    }
  }

  /** Writes only the Markdown and SVG views of a scenario (its JSON stays as it is). */
  async writeViews(scenario: string, data: { md?: string; svg?: string | Array<{ name: string; svg: string }> }): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const files: Array<[string, string]> = [];
    if (data.md) files.push([this.file(scenario, 'md'), data.md]);
    if (typeof data.svg === 'string') files.push([this.file(scenario, 'svg'), data.svg]);
    else if (data.svg) for (const s of data.svg) files.push([this.file(`${scenario}-${s.name}`, 'svg'), s.svg]);
    for (const [f, text] of files) {
      await writeFile(f, text);
      this.written.push(f);
    }
  }

  async write(scenario: string, data: { json: unknown; md?: string; svg?: string | Array<{ name: string; svg: string }> }): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const json = { scenario, date: this.date, ...this.meta, results: roundAll(data.json, 3) };
    const file = this.file(scenario, 'json');
    await writeFile(file, `${JSON.stringify(json, null, 2)}\n`);
    this.written.push(file);
    await this.writeViews(scenario, data);
  }

}
