// XEP-0060 end to end with Hermod attached to Prosody (alpha.test); bob is on ejabberd (beta.test).
import { pubsubSuite } from './pubsub-suite.ts';

pubsubSuite('prosody');
