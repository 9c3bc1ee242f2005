// Settings accessors and their messages; per-partition state.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PerPartition, SettingError, Settings, TopicPartition } from '../src/index.js';

test('settings accessors', () => {
  const settings = new Settings({ output_topic: 'commissions', rate_percent: ' 5 ', on: 'true', ratio: '0.5' });
  assert.equal(settings.get('output_topic'), 'commissions');
  assert.equal(settings.get('nope'), undefined);
  assert.equal(settings.require('output_topic'), 'commissions');
  assert.equal(settings.parse('rate_percent', 'int'), 5);
  assert.equal(settings.parse('unset', 'int'), undefined);
  assert.equal(settings.parseOr('max_retries', 3, 'int'), 3);
  assert.equal(settings.parse('on', 'bool'), true);
  assert.equal(settings.parseOr('ratio', 1, 'number'), 0.5);
  assert.equal(settings.parseRequired('rate_percent', (text) => Number(text) * 2), 10);
  assert.deepEqual([...settings.entries()][0], ['on', 'true']);
  assert.equal(settings.size, 4);
  assert.ok(settings.has('on'));
  assert.deepEqual([...new Settings([['b', '2'], ['a', '1']]).entries()], [['a', '1'], ['b', '2']]);
});

test('setting errors read like the Rust SDK', () => {
  assert.throws(() => new Settings().require('region'), {
    name: 'SettingError',
    message: 'setting `region` is required but the pipeline does not set it',
  });
  assert.throws(() => new Settings({ rate_percent: 'five' }).parse('rate_percent', 'int'), {
    message: 'setting `rate_percent` = "five" is invalid: invalid digit found in string',
  });
  assert.throws(() => new Settings({ on: 'yes' }).parseOr('on', false, 'bool'), /is invalid: provided string was not `true` or `false`/);
  assert.throws(() => new Settings({ n: '9007199254740993' }).parse('n', 'int'), /too large/);
  assert.throws(() => new Settings().parseRequired('n', 'int'), /is required/);
  assert.throws(() => new Settings({ n: '1' }).parse('n', /** @type {any} */ ('float')), TypeError);
  assert.ok(SettingError.missing('x') instanceof Error);
});

test('per-partition state', () => {
  const counts = new PerPartition(() => 0);
  counts.set('clicks', 0, counts.entry('clicks', 0) + 1);
  counts.set('clicks', 1, 5);
  const lists = new PerPartition(() => /** @type {string[]} */ ([]));
  lists.entry('t', 2).push('x');
  lists.of({ topic: 't', partition: 2 }).push('y');
  assert.deepEqual(lists.get('t', 2), ['x', 'y']);
  assert.equal(counts.revoke(new TopicPartition('clicks', 1)), 5);
  assert.equal(counts.revoke(new TopicPartition('clicks', 9)), undefined);
  assert.equal(counts.get('clicks', 0), 1);
  assert.equal(counts.get('clicks', 1), undefined);
  assert.deepEqual([...counts.entries()].map(([tp, n]) => [String(tp), n]), [['clicks/0', 1]]);
  assert.equal(counts.size, 1);
});
