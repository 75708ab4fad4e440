import DNS
import Foundation
import Glibc
import MailModel
import Queue
import SMTPProtocol
import Synchronization
import Transport

/// Where delivery writes its log lines (the gateway's mail log).
public protocol DeliveryLogger: Sendable {
    func deliveryEvent(_ name: String, warning: Bool, _ fields: [(String, String)])
}

/// Moves the queue: picks messages whose time has come, groups their pending recipients by route,
/// hands each group to the `Courier` on a delivery thread, records every outcome durably, retries
/// on the schedule and bounces what failed for good. One runner per spool.
public final class QueueRunner: @unchecked Sendable {
    public struct Settings: Sendable {
        public var hostname: String
        public var retry = RetrySchedule()
        /// Messages in delivery at once (each holds one delivery thread).
        public var concurrency = 20
        /// Recipients per transaction to one destination.
        public var recipientsPerTransaction = 50
        /// How often the spool is read again for changes made outside (`queue release`, restarts).
        public var scanInterval: Duration = .seconds(60)
        public var routes = RoutingTable()
        /// Tell the sender once when a message has waited this long (RFC 3464 `Action: delayed`);
        /// nil: never (the default, as Postfix's `delay_warning_time = 0`).
        public var delayWarning: Duration?
        public init(hostname: String) { self.hostname = hostname }
    }

    public let settings: Settings
    let spool: SpoolDirectory
    public let resolver: any Resolver
    public let planner: RoutePlanner
    let courier: Courier
    let log: any DeliveryLogger
    let pool: BlockingPool
    let condition = NSCondition()
    /// id → next attempt (seconds since 1970); guarded by `condition`.
    var schedule: [String: Int] = [:]
    var inFlight = Set<String>()
    var stopping = false
    var lastScan = 0.0
    var lastIdleCheck = 0.0
    var thread: Thread?

    public init(settings: Settings, spool: SpoolDirectory, resolver: any Resolver, planner: RoutePlanner, courier: Courier,
                log: any DeliveryLogger) {
        self.settings = settings
        self.spool = spool
        self.resolver = resolver
        self.planner = planner
        self.courier = courier
        self.log = log
        pool = BlockingPool(threads: max(1, settings.concurrency), name: "relaygate-delivery")
    }

    /// True when mail for `domain` would come back here (this host is its best MX). Blocks on DNS.
    public func wouldLoop(_ domain: String) -> Bool {
        if case .bounce(let status, _) = planner.plan(domain, resolver: resolver).0 { return status == EnhancedStatus(5, 4, 6) }
        return false
    }

    public func start() {
        let t = Thread { [self] in self.run() }
        t.name = "relaygate-runner"
        t.stackSize = 1 << 20
        thread = t
        t.start()
    }

    /// Stops scheduling; deliveries in flight finish (their outcomes are recorded).
    public func stop(waitingUpTo grace: Duration) {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
        let deadline = Date().addingTimeInterval(Double(grace.components.seconds))
        condition.lock()
        while !inFlight.isEmpty && Date() < deadline { _ = condition.wait(until: deadline) }
        condition.unlock()
        courier.closeIdle(all: true)
        pool.stop()
    }

    /// A message was just queued: try it now.
    public func enqueued(_ id: String) {
        condition.lock()
        schedule[id] = 0
        condition.signal()
        condition.unlock()
    }

    public var inFlightCount: Int {
        condition.lock(); defer { condition.unlock() }
        return inFlight.count
    }

    // MARK: Scheduling

    func run() {
        rescan()
        condition.lock()
        while !stopping {
            let now = Int(Date().timeIntervalSince1970)
            if Date().timeIntervalSince1970 - lastIdleCheck >= 1 {
                lastIdleCheck = Date().timeIntervalSince1970
                condition.unlock()
                courier.closeIdle()
                condition.lock()
            }
            let flush = spool.takeFlushRequest()
            if flush || Date().timeIntervalSince1970 - lastScan >= Double(settings.scanInterval.components.seconds) {
                condition.unlock()
                if flush { courier.clearBackoff() }
                rescan()
                condition.lock()
                continue
            }
            let free = settings.concurrency - inFlight.count
            var due = schedule.filter { $0.value <= now && !inFlight.contains($0.key) }.map(\.key).sorted()
            if free > 0 && !due.isEmpty {
                due = Array(due.prefix(free))
                for id in due {
                    inFlight.insert(id)
                    schedule[id] = nil
                    pool.submit { [self] in self.process(id) }
                }
                continue
            }
            let nextDue = schedule.filter { !inFlight.contains($0.key) }.values.min().map { max(0, $0 - now) } ?? 3600
            let untilScan = max(0.05, Double(settings.scanInterval.components.seconds) - (Date().timeIntervalSince1970 - lastScan))
            // Wake for the next due message, the next scan, a flush request (polled each second), or a signal.
            let wait = min(Double(nextDue), untilScan, 1.0)
            _ = condition.wait(until: Date().addingTimeInterval(free > 0 ? max(wait, 0.01) : 1.0))
        }
        condition.unlock()
    }

