/**
 * HTTP egress as a native test sees it: `fetch` under the pipeline's `allow`
 * rules, answered by a test's stand-in service or, without one, by the real
 * `fetch` (a test's own server on loopback).
 *
 * In a component, a processor calls the engine's `fetch`, which sends through
 * the host's `wasi:http/outgoing-handler`: the project declares the `http`
 * capability (only then is the component built with the import, which the host
 * links only for a pipeline with a `[pipeline.http]` grant), and its
 * `processBatch` is async, so it can await the answers. The host checks every
 * request (scheme, host and port against the grant; the address it resolves to)
 * and fails a request over the batch's budgets or past its time limit: `fetch`
 * rejects with a `TypeError` for each of these. The host follows no redirect; a
 * redirect that `fetch` follows is a new request, checked like any other.
 * @module
 */

/**
 * One `allow` rule: scheme, host (lower-case, `*.` before a name for its
 * subdomains) and port, as the host's config reads `scheme://host[:port]` (its
 * finer checks stay the host's). Throws a `TypeError` for anything else.
 * @param {string} text
 * @returns {{scheme: string, host: string, port: number}}
 */
export function endpoint(text) {
  const bad = () => new TypeError(`\`${text}\` is not scheme://host[:port] with scheme http or https`);
  const trimmed = text.endsWith('/') ? text.slice(0, -1) : text;
  const at = trimmed.indexOf('://');
  if (at < 0) throw bad();
  const scheme = trimmed.slice(0, at).toLowerCase();
  const defaultPort = { http: 80, https: 443 }[scheme];
  const authority = trimmed.slice(at + 3);
  if (defaultPort === undefined || authority === '' || /[/?#@]/.test(authority)) throw bad();
  const colon = authority.lastIndexOf(':');
  let host = authority;
  let port = defaultPort;
  if (colon >= 0 && !authority.slice(colon).includes(']')) {
    const digits = authority.slice(colon + 1);
    port = /^\d+$/.test(digits) ? Number(digits) : 0;
    if (port < 1 || port > 65535) throw new TypeError(`\`${text}\`: \`${digits}\` is not a port (1-65535)`);
    host = authority.slice(0, colon);
  }
  host = host.toLowerCase();
  return { scheme, host: host.endsWith('.') ? host.slice(0, -1) : host, port };
}

/**
 * Whether `rule` allows `target`.
 * @param {{scheme: string, host: string, port: number}} rule
 * @param {{scheme: string, host: string, port: number}} target
 */
export function allows(rule, target) {
  if (rule.scheme !== target.scheme || rule.port !== target.port) return false;
  if (!rule.host.startsWith('*.')) return rule.host === target.host;
  const dot = target.host.indexOf('.');
  return dot > 0 && target.host.slice(dot + 1) === rule.host.slice(2);
}

/**
 * A test's stand-in for the services a processor calls: gets the `Request`,
 * returns a `Response` (or a Promise of one), or throws to play a failed request.
 * @typedef {(request: Request) => Response | Promise<Response>} Service
 */

/**
 * The `fetch` a harness puts in place while a batch runs.
 * @param {{allow: Array<{scheme: string, host: string, port: number}> | null, service: Service | null, require: () => void, fetch: typeof fetch}} options
 * @returns {typeof fetch}
 */
export function standInFetch({ allow, service, require, fetch: realFetch }) {
  return async (input, init) => {
    require();
    const request = new Request(input, init);
    const url = new URL(request.url);
    const target = endpoint(`${url.protocol.replace(/:$/, '')}://${url.host}`);
    if (allow !== null && !allow.some((rule) => allows(rule, target))) {
      throw new TypeError(
        `fetch refused: ${target.scheme}://${target.host}:${target.port} is not in the pipeline's [pipeline.http] allow`,
      );
    }
    if (service === null) return realFetch(request);
    return service(request);
  };
}
