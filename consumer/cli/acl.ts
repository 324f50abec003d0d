/** `qsync acl <role>`: least-privilege ACL rules for a qsync user. */
import { Option, type Command } from 'commander';
import { nameOption, choiceOption } from '../../shared/config.js';
import { DEFAULT_PREFIX } from '../../shared/keys.js';
import { aclRules, ACL_ROLES } from '../../shared/acl.js';

export function aclCommand(program: Command): void {
  program
    .command('acl')
    .description(`print least-privilege ACL rules for a qsync user (${ACL_ROLES.join(', ')})`)
    .argument('<role>', ACL_ROLES.join(' | '))
    .addOption(new Option('--prefix <name>', "prefix of qsync's keys").env('QSYNC_PREFIX').default(DEFAULT_PREFIX))
    .option('--user <name>', 'user name for the printed ACL SETUSER line', 'qsync')
    .action((role: string, o: { prefix: string; user: string }) => {
      const r = choiceOption(role, 'role', ACL_ROLES, 'consumer-master');
      process.stdout.write(
        `ACL SETUSER ${o.user} on >PASSWORD ${aclRules(r, nameOption(o.prefix, '--prefix', DEFAULT_PREFIX))
          .map((rule) => (rule.includes(' ') ? `"${rule}"` : rule))
          .join(' ')}\n`,
      );
    });
}