    /// Reads the whole queue: every message not in flight gets its recorded next attempt.
    func rescan() {
        let ids = spool.ids().map(\.text)
        var found: [String: Int] = [:]
        for id in ids { found[id] = spool.state(id).next }
        condition.lock()
        lastScan = Date().timeIntervalSince1970
        for (id, next) in found where !inFlight.contains(id) { schedule[id] = next }
        // Removed or held outside: forget them.
        for id in schedule.keys where found[id] == nil { schedule[id] = nil }
        condition.unlock()
    }

    func finished(_ id: String, next: Int?) {
        condition.lock()
        inFlight.remove(id)
        if let next { schedule[id] = next }
        condition.broadcast()
        condition.unlock()
    }

    // MARK: One message

    struct Group {
        var domain: String
        var indices: [Int]
        var addresses: [String]
    }

    /// One delivery attempt for every pending recipient of `id`.
    func process(_ id: String) {
        var next: Int?
        defer { finished(id, next: next) }
        let entry: SpoolDirectory.Entry
        do {
            entry = try spool.load(id)
        } catch {
            return   // removed, or held since it was scheduled
        }
        guard spool.place(of: id) == .queue else { return }
        let env = entry.envelope
        var state = spool.state(id)
        let pending = state.pending(of: env.recipients.count)
        if pending.isEmpty {
            spool.complete(id)
            return
        }
        let now = Int(Date().timeIntervalSince1970)
        if state.bounceRequested {
            let failures = pending.map { i in
                (i, DSN.Failure(recipient: env.recipients[i].address, orcpt: env.recipients[i].orcpt, status: "5.0.0",
                                diagnostic: "returned to the sender by the postmaster", lastAttempt: now))
            }
            log.deliveryEvent("bounce-requested", warning: true, [("id", id), ("recipients", "\(failures.count)")])
            bounce(id, entry: entry, failures: failures, now: now, state: &state)
            if state.pending(of: env.recipients.count).isEmpty { spool.complete(id) }
            return
        }
        // Group by destination domain after rewriting, in transactions of bounded size.
        var groups: [Group] = []
        var byDomain: [String: Int] = [:]
        for i in pending {
            let to = settings.routes.rewrite(env.recipients[i].address)
            let domain = Self.domain(of: to)
            if let g = byDomain[domain], groups[g].indices.count < settings.recipientsPerTransaction {
                groups[g].indices.append(i)
                groups[g].addresses.append(to)
            } else {
                byDomain[domain] = groups.count
                groups.append(Group(domain: domain, indices: [i], addresses: [to]))
            }
        }
        var finals: [DeliveryState.Line] = []
        var failures: [(Int, DSN.Failure)] = []
        var deferred: [DeliveryState.Line] = []
        // RFC 3461 6.2.1: NOTIFY=SUCCESS, and the next hop does not take DSN requests: say "relayed".
        var relayed: [DSN.Failure] = []
        for g in groups {
            let started = Date()
            let (plan, _, route) = planner.plan(domain: g.domain, routes: settings.routes, resolver: resolver)
            var results: [ClientSession.RecipientResult]
            var relay: Courier.HostAttempt?
            var nextHopDSN = false
            switch plan {
            case .bounce(let status, let why):
                results = Array(repeating: .permanent(why, status), count: g.indices.count)
            case .deferred(_, let why):
                results = Array(repeating: .temporary(why), count: g.indices.count)
            case .hosts(let hosts):
                let message = ClientSession.Message(
                    sender: env.sender,
                    recipients: zip(g.indices, g.addresses).map { i, a in
                        ClientSession.Message.Recipient(address: a, notify: env.recipients[i].notify, orcpt: env.recipients[i].orcpt)
                    },
                    size: env.size, eightBit: env.body == "8BITMIME" || entry.message.contains { $0 >= 0x80 },
                    smtpUTF8: env.smtputf8, ret: env.ret, envid: env.envid)
                let attempt = courier.deliver(message, body: entry.message, hosts: hosts, tls: route?.tls ?? settings.routes.defaultTLS,
                                              credentials: route?.credentials)
                results = attempt.results
                relay = attempt.relay
                nextHopDSN = attempt.nextHopDSN
                for t in attempt.tried where t.error != nil && t.address != relay?.address {
                    log.deliveryEvent("connect", warning: true, [("id", id), ("relay", "\(t.host)[\(t.address)]"),
                                                                 ("error", t.error ?? "")])
                }
            }
            let delay = String(format: "%.2f", Date().timeIntervalSince(started))
            for (k, i) in g.indices.enumerated() {
                let rcpt = env.recipients[i]
                let relayText = relay.map { "\($0.host)[\($0.address)]" } ?? "none"
                var fields: [(String, String)] = [("id", id), ("to", "<\(rcpt.address)>")]
                if g.addresses[k] != rcpt.address { fields.append(("rewritten", "<\(g.addresses[k])>")) }
                fields += [("relay", relayText), ("tls", relay?.tls ?? "none"), ("delay", delay), ("attempt", "\(state.attempts + 1)")]
                switch results[k] {
                case .delivered(let reply):
                    finals.append(.init(rcpt: i, result: .delivered, at: now, reply: reply, host: relayText))
                    if !nextHopDSN, rcpt.notify?.contains("SUCCESS") == true {
                        relayed.append(DSN.Failure(recipient: rcpt.address, orcpt: rcpt.orcpt, status: "2.0.0", remoteHost: relay?.host,
                                                   diagnostic: "smtp; " + reply, lastAttempt: now))
                    }
                    log.deliveryEvent("delivery", warning: false, fields + [("result", "delivered"), ("reply", reply)])
                case .permanent(let reply, let status):
                    let st = status.map { "\($0)" } ?? "5.0.0"
                    failures.append((i, DSN.Failure(recipient: rcpt.address, orcpt: rcpt.orcpt, status: st,
                                                    remoteHost: relay?.host, diagnostic: (relay != nil ? "smtp; " : "") + reply,
                                                    lastAttempt: now)))
                    log.deliveryEvent("delivery", warning: true, fields + [("result", "bounced"), ("status", st), ("reply", reply)])
                case .temporary(let reply):
                    deferred.append(.init(rcpt: i, result: .deferred, at: now, reply: reply, host: relayText))
                    log.deliveryEvent("delivery", warning: true, fields + [("result", "deferred"), ("reply", reply)])
                }
            }
        }
        if !relayed.isEmpty && !env.sender.isEmpty {
            _ = storeReport(id, entry: entry, relayed, action: .relayed, ret: "HDRS", now: now)
        }
        // Every recipient delivered now: one durable removal says so (no state line needed).
        if finals.count == pending.count && failures.isEmpty && deferred.isEmpty {
            spool.complete(id, durable: true)
            log.deliveryEvent("removed", warning: false, [("id", id), ("reason", "every recipient done")])
            return
        }
        // Otherwise delivered recipients first, durably: after a crash they are not sent again.
        do {
            try spool.record(id, finals, sync: true)
        } catch {
            log.deliveryEvent("state", warning: true, [("id", id), ("error", "\(error)")])
        }
        for l in finals { state.apply(l) }
        // Expired: what is still deferred fails now, with the last reason (RFC 3463 4.4.7).
        if settings.retry.expired(received: Double(env.received), now: Double(now)) {
            for d in deferred {
                let rcpt = env.recipients[d.rcpt!]
                failures.append((d.rcpt!, DSN.Failure(recipient: rcpt.address, orcpt: rcpt.orcpt, status: "4.4.7",
                                                      remoteHost: nil, diagnostic: "delivery time expired; last: \(d.reply ?? "")",
                                                      lastAttempt: now)))
                log.deliveryEvent("expired", warning: true, [("id", id), ("to", "<\(rcpt.address)>"), ("reply", d.reply ?? "")])
            }
            deferred = []
        }
        if !failures.isEmpty { bounce(id, entry: entry, failures: failures, now: now, state: &state) }
        if state.pending(of: env.recipients.count).isEmpty {
            spool.complete(id, durable: true)
            log.deliveryEvent("removed", warning: false, [("id", id), ("reason", "every recipient done")])
            return
        }
        if let after = settings.delayWarning, !state.warned, !deferred.isEmpty,
           Double(now - env.received) >= Double(after.components.seconds) {
            warnDelay(id, entry: entry, deferred: deferred, now: now)
            deferred.append(.init(warned: true))
        }
        let attempts = state.attempts + 1
        let at = now + Int(settings.retry.delay(afterAttempts: attempts).components.seconds)
        try? spool.record(id, deferred + [.init(attempts: attempts, next: at)], sync: false)
        next = at
    }

