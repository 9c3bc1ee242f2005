#!/usr/bin/env node
/**
 * Builds a JavaScript processor project into a ferry component.
 *
 *     node guest-sdk/js/build.mjs <project dir> <output .wasm> [--wit DIR]
 *
 * The project's package.json says what to build:
 *
 *     "ferry": { "main": "src/processor.js", "capabilities": ["output", "log"] }
 *
 * `main` is the module that calls `exportProcessor`; `capabilities` lists the host
 * interfaces it uses (any of log, output, headers, state, http). The build stages the modules
 * `main` reaches through relative imports (with `ferry-sdk` imports pointed at a
 * copy of the SDK), writes a WIT world that imports exactly the declared
 * capabilities (plus `settings`: a processor that declares `state` imports
 * `ferry:processor/state`, as a Rust processor built for the `stateful-processor`
 * world does once it calls `ctx.state()`, and one that does not is built exactly
 * as before), an entry module that hands those imports to the
 * SDK, and runs componentize-js 0.23.0 on it with the fetch-event feature off, and
 * the http feature (the engine's `fetch`, over `wasi:http/outgoing-handler`) on only
 * when the project declares `http`: one that does not has no `wasi:http` import,
 * which the host requires of a pipeline without a `[pipeline.http]` grant.
 * componentize-js evaluates the entry module at build time under Wizer and
 * snapshots the engine, so an instance starts with every module compiled and
 * evaluated and the processor object constructed.
 *
 * Needs `npm install` in guest-sdk/js (componentize-js and es-module-lexer); it
 * runs it if they are missing.
 */

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
const DEFAULT_WIT = resolve(SDK_DIR, '..', '..', 'wit');
const CAPABILITIES = ['log', 'output', 'headers', 'state', 'http'];
/** The generated world. Not `processor`: the contract's own world stays as it is. */
const WORLD = 'ferry-build';
const INTERFACE = (/** @type {string} */ name) => `ferry:processor/${name}@0.2.0`;

class BuildError extends Error {}

/** @param {string} project */
async function readProject(project) {
  const manifestPath = join(project, 'package.json');
  if (!existsSync(manifestPath)) throw new BuildError(`${manifestPath} does not exist: a JS processor project needs one with a "ferry" section`);
  const ferry = JSON.parse(await readFile(manifestPath, 'utf8')).ferry;
  if (typeof ferry !== 'object' || ferry === null) throw new BuildError(`${manifestPath} has no "ferry" section`);
  const main = ferry.main ?? 'src/processor.js';
  if (typeof main !== 'string' || !existsSync(join(project, main))) {
    throw new BuildError(`${manifestPath}: "ferry.main" (${JSON.stringify(main)}) must name the module that calls exportProcessor`);
  }
  const capabilities = ferry.capabilities;
  if (!Array.isArray(capabilities) || capabilities.some((c) => !CAPABILITIES.includes(c))) {
    throw new BuildError(
      `${manifestPath}: "ferry.capabilities" must list the host interfaces the processor uses, any of ${JSON.stringify(CAPABILITIES)} (or [])`,
    );
  }
  return { main: resolve(project, main), capabilities: [...new Set(capabilities)].sort() };
}

/** Installs the SDK's build tools unless present. */
function ensureTools() {
  const needed = ['@bytecodealliance/componentize-js', 'es-module-lexer'];
  if (needed.every((name) => existsSync(join(SDK_DIR, 'node_modules', name, 'package.json')))) return;
  console.error('installing the build tools with npm (guest-sdk/js)');
  const result = spawnSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: SDK_DIR, stdio: 'inherit' });
  if (result.status !== 0) throw new BuildError('npm install failed in guest-sdk/js');
}

/**
 * Copies `main` and every module it reaches through relative imports into
 * `stage/app`, pointing `ferry-sdk` imports at `stage/sdk`. Other bare imports
 * are refused: componentize-js only follows relative paths.
 * @param {string} project
 * @param {string} main
 * @param {string} stage
 */
