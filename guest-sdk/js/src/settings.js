/**
 * The pipeline's `[pipeline.settings]`: string keys and values the operator sets,
 * read by the processor with typed accessors and clear errors.
 * @module
 */

/** A setting that is missing or does not parse (same messages as the Rust SDK). */
export class SettingError extends Error {
  /**
   * @param {string} key
   * @param {string} message
   */
  constructor(key, message) {
    super(message);
    this.name = 'SettingError';
    this.key = key;
  }

  /** @param {string} key */
  static missing(key) {
    return new SettingError(key, `setting \`${key}\` is required but the pipeline does not set it`);
  }

  /**
   * @param {string} key
   * @param {string} value
   * @param {string} reason
   */
  static invalid(key, value, reason) {
    return new SettingError(key, `setting \`${key}\` = ${JSON.stringify(value)} is invalid: ${reason}`);
  }
}

/** The built-in parsers, by name. Each throws with the reason on bad input. */
export const parsers = Object.freeze({
  /** @param {string} text */
  int(text) {
    if (!/^[+-]?\d+$/.test(text)) throw new Error('invalid digit found in string');
    const value = Number(text);
    if (!Number.isSafeInteger(value)) throw new Error('number too large to fit in target type');
    return value;
  },
  /** @param {string} text */
  number(text) {
    const value = Number(text);
    if (text === '' || Number.isNaN(value)) throw new Error('invalid float literal');
    return value;
  },
  /** @param {string} text */
  bool(text) {
    if (text === 'true') return true;
    if (text === 'false') return false;
    throw new Error('provided string was not `true` or `false`');
  },
  /** @param {string} text */
  string(text) {
    return text;
  },
});

/**
 * The settings a processor runs with:
 *
 *     settings.get('output_topic') ?? 'commissions'
 *     settings.require('region')              // throws SettingError if unset
 *     settings.parse('rate_percent', 'int')   // number | undefined
 *     settings.parseOr('max_retries', 3, 'int')
 */
export class Settings {
  /** @type {Map<string, string>} */
  #values;

  /** @param {Iterable<readonly [string, string]> | Record<string, string>} [values] */
  constructor(values = []) {
    const pairs = Symbol.iterator in Object(values) ? [.../** @type {Iterable<[string, string]>} */ (values)] : Object.entries(values);
    this.#values = new Map(pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /**
   * The value of `key`, if set.
   * @param {string} key
   */
  get(key) {
    return this.#values.get(key);
  }

  /**
   * The value of `key`; throws `SettingError` naming it if unset.
   * @param {string} key
   */
  require(key) {
    const value = this.#values.get(key);
    if (value === undefined) throw SettingError.missing(key);
    return value;
  }

  /**
   * The value of `key` parsed (surrounding whitespace removed) with a built-in
   * parser ('int', 'number', 'bool', 'string') or a function; `undefined` if
   * unset; throws `SettingError` if it does not parse.
   * @param {string} key
   * @param {keyof typeof parsers | ((text: string) => any)} as
   */
  parse(key, as) {
    const value = this.#values.get(key);
    if (value === undefined) return undefined;
    const parser = typeof as === 'function' ? as : parsers[as];
    if (typeof parser !== 'function') throw new TypeError(`unknown setting parser ${JSON.stringify(as)}`);
    try {
      return parser(value.trim());
    } catch (error) {
      throw SettingError.invalid(key, value, error instanceof Error ? error.message : String(error));
    }
  }

  /**
   * The value of `key` parsed, or `fallback` if unset.
   * @param {string} key
   * @param {any} fallback
   * @param {keyof typeof parsers | ((text: string) => any)} as
   */
  parseOr(key, fallback, as) {
    const parsed = this.parse(key, as);
    return parsed === undefined ? fallback : parsed;
  }

  /**
   * The value of `key` parsed; throws `SettingError` if unset or invalid.
   * @param {string} key
   * @param {keyof typeof parsers | ((text: string) => any)} as
   */
  parseRequired(key, as) {
    const parsed = this.parse(key, as);
    if (parsed === undefined) throw SettingError.missing(key);
    return parsed;
  }

  /** Every setting, ordered by key. */
  entries() {
    return this.#values.entries();
  }

  /** How many settings are set. */
  get size() {
    return this.#values.size;
  }

  /** @param {string} key */
  has(key) {
    return this.#values.has(key);
  }
}
