// The TypeScript declarations compile against a typed processor (needs the
// `typescript` dev dependency: `npm install` in guest-sdk/js).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';

const tsc = fileURLToPath(new URL('../node_modules/.bin/tsc', import.meta.url));
const project = fileURLToPath(new URL('./tsconfig.json', import.meta.url));

test('the .d.ts files type-check a TypeScript processor', { skip: !existsSync(tsc) && 'run npm install first' }, () => {
  const result = spawnSync(tsc, ['-p', project], { encoding: 'utf8' });
  assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
});

test("the SDK's own JSDoc types check (strict)", { skip: !existsSync(tsc) && 'run npm install first' }, () => {
  const src = fileURLToPath(new URL('../src/', import.meta.url));
  const args = ['--allowJs', '--checkJs', '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', ''];
  const result = spawnSync(tsc, [...args, `${src}index.js`, `${src}component.js`], { encoding: 'utf8' });
  assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
});