async function stageApp(project, main, stage) {
  const { init, parse } = await import('es-module-lexer');
  await init;
  const seen = new Set();
  const queue = [main];
  while (queue.length > 0) {
    const file = /** @type {string} */ (queue.pop());
    if (seen.has(file)) continue;
    seen.add(file);
    const fromProject = relative(project, file);
    if (fromProject.startsWith('..') || !/\.m?js$/.test(file)) {
      throw new BuildError(`${file}: only .js/.mjs modules inside the project can be built`);
    }
    const target = join(stage, 'app', fromProject);
    let source = await readFile(file, 'utf8');
    const [imports] = parse(source, file);
    // Rewrite from the end so earlier positions stay valid.
    for (const imp of [...imports].reverse()) {
      const spec = imp.n;
      if (imp.d > -1) throw new BuildError(`${file}: dynamic import() is not supported in a component`);
      if (imp.d === -2 || spec === undefined) continue; // import.meta
      let replacement = spec;
      if (spec === 'ferry-sdk') {
        replacement = relative(dirname(target), join(stage, 'sdk', 'index.js')).split(sep).join('/');
        if (!replacement.startsWith('.')) replacement = `./${replacement}`;
      } else if (spec.startsWith('./') || spec.startsWith('../')) {
        queue.push(resolve(dirname(file), spec));
      } else if (!spec.startsWith('ferry:') && !spec.startsWith('wasi:')) {
        throw new BuildError(`${file}: cannot build the import of ${JSON.stringify(spec)}: only ferry-sdk and relative modules are bundled`);
      }
      source = source.slice(0, imp.s) + replacement + source.slice(imp.e);
    }
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, source);
  }
  return join(stage, 'app', relative(project, main));
}

/**
 * @param {string[]} capabilities
 * @param {string} mainInStage
 * @param {string} stage
 */
function entrySource(capabilities, mainInStage, stage) {
  const app = `./${relative(stage, mainInStage).split(sep).join('/')}`;
  const names = ['settings', ...capabilities.filter((c) => c !== 'http')];
  return [
    "// Generated by guest-sdk/js/build.mjs: the processor's declared imports, handed to the SDK.",
    ...names.map((name) => `import * as ${name} from '${INTERFACE(name)}';`),
    "import { makeHandler } from './sdk/component.js';",
    `import '${app}';`,
    '',
    `export const handler = makeHandler({ ${names.join(', ')} });`,
    '',
  ].join('\n');
}

/**
 * @param {string} project
 * @param {string} output
 * @param {string} wit
 */
async function build(project, output, wit) {
  const { main, capabilities } = await readProject(project);
  ensureTools();
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const stage = await mkdtemp(join(tmpdir(), 'ferry-js-build-'));
  try {
    await mkdir(join(stage, 'sdk'));
    for (const name of await readdir(join(SDK_DIR, 'src'))) {
      if (name.endsWith('.js') && name !== 'testing.js') await copyFile(join(SDK_DIR, 'src', name), join(stage, 'sdk', name));
    }
    const mainInStage = await stageApp(project, main, stage);
    await mkdir(join(stage, 'wit'));
    for (const name of await readdir(wit)) {
      if (name.endsWith('.wit')) await copyFile(join(wit, name), join(stage, 'wit', name));
    }
    // No `package` line: the file joins the package of processor.wit beside it.
    const imports = ['settings', ...capabilities.filter((c) => c !== 'http')].map((name) => `    import ${name};\n`).join('');
    await writeFile(join(stage, 'wit', 'ferry-build.wit'), `// Generated by guest-sdk/js/build.mjs.\nworld ${WORLD} {\n${imports}    export handler;\n}\n`);
    const entry = join(stage, 'entry.js');
    await writeFile(entry, entrySource(capabilities, mainInStage, stage));

    const started = performance.now();
    const { component } = await componentize({
      sourcePath: entry,
      witPath: join(stage, 'wit'),
      worldName: WORLD,
      disableFeatures: capabilities.includes('http') ? ['fetch-event'] : ['http', 'fetch-event'],
    });
    const seconds = (performance.now() - started) / 1000;
    await mkdir(dirname(resolve(output)), { recursive: true });
    await writeFile(output, component);
    const size = (await stat(output)).size;
    console.error(
      `built ${output} (${(size / 1e6).toFixed(1)} MB) from ${project} in ${seconds.toFixed(1)} s; imports: ${['settings', ...capabilities].join(', ')}`,
    );
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

async function main() {
  const args = process.argv.slice(2);
  let wit = DEFAULT_WIT;
  const witAt = args.indexOf('--wit');
  if (witAt >= 0) {
    wit = resolve(args[witAt + 1] ?? '');
    args.splice(witAt, 2);
  }
  if (args.length !== 2) {
    console.error('usage: node guest-sdk/js/build.mjs <project dir> <output .wasm> [--wit DIR]');
    return 2;
  }
  try {
    await build(resolve(args[0]), resolve(args[1]), wit);
  } catch (error) {
    if (!(error instanceof BuildError)) throw error;
    console.error(`error: ${error.message}`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
