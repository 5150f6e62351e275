/**
 * How to reach the API server: its URL, TLS material and credentials, from a
 * kubeconfig file or the in-cluster service account.
 *
 * Read here rather than with @kubernetes/client-node's KubeConfig, which
 * loads the whole generated client (some 75 MB of the agent's memory) to
 * do it. Credentials only client-node implements (exec plugins, auth
 * providers, proxies) make this module load it, and only then.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { isIPv6 } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';
import yaml from 'js-yaml';

const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnectionOptions {
  /** A kubeconfig file; without one, the in-cluster service account. */
  kubeconfig?: string;
  /** Overrides the server of the kubeconfig (kube-proxy's --master). */
  master?: string;
}

export interface KubeConnection {
  /** The server's base URL, e.g. https://10.0.0.1:6443. */
  readonly server: URL;
  /** Agent, TLS and Authorization header for one request; read afresh each time, so rotated tokens are picked up. */
  requestOptions(): Promise<https.RequestOptions>;
}

type Entry = Record<string, unknown>;

const isEntry = (v: unknown): v is Entry => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The entry of a kubeconfig list (clusters, users, contexts) with this name. */
function named(list: unknown, name: unknown, what: string): Entry {
  const found = Array.isArray(list) ? list.find((e) => isEntry(e) && e.name === name) : undefined;
  const body = isEntry(found) ? found[what] : undefined;
  if (!isEntry(body)) throw new Error(`kubeconfig: no ${what} named ${JSON.stringify(name)}`);
  return body;
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

interface Credentials {
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecure: boolean;
  serverName?: string;
  token?: string;
  tokenFile?: string;
  basicAuth?: string;
}

/** File paths in a kubeconfig are relative to the file's folder. */
const resolved = (base: string, path: string): string => (isAbsolute(path) ? path : join(base, path));

function material(base: string, file: unknown, data: unknown): Buffer | undefined {
  const path = text(file);
  if (path !== undefined) return readFileSync(resolved(base, path));
  const inline = text(data);
  return inline === undefined ? undefined : Buffer.from(inline, 'base64');
}

/** The current context's cluster and user, or undefined where they need client-node (exec, auth-provider, proxy-url). */
function fromKubeconfig(file: string): Credentials | undefined {
  const config = yaml.load(readFileSync(file, 'utf8'));
  if (!isEntry(config)) throw new Error(`kubeconfig ${file}: not a mapping`);
  const context = named(config.contexts, config['current-context'], 'context');
  const cluster = named(config.clusters, context.cluster, 'cluster');
  const user = context.user === undefined ? {} : named(config.users, context.user, 'user');
  if (user.exec !== undefined || user['auth-provider'] !== undefined || cluster['proxy-url'] !== undefined) return undefined;
  const server = text(cluster.server);
  if (server === undefined) throw new Error(`kubeconfig ${file}: the cluster has no server`);
  const base = dirname(file);
  const username = text(user.username);
  const tokenFile = text(user.tokenFile);
  return {
    server,
    ca: material(base, cluster['certificate-authority'], cluster['certificate-authority-data']),
    cert: material(base, user['client-certificate'], user['client-certificate-data']),
    key: material(base, user['client-key'], user['client-key-data']),
    insecure: cluster['insecure-skip-tls-verify'] === true,
    serverName: text(cluster['tls-server-name']),
    token: text(user.token),
    tokenFile: tokenFile === undefined ? undefined : resolved(base, tokenFile),
    basicAuth: username === undefined ? undefined : `${username}:${text(user.password) ?? ''}`,
  };
}

/** As client-go's rest.InClusterConfig: the service's address from the environment, the mounted CA and token. */
function inCluster(): Credentials {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new Error('no --kubeconfig, and not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset)');
  return {
    server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    ca: readFileSync(`${SERVICE_ACCOUNT}/ca.crt`),
    insecure: false,
    tokenFile: `${SERVICE_ACCOUNT}/token`,
  };
}

function connectionOf(creds: Credentials, master: string | undefined): KubeConnection {
  const server = new URL(master ?? creds.server);
  const tls = { ca: creds.ca, cert: creds.cert, key: creds.key, rejectUnauthorized: !creds.insecure, servername: creds.serverName };
  const agent = server.protocol === 'http:' ? new http.Agent({ keepAlive: true }) : new https.Agent({ keepAlive: true, ...tls });
  return {
    server,
    async requestOptions() {
      const token = creds.tokenFile === undefined ? creds.token : readFileSync(creds.tokenFile, 'utf8').trim();
      const headers: Record<string, string> = {};
      if (token !== undefined) headers.Authorization = `Bearer ${token}`;
      else if (creds.basicAuth !== undefined) headers.Authorization = `Basic ${Buffer.from(creds.basicAuth).toString('base64')}`;
      return { agent, headers, ...tls };
    },
  };
}

/** Credentials this module does not read itself: client-node's KubeConfig, loaded for them alone. */
async function viaClientNode(opts: KubeConnectionOptions): Promise<KubeConnection> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromFile(opts.kubeconfig!);
  const server = opts.master ?? kc.getCurrentCluster()?.server;
  if (server === undefined) throw new Error(`kubeconfig ${opts.kubeconfig}: no current cluster`);
  return {
    server: new URL(server),
    async requestOptions() {
      const options: https.RequestOptions = {};
      await kc.applyToHTTPSOptions(options);
      return options;
    },
  };
}

export async function connectToApiServer(opts: KubeConnectionOptions): Promise<KubeConnection> {
  if (opts.kubeconfig === undefined) return connectionOf(inCluster(), opts.master);
  const creds = fromKubeconfig(opts.kubeconfig);
  return creds === undefined ? viaClientNode(opts) : connectionOf(creds, opts.master);
}
