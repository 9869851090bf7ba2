// The gRPC side of the driver, and nothing else: the CSI Identity and Node services on the
// driver's socket, and the kubelet's plugin registration service on a socket in the kubelet's
// registration directory. Each call is handed to Volumes (volumes.ts); a CsiError becomes its
// status code with its one-line message. RPCs not listed here (NodeStageVolume, the Controller
// service, ...) answer UNIMPLEMENTED, as grpc-js answers for any method without a handler. Each
// publish and unpublish is told to an observer (the metrics) with its answer's code and time.

import { existsSync } from 'node:fs'
import { mkdir, unlink } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import createDebug from 'debug'
import { InputError } from '../volume/shape.js'
import { serveRewritten } from './authority.js'
import { DRIVER_NAME, answers } from './endpoint.js'
import { CsiError, type PublishRequest, type Volumes } from './volumes.js'

const log = createDebug('dapifs:csi:server')


const HERE = path.dirname(fileURLToPath(import.meta.url))
/** The .proto files: beside this module (dist/csi/, copied by the build) or in lib/csi/. */
function protoPath(name: string): string {
  const here = path.join(HERE, name)
  return existsSync(here) ? here : path.join(HERE, '..', '..', 'lib', 'csi', name)
}

const LOAD = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }

type Pkg = Record<string, grpc.ServiceClientConstructor & Record<string, unknown>>

export function loadCsi(): { Identity: grpc.ServiceClientConstructor; Node: grpc.ServiceClientConstructor } {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath('csi.proto'), LOAD)) as unknown as { csi: { v1: Pkg } }
  return { Identity: pkg.csi.v1.Identity!, Node: pkg.csi.v1.Node! }
}

export function loadRegistration(): grpc.ServiceClientConstructor {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath('registration.proto'), LOAD)) as unknown as { pluginregistration: Pkg }
  return pkg.pluginregistration.Registration!
}

type Handler = (req: never, deadline: number) => Promise<object>

/** What the metrics hear of the calls that publish and unpublish (observe/metrics.ts). */
export interface CallObserver {
  /** A call answered: its gRPC code's name (OK, INVALID_ARGUMENT, ...) and how long it took. */
  answered(method: 'publish' | 'unpublish', code: string, seconds: number): void
}

function unary(fn: Handler, name: string, answered?: (code: string, seconds: number) => void): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const t0 = performance.now()
    const d = call.getDeadline()
    const deadline = d instanceof Date ? d.getTime() : Number.isFinite(d) ? d : Date.now() + 60_000
    const done = (code: string): void => answered?.(code, (performance.now() - t0) / 1000)
    fn(call.request as never, deadline).then((res) => { done('OK'); callback(null, res) }, (e: unknown) => {
      if (e instanceof CsiError) {
        log('%s: %s %s', name, e.code, e.message)
        done(e.code)
        callback({ code: grpc.status[e.code], details: e.message })
      } else {
        log('%s: internal error: %s', name, (e as Error).stack)
        done('INTERNAL')
        callback({ code: grpc.status.INTERNAL, details: `internal error: ${(e as Error).message}` })
      }
    })
  }
}

/**
 * Serves `server` on a unix socket, replacing a stale socket file; refuses a live one. Connections
 * reach grpc-js through the :authority rewriter (authority.ts), or the kubelet could not call us.
 */
async function listen(server: grpc.Server, socket: string): Promise<net.Server> {
  await mkdir(path.dirname(socket), { recursive: true })
  if (existsSync(socket)) {
    if (await answers(socket)) throw new InputError(socket, 'another process is serving this socket (is another dapifs csi running?)')
    await unlink(socket)
  }
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure())
  return serveRewritten(socket, (c) => injector.injectConnection(c))
}

export interface DriverInfo {
  nodeName: string
  version: string
  /** Whether the node's pods have been listed: Probe's answer. */
  ready: () => boolean
}

export class CsiServer {
  private readonly server = new grpc.Server()
  private socket: string | undefined
  private listener: net.Server | undefined

