// Loaded into configurable-http-proxy (node --require tlsreload.js configurable-http-proxy ...) when the hub's
// certificate comes from an ACME CA: the proxy has no reload of its own, so when the certificate file its
// --ssl-cert names changes (deployer_hub.acmecert renews it), its HTTPS server is given the new key and
// certificate with setSecureContext. New connections get the new certificate; open ones are not closed.
"use strict";
const fs = require("fs");
const https = require("https");

function flag(name) {
  const args = process.argv;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name && i + 1 < args.length) return args[i + 1];
    if (args[i].startsWith(name + "=")) return args[i].slice(name.length + 1);
  }
  return null;
}

const certPath = flag("--ssl-cert");
const keyPath = flag("--ssl-key");
const create = https.createServer;

https.createServer = function (options, ...rest) {
  const server = create.call(this, options, ...rest);
  // Only the proxy's own server (the API server has other or no certificates).
  if (!certPath || !keyPath || !options || !options.cert) return server;
  let last;
  try {
    last = fs.readFileSync(certPath);
  } catch (e) {
    return server;
  }
  if (!Buffer.from(options.cert).equals(last)) return server;
  const reload = () => {
    try {
      const cert = fs.readFileSync(certPath);
      if (cert.equals(last)) return;
      // setSecureContext resets what it is not given: pass the proxy's other TLS options again.
      server.setSecureContext({ ...options, cert, key: fs.readFileSync(keyPath) });
      last = cert;
      console.log(`[tlsreload] serving the new certificate from ${certPath} (open connections keep theirs)`);
    } catch (e) {
      // A key and certificate caught between their renames do not match: the next change retries.
      console.error(`[tlsreload] kept the current certificate: ${e.message}`);
    }
  };
  // Polling the path (not the inode): the files are replaced by rename.
  fs.watchFile(certPath, { interval: 2000 }, reload).unref();
  fs.watchFile(keyPath, { interval: 2000 }, reload).unref();
  return server;
};
