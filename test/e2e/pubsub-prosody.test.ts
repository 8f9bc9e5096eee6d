// XEP-0060 end to end with Hermod attached to Prosody (alpha.test); bob is on ejabberd (beta.test).
import { pubsubSuite, realSite } from './pubsub-suite.ts';

pubsubSuite('Hermod attached to prosody', () => realSite('prosody'));
