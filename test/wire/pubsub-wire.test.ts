// The XEP-0060 suite (test/e2e/pubsub-suite.ts) on the in-process wire harness: the same cases
// as against Prosody and ejabberd, without servers or root, so a change to a handler, a form or
// the service core is tested in seconds. Cases that restart processes are skipped here.
import { pubsubSuite, type SuiteSite } from '../e2e/pubsub-suite.ts';
import { WireHarness } from './harness.ts';

const HOME = 'alpha.test';
const REMOTE = 'beta.test';

async function wireSite(): Promise<SuiteSite> {
  const harness = await WireHarness.start({ jid: `pubsub.${HOME}`, config: { pubsub: { admins: [`admin@${HOME}`] } } });
  return {
    SVC: harness.jid,
    connect: async (where, user, resource = 'test') => harness.client(`${user}@${where === 'home' ? HOME : REMOTE}/${resource}`),
    stop: () => harness.stop(),
  };
}

pubsubSuite('Hermod on the in-process wire harness', wireSite, { processes: false });
