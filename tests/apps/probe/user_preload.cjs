'use strict';
// A user's own --require preload: the probe must run it too (it is chained, not replaced).
globalThis.USER_PRELOAD = 'loaded';
