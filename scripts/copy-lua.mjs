// Copies the Lua scripts next to the compiled shared/ module, which loads them
// at run time. The old copy goes first: a script renamed for a new key count
// must not leave its former file behind.
import { cpSync, rmSync } from 'node:fs';
const target = new URL('../dist/shared/lua', import.meta.url);
rmSync(target, { recursive: true, force: true });
cpSync(new URL('../shared/lua', import.meta.url), target, { recursive: true });
