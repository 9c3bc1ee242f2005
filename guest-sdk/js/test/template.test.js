// The `ferry new --lang js` template: filled in, its own tests pass.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const SDK = fileURLToPath(new URL('..', import.meta.url));

/**
 * What `ferry new` does: copy the template, fill in the placeholders.
 * @param {string} target
 * @param {string} name
 */
async function instantiate(target, name) {
  await cp(join(SDK, 'template'), target, { recursive: true });
  for (const entry of await readdir(target, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath ?? entry.path, entry.name);
    await writeFile(path, (await readFile(path, 'utf8')).replaceAll('{{name}}', name).replaceAll('{{sdk_path}}', SDK));
  }
}

test('the template installs and its tests pass', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-template-'));
  try {
    const project = join(dir, 'demo');
    await instantiate(project, 'demo');
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--offline'], { cwd: project, encoding: 'utf8' });
    assert.equal(install.status, 0, install.stderr);
    // Without NODE_TEST_CONTEXT, which would make the child report in the parent's wire format.
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'NODE_TEST_CONTEXT'));
    const run = spawnSync(process.execPath, ['--test', 'test/'], { cwd: project, encoding: 'utf8', env });
    assert.equal(run.status, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /# pass 2/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