    /// Reports `failures` to the sender with one DSN (never to `<>`), then marks them done.
    func bounce(_ id: String, entry: SpoolDirectory.Entry, failures: [(Int, DSN.Failure)], now: Int, state: inout DeliveryState) {
        let env = entry.envelope
        // RFC 3461 4.1: NOTIFY without FAILURE (or NEVER) asks for no failure report.
        let wanted = failures.filter { i, _ in env.recipients[i].notify.map { $0.contains("FAILURE") } ?? true }
        if env.sender.isEmpty {
            // A bounce that cannot be delivered is never bounced: it would go to <> (RFC 5321 4.5.5).
            log.deliveryEvent("bounce", warning: true, [("id", id), ("result", "dropped"), ("reason", "the sender is <>"),
                                                      ("recipients", "\(failures.count)")])
        } else if !wanted.isEmpty {
            // Not stored: the recipients stay pending and the bounce is tried again next time.
            guard storeReport(id, entry: entry, wanted.map(\.1), action: .failed, ret: env.ret, now: now) else { return }
        }
        let lines = failures.map { i, f in DeliveryState.Line(rcpt: i, result: .bounced, at: now, reply: f.diagnostic) }
        try? spool.record(id, lines, sync: true)
        for l in lines { state.apply(l) }
    }

