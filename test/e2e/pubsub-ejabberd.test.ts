// XEP-0060 end to end with Hermod attached to ejabberd (beta.test); bob is on Prosody (alpha.test).
import { pubsubSuite, realSite } from './pubsub-suite.ts';

pubsubSuite('Hermod attached to ejabberd', () => realSite('ejabberd'));
