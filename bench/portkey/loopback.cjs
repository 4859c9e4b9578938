// Preloaded into the Portkey gateway by bench/bench.py (node --require): the
// gateway's server calls listen(port) with no host, which binds every
// interface; the benchmark keeps it on the loopback address.
'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args.length < 2 || args[1] == null || typeof args[1] === 'function')) {
    const cb = typeof args[1] === 'function' ? args[1] : args[2];
    return cb ? listen.call(this, args[0], '127.0.0.1', cb) : listen.call(this, args[0], '127.0.0.1');
  }
  return listen.apply(this, args);
};
