// The node agent's metrics, in the Prometheus text format (prom-client), served on /metrics by
// `dapifs csi --http-endpoint` (http.ts). This module is the only one that knows prom-client: the
// agent's parts tell what happens through small observer interfaces of their own (server.ts's
// CallObserver, volumes.ts's VolumesObserver, watch.ts's WatchObserver), and Metrics implements
// them. What is a state rather than an event (the volumes served, the keeper's connection) is
// read when scraped.
//
// No label names a pod, a volume or a path: a label's values multiply the series a scrape
// returns, and pods come and go without end. Labels are the gRPC code and the watched resource,
// each with a few values, and the series of each are there, at 0, from the start (so that rate()
// and alerts see them before the first event). docs/observability.md lists them all, and what to
// alert on.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { CallObserver } from '../csi/server.js'
import type { VolumesObserver } from '../csi/volumes.js'
import type { WatchObserver } from '../source/watch.js'

export type Resource = 'pods' | 'node'
const RESOURCES: Resource[] = ['pods', 'node']

export interface MetricSources {
  /** Volumes served now. */
  volumes(): number
  /** Whether the keeper's connection is open; absent: no keeper is used (no series). */
  keeperConnected?: () => boolean
}

/** Buckets in seconds: a publish is milliseconds, unless it waits for its pod (up to its deadline). */
const PUBLISH_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
/** A change reaches a volume in milliseconds (docs/benchmark.md, Scale: p99 10 ms at 250 pods). */
const UPDATE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export class Metrics implements CallObserver, Pick<VolumesObserver, 'flipped' | 'updated' | 'refused'> {
  readonly registry = new Registry()
  private readonly publishes: Counter<'code'>
  private readonly unpublishes: Counter<'code'>
  private readonly publishSeconds: Histogram
  private readonly flips: Counter
  private readonly updateSeconds: Histogram
  private readonly renderErrors: Counter
  private readonly watchEvents: Counter<'resource'>
  private readonly watchRestarts: Counter<'resource'>
  private readonly watchUp: Gauge<'resource'>

  constructor(sources: MetricSources) {
    const registers = [this.registry]
    this.publishes = new Counter({ name: 'dapifs_node_publish_total', help: 'NodePublishVolume calls answered, by gRPC code', labelNames: ['code'], registers })
    this.unpublishes = new Counter({ name: 'dapifs_node_unpublish_total', help: 'NodeUnpublishVolume calls answered, by gRPC code', labelNames: ['code'], registers })
    this.publishSeconds = new Histogram({
      name: 'dapifs_node_publish_duration_seconds', help: 'Time to answer NodePublishVolume, whatever the answer', buckets: PUBLISH_BUCKETS, registers,
    })
    new Gauge({ name: 'dapifs_volumes', help: 'Volumes served now', registers, collect() { this.set(sources.volumes()) } })
    this.flips = new Counter({ name: 'dapifs_flips_total', help: 'Flips of a published volume to a new generation', registers })
    this.updateSeconds = new Histogram({
      name: 'dapifs_update_seconds', help: 'From the watch event that changed a pod (or its Node) to the flip of each volume it changed',
      buckets: UPDATE_BUCKETS, registers,
    })
    this.renderErrors = new Counter({
      name: 'dapifs_render_errors_total', help: 'Updates of a published volume that could not be rendered (bad, or over a budget): its last good generation kept', registers,
    })
    this.watchEvents = new Counter({ name: 'dapifs_watch_events_total', help: 'Watch events (added, modified, deleted) received', labelNames: ['resource'], registers })
    this.watchRestarts = new Counter({ name: 'dapifs_watch_restarts_total', help: 'Watches (or their lists) that ended or failed and were made again', labelNames: ['resource'], registers })
    this.watchUp = new Gauge({ name: 'dapifs_watch_up', help: '1 while the watch is established', labelNames: ['resource'], registers })
    const keeper = sources.keeperConnected
    if (keeper) new Gauge({ name: 'dapifs_keeper_connected', help: '1 while the keeper\'s connection is open', registers, collect() { this.set(keeper() ? 1 : 0) } })
    collectDefaultMetrics({ register: this.registry })

    for (const c of [this.publishes, this.unpublishes]) c.inc({ code: 'OK' }, 0)
    for (const resource of RESOURCES) {
      this.watchEvents.inc({ resource }, 0)
      this.watchRestarts.inc({ resource }, 0)
      this.watchUp.set({ resource }, 0)
    }
  }

  answered(method: 'publish' | 'unpublish', code: string, seconds: number): void {
    if (method === 'publish') {
      this.publishes.inc({ code })
      this.publishSeconds.observe(seconds)
    } else {
      this.unpublishes.inc({ code })
    }
  }

  flipped(): void {
    this.flips.inc()
  }

  updated(seconds: number): void {
    this.updateSeconds.observe(seconds)
  }

  refused(): void {
    this.renderErrors.inc()
  }

  watch(resource: Resource): WatchObserver {
    return {
      event: () => this.watchEvents.inc({ resource }),
      restarted: () => this.watchRestarts.inc({ resource }),
      up: (established) => this.watchUp.set({ resource }, established ? 1 : 0),
    }
  }

  /** The text a scrape gets, and its content type. */
  async scrape(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType }
  }
}
