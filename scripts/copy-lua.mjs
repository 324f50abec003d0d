// Copies the Lua scripts next to the compiled shared/ module, which loads them at run time.
import { cpSync } from 'node:fs';
cpSync(new URL('../shared/lua', import.meta.url), new URL('../dist/shared/lua', import.meta.url), { recursive: true });