    /// One delay warning for the recipients still deferred (those whose NOTIFY allows it; without
    /// NOTIFY the default is FAILURE and DELAY, RFC 3461 4.1), never to `<>`.
    func warnDelay(_ id: String, entry: SpoolDirectory.Entry, deferred: [DeliveryState.Line], now: Int) {
        let env = entry.envelope
        guard !env.sender.isEmpty else { return }
        let wanted = deferred.compactMap { d -> DSN.Failure? in
            guard let i = d.rcpt, env.recipients[i].notify.map({ $0.contains("DELAY") }) ?? true else { return nil }
            return DSN.Failure(recipient: env.recipients[i].address, orcpt: env.recipients[i].orcpt, status: "4.4.7",
                               diagnostic: d.reply ?? "deferred", lastAttempt: now)
        }
        guard !wanted.isEmpty else { return }
        _ = storeReport(id, entry: entry, wanted, action: .delayed, ret: "HDRS", now: now)
    }

    /// Stores a DSN about `id` for its sender as a new message from `<>` and schedules it; false when
    /// it could not be stored. The log line is `bounce`, `delay-warning` or `relayed`.
    func storeReport(_ id: String, entry: SpoolDirectory.Entry, _ recipients: [DSN.Failure], action: DSN.Action, ret: String?,
                     now: Int) -> Bool {
        let env = entry.envelope
        let event = action == .failed ? "bounce" : action == .delayed ? "delay-warning" : "relayed"
        let reportID = SpoolDirectory.newID()
        let body = DSN.bounce(hostname: settings.hostname, originalSender: env.sender, queueID: id, envelopeID: env.envid,
                              received: env.received, failures: recipients, original: entry.message, ret: ret,
                              now: now, boundarySeed: String(reportID.text.suffix(6)), action: action)
        let stored = StoredEnvelope(
            id: reportID.text, received: now, sender: "", recipients: [.init(address: env.sender)], size: body.count,
            body: nil, smtputf8: false, ret: nil, envid: nil,
            client: .init(address: "127.0.0.1", helo: settings.hostname, session: event, listener: "dsn", protocol: "local"))
        do {
            try spool.store(id: reportID, header: QueueFile.header(stored), data: [body])
        } catch {
            log.deliveryEvent(event, warning: true, [("id", id), ("result", "failed"), ("error", "\(error)")])
            return false
        }
        log.deliveryEvent(event, warning: false, [("id", id), ("report_id", reportID.text), ("to", "<\(env.sender)>"),
                                                  ("recipients", "\(recipients.count)")])
        enqueued(reportID.text)
        return true
    }

    public static func domain(of address: String) -> String {
        guard let at = address.lastIndex(of: "@") else { return "" }
        return address[address.index(after: at)...].lowercased()
    }
}
