// XEP-0060 end to end with Hermod attached to ejabberd (beta.test); bob is on Prosody (alpha.test).
import { pubsubSuite } from './pubsub-suite.ts';

pubsubSuite('ejabberd');