  constructor(volumes: Volumes, info: DriverInfo, observe?: CallObserver) {
    const { Identity, Node } = loadCsi()
    this.server.addService(Identity.service, {
      GetPluginInfo: unary(async () => ({ name: DRIVER_NAME, vendor_version: info.version, manifest: {} }), 'GetPluginInfo'),
      // No CONTROLLER_SERVICE, no topology: a node plugin for ephemeral volumes only.
      GetPluginCapabilities: unary(async () => ({ capabilities: [] }), 'GetPluginCapabilities'),
      Probe: unary(async () => ({ ready: { value: info.ready() } }), 'Probe'),
    })
    this.server.addService(Node.service, {
      NodeGetInfo: unary(async () => ({ node_id: info.nodeName, max_volumes_per_node: '0' }), 'NodeGetInfo'),
      // VOLUME_MOUNT_GROUP: the kubelet (1.26 on) sends the pod's fsGroup as volume_mount_group and
      // leaves ownership to the driver, whatever the CSIDriver's fsGroupPolicy (volumes.ts, publish).
      NodeGetCapabilities: unary(async () => ({ capabilities: [{ rpc: { type: 'VOLUME_MOUNT_GROUP' } }] }), 'NodeGetCapabilities'),
      NodePublishVolume: unary(async (req: PublishRequest, deadline) => { await volumes.publish(req, deadline); return {} }, 'NodePublishVolume',
        observe && ((code, seconds) => observe.answered('publish', code, seconds))),
      NodeUnpublishVolume: unary(async (req: { volume_id: string; target_path: string }) => {
        await volumes.unpublish(req.volume_id, req.target_path)
        return {}
      }, 'NodeUnpublishVolume', observe && ((code, seconds) => observe.answered('unpublish', code, seconds))),
    })
  }

  async listen(socket: string): Promise<void> {
    this.listener = await listen(this.server, socket)
    this.socket = socket
  }

  async stop(): Promise<void> {
    await shutdown(this.server, this.listener)
    if (this.socket) await unlink(this.socket).catch(() => {})
  }
}

/**
 * The kubelet's plugin registration service, so that no node-driver-registrar sidecar is
 * needed: the kubelet sees `<dir>/csi.dapifs.dev-reg.sock` appear, asks GetInfo, registers the
 * driver at the CSI socket it names (calling NodeGetInfo there), and reports the outcome.
 */
export class RegistrationServer {
  private readonly server = new grpc.Server()
  private listener: net.Server | undefined
  readonly socket: string

  constructor(registrationDir: string, csiSocket: string, report: (registered: boolean, error: string) => void) {
    this.socket = path.join(registrationDir, `${DRIVER_NAME}-reg.sock`)
    this.server.addService(loadRegistration().service, {
      GetInfo: unary(async () => ({ type: 'CSIPlugin', name: DRIVER_NAME, endpoint: csiSocket, supported_versions: ['1.0.0'] }), 'GetInfo'),
      NotifyRegistrationStatus: unary(async (req: { plugin_registered: boolean; error: string }) => {
        report(req.plugin_registered, req.error)
        return {}
      }, 'NotifyRegistrationStatus'),
    })
  }

  async listen(): Promise<void> {
    this.listener = await listen(this.server, this.socket)
  }

  async stop(): Promise<void> {
    // Removing the socket is what deregisters the driver.
    await unlink(this.socket).catch(() => {})
    await shutdown(this.server, this.listener)
  }
}

function shutdown(server: grpc.Server, listener: net.Server | undefined): Promise<void> {
  listener?.close()
  return new Promise((resolve) => {
    const timer = setTimeout(() => { server.forceShutdown(); resolve() }, 2000)
    server.tryShutdown(() => { clearTimeout(timer); resolve() })
  })
}

/**
 * Asks the driver's own socket for a Probe, as the kubelet's side would reach it (through the
 * :authority rewriter): for /healthz, whether the CSI socket answers. Checks that come while one
 * is under way share its answer.
 */
export class SocketProbe {
  private client: grpc.Client | undefined
  private pending: Promise<string | undefined> | undefined

  constructor(readonly socket: string, private readonly timeoutMs = 2000) {}

  /** undefined if the socket answered, else why not (one line). */
  check(): Promise<string | undefined> {
    this.pending ??= this.ask().finally(() => { this.pending = undefined })
    return this.pending
  }

  private ask(): Promise<string | undefined> {
    if (!existsSync(this.socket)) return Promise.resolve(`the CSI socket ${this.socket} is not there`)
    this.client ??= new (loadCsi().Identity)(`unix://${this.socket}`, grpc.credentials.createInsecure())
    const probe = (this.client as unknown as Record<string, (r: object, o: object, cb: (e: grpc.ServiceError | null) => void) => void>).Probe!
    return new Promise((resolve) => {
      probe.call(this.client, {}, { deadline: Date.now() + this.timeoutMs }, (e) =>
        resolve(e ? `the CSI socket ${this.socket} does not answer a Probe: ${grpc.status[e.code] ?? e.code} ${e.details}` : undefined))
    })
  }

  close(): void {
    this.client?.close()
    this.client = undefined
  }
}
