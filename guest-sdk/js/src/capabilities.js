/**
 * The host interfaces a processor may use, which it declares in its project.
 *
 * A JavaScript component imports every interface of the world it is built for,
 * whether the code calls it or not, so "capabilities follow use" (as in the Rust
 * SDK) cannot hold. Instead a project declares what it uses in package.json:
 *
 *     "ferry": { "main": "src/processor.js", "capabilities": ["output", "log"] }
 *
 * and the build targets a world with exactly those imports, so the host's grants
 * (`output_topics`, `allow_log`, `[pipeline.state]`, `[pipeline.http]`) and its choice to send
 * headers apply as they do to a Rust guest. `settings` is always imported. A
 * processor that does not declare `state` is built without the import, so its
 * component is the same as before state existed.
 * @module
 */

import { CapabilityError } from './processor.js';

/** Every capability a processor can declare. */
export const ALL = Object.freeze(['log', 'output', 'headers', 'state', 'http']);

const USES = { log: 'logs', output: 'emits records', headers: 'reads record headers', state: 'uses keyed state', http: 'sends HTTP requests' };

/**
 * `names` as a set, or a `TypeError` naming an unknown one.
 * @param {Iterable<string>} names
 * @returns {Set<string>}
 */
export function validate(names) {
  const declared = new Set(names);
  const unknown = [...declared].filter((name) => !ALL.includes(name)).sort();
  if (unknown.length > 0) throw new TypeError(`unknown capabilities ${JSON.stringify(unknown)}: a processor can declare ${JSON.stringify(ALL)}`);
  return declared;
}

/**
 * The error for using a capability the project does not declare.
 * @param {'log' | 'output' | 'headers' | 'state' | 'http'} capability
 */
export function missing(capability) {
  return new CapabilityError(
    `this processor ${USES[capability]} but does not declare the \`${capability}\` capability: ` +
      `add "${capability}" to "capabilities" in the "ferry" section of its package.json`,
  );
}
