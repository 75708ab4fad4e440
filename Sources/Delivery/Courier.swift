import DNS
import Foundation
import MailModel
import SMTPProtocol
import Synchronization
import TLS
import Transport

/// Speaks SMTP to the hosts of a route, in order, each address of a host in turn, until a host takes
/// a decision on the recipients. Runs on a delivery thread: every call here blocks, with timeouts.
public final class Courier: @unchecked Sendable {
    public struct Settings: Sendable {
        public var heloName: String
        public var connectTimeout: Duration = .seconds(30)
        /// Waiting for any one reply (RFC 5321 4.5.3.2 allows 5 minutes for most).
        public var replyTimeout: Duration = .seconds(300)
        /// Waiting for the reply after the final dot (RFC 5321 4.5.3.2.6: 10 minutes).
        public var dataTimeout: Duration = .seconds(600)
        /// A destination address that failed to connect is not tried again for this long.
        public var backoff: Duration = .seconds(60)
        /// Concurrent connections to one address.
        public var perDestination = 20
        /// Transactions one connection may carry (1: a new connection for every message).
        public var reuse = 20
        /// A connection idle this long between transactions is closed.
        public var reuseIdle: Duration = .seconds(5)
        /// CAs for `tls verify` instead of the system store (an organisation's own PKI); nil: the system's.
        public var caFile: String?
        public var sourceV4: IPAddress?
        public var sourceV6: IPAddress?
        public init(heloName: String) { self.heloName = heloName }
    }

    /// One host's part in an attempt, for the delivery log.
    public struct HostAttempt: Sendable {
        public var host: String
        public var address: String
        public var tls: String?
        public var error: String?
    }

    /// What an attempt produced: a result per recipient and the host that gave them (if any).
    public struct Attempt: Sendable {
        public var results: [ClientSession.RecipientResult]
        public var relay: HostAttempt?
        public var tried: [HostAttempt]
        /// The host that took the recipients offered DSN (RFC 3461): it reports from now on.
        public var nextHopDSN = false
    }

    public let settings: Settings
    let opportunistic: TLSClientContext
    let verifying: TLSClientContext
    let daneContext: TLSClientContext
    /// For TLSA lookups (DANE); nil: no DANE.
    let resolver: (any Resolver)?
    let deadUntil = Mutex<[SocketAddress: UInt64]>([:])
    let slots: SlotLimiter
    let cache = ConnectionCache()

    public init(settings: Settings, resolver: (any Resolver)? = nil) throws(TLSError) {
        self.settings = settings
        self.resolver = resolver
        opportunistic = try TLSClientContext(verify: false)
        verifying = try TLSClientContext(verify: true, caFile: settings.caFile)
        daneContext = try TLSClientContext.dane()
        slots = SlotLimiter(limit: settings.perDestination)
    }

    public enum TLSLevel: String, Sendable, Hashable {
        case none, may, encrypt
        /// Encrypt, and the certificate must chain to the system store and match the host name.
        case verify
        /// Set per host, never configured: DNSSEC-secure TLSA records authenticate the server (RFC 7672).
        case dane
    }

    /// Forgets every backoff: `queue flush` means "try now", dead hosts included.
    public func clearBackoff() { deadUntil.withLock { $0.removeAll() } }

    /// Delivers `message` (its data in `body`) to `hosts`.
    public func deliver(_ message: ClientSession.Message, body: ArraySlice<UInt8>, hosts: [MXHost], tls: TLSLevel,
                        credentials: (user: String, password: String)? = nil) -> Attempt {
        var tried: [HostAttempt] = []
        var lastError = "no host to try"
        for host in hosts {
            for address in host.addresses {
                let peer = SocketAddress(ip: address, port: UInt16(host.port))
                if let until = deadUntil.withLock({ $0[peer] }), until > MonotonicClock.now() {
                    tried.append(HostAttempt(host: host.name, address: peer.description, error: "in backoff after a failure"))
                    lastError = "\(host.name)[\(address)]: not tried again yet after a connection failure"
                    continue
                }
                var level = tls
                // RFC 7672 2.2: a host whose address is DNSSEC-secure is asked for TLSA records; usable
                // ones make TLS and their authentication mandatory, whatever the level says.
                var tlsa: [TLSARecord] = []
                if host.secure && tls != .none, let resolver {
                    switch resolver.tlsa("_\(host.port)._tcp.\(host.name)") {
                    case .records(let rs, let secure) where secure:
                        tlsa = rs.filter { $0.usage == 2 || $0.usage == 3 }
                    case .failure(let why):
                        tried.append(HostAttempt(host: host.name, address: peer.description, error: "TLSA lookup failed: \(why)"))
                        lastError = "\(host.name): TLSA lookup failed (\(why)); not delivering without DANE"
                        continue
                    default: break
                    }
                }
                if !tlsa.isEmpty { level = .dane }
                for _ in 0..<2 {   // a second round only for a plaintext retry after a failed handshake
                    let (outcome, info, dsn) = attempt(message, body: body, host: host.name, peer: peer, tls: level,
                                                       credentials: credentials, tlsa: tlsa)
                    switch outcome {
                    case .results(let results):
                        let relay = HostAttempt(host: host.name, address: peer.description, tls: info)
                        return Attempt(results: results, relay: relay, tried: tried + [relay], nextHopDSN: dsn)
                    case .hostFailed(let why, let plaintextRetry):
                        tried.append(HostAttempt(host: host.name, address: peer.description, tls: info, error: why))
                        lastError = "\(host.name)[\(address)]: \(why)"
                        if plaintextRetry && level == .may {
                            level = .none
                            continue
                        }
                    }
                    break
                }
            }
        }
        return Attempt(results: Array(repeating: .temporary(lastError), count: message.recipients.count),
                       relay: nil, tried: tried)
    }

    /// One transaction to one address: on a cached connection to it when there is one (falling back
    /// to a new connection if the cached one turns out dead before the server answered), else on a
    /// new connection.
    func attempt(_ message: ClientSession.Message, body: ArraySlice<UInt8>, host: String, peer: SocketAddress,
                 tls: TLSLevel, credentials: (user: String, password: String)?,
                 tlsa: [TLSARecord] = []) -> (ClientSession.Outcome, String?, Bool) {
        let key = CacheKey(peer: peer, tls: tls, user: credentials?.user)
        if let d = cache.take(key) {
            let outcome = d.run(d.session.begin(message), body: body)
            if case .hostFailed = outcome, d.repliesThisTransaction == 0 {
                // The server closed it while it idled: not the message's fault; try a new connection.
                close(d, peer: peer)
            } else {
                finish(d, key: key)
                return (outcome, d.tlsInfo, d.session.serverExtensions["DSN"] != nil)
            }
        }
        guard slots.acquire(peer, wait: settings.replyTimeout) else {
            return (.hostFailed("too many connections to this destination", plaintextRetry: false), nil, false)
        }
        let conn: BlockingConnection
        do {
            conn = try BlockingConnection(to: peer, from: peer.ip.isV4 ? settings.sourceV4 : settings.sourceV6,
                                          timeout: settings.connectTimeout)
        } catch {
            slots.release(peer)
            deadUntil.withLock { $0[peer] = MonotonicClock.now() + settings.backoff.nanoseconds }
            return (.hostFailed("\(error)", plaintextRetry: false), nil, false)
        }
        let requirement: ClientSession.TLSRequirement = tls == .none ? .none : (tls == .may ? .may : .encrypt)
        let session = ClientSession(settings: .init(heloName: settings.heloName, tls: requirement, credentials: credentials,
                                                    keepAlive: settings.reuse > 1),
                                    message: message)
        let d = Dialogue(conn: conn, session: session, host: host, tls: tls, tlsa: tlsa, courier: self)
        let outcome = d.run([], body: body)
        finish(d, key: key)
        return (outcome, d.tlsInfo, d.session.serverExtensions["DSN"] != nil)
    }

    /// After a transaction: keep the connection for the next message to the same address, or close it.
    func finish(_ d: Dialogue, key: CacheKey) {
        d.uses += 1
        if d.session.isReady && d.uses < settings.reuse {
            d.idleSince = MonotonicClock.now()
            if let evicted = cache.put(key, d, idle: settings.reuseIdle) { close(evicted, peer: evicted.conn.peer) }
        } else {
            close(d, peer: key.peer)
        }
    }

    func close(_ d: Dialogue, peer: SocketAddress) {
        if d.session.isReady { _ = d.run(d.session.quitNow(), body: [][...]) }
        d.shutdownTLS()
        slots.release(peer)
    }

    /// Closes cached connections idle for longer than `reuseIdle` (called now and then by the runner).
    public func closeIdle(all: Bool = false) {
        for d in cache.expired(idle: all ? .zero : settings.reuseIdle) { close(d, peer: d.conn.peer) }
    }
}

struct CacheKey: Hashable {
    let peer: SocketAddress
    let tls: Courier.TLSLevel
    let user: String?
}

/// Connections between transactions, by destination; bounded by the per-destination slots they keep.
final class ConnectionCache: @unchecked Sendable {
    let lock = NSLock()
    var idle: [CacheKey: [Dialogue]] = [:]

    func take(_ key: CacheKey) -> Dialogue? {
        lock.lock(); defer { lock.unlock() }
        return idle[key]?.popLast()
    }

    /// Keeps `d`; returns a connection that had to go to make room (at most 4 idle per destination).
    func put(_ key: CacheKey, _ d: Dialogue, idle limit: Duration) -> Dialogue? {
        lock.lock(); defer { lock.unlock() }
        idle[key, default: []].append(d)
        if idle[key]!.count > 4 { return idle[key]!.removeFirst() }
        return nil
    }

    func expired(idle limit: Duration) -> [Dialogue] {
        lock.lock(); defer { lock.unlock() }
        let now = MonotonicClock.now()
        var out: [Dialogue] = []
        for (k, ds) in idle {
            let (old, fresh) = (ds.filter { now - $0.idleSince > limit.nanoseconds }, ds.filter { now - $0.idleSince <= limit.nanoseconds })
            out += old
            idle[k] = fresh.isEmpty ? nil : fresh
        }
        return out
    }
}

/// One outbound connection and its SMTP state: bytes through TLS when it is up, replies to the
/// session, the session's actions to the wire.
final class Dialogue: @unchecked Sendable {
    let conn: BlockingConnection
    var session: ClientSession
    var parser = ReplyParser()
    var tlsSession: TLSSession?
    var tlsInfo: String?
    let host: String
    let tls: Courier.TLSLevel
    let tlsa: [TLSARecord]
    unowned let courier: Courier
    var uses = 0
    var idleSince: UInt64 = 0
    var repliesThisTransaction = 0

    init(conn: BlockingConnection, session: ClientSession, host: String, tls: Courier.TLSLevel, tlsa: [TLSARecord],
         courier: Courier) {
        self.conn = conn; self.session = session; self.host = host; self.tls = tls; self.tlsa = tlsa; self.courier = courier
    }

    var settings: Courier.Settings { courier.settings }

    /// Performs `first`, then reads replies and performs what the session answers, until it finishes.
    func run(_ first: [ClientSession.Action], body: ArraySlice<UInt8>) -> ClientSession.Outcome {
        var pending = first
        var waitingFinal = false
        repliesThisTransaction = 0
        do throws(SocketError) {
            for _ in 0..<100_000 {
                while !pending.isEmpty {
                    let a = pending.removeFirst()
                    switch a {
                    case .send(let bytes):
                        try send(bytes, timeout: settings.replyTimeout)
                    case .sendMessage:
                        try send(DotStuffing.encode(body), timeout: settings.dataTimeout)
                        waitingFinal = true
                    case .startTLS:
                        if let why = try handshake() {
                            pending = session.tlsFailed(why)
                        } else {
                            pending = session.tlsEstablished()
                        }
                    case .finished(let o):
                        return o
                    }
                }
                if session.isDone && pending.isEmpty { return session.connectionLost("closed") }
                guard let rs = try replies(timeout: waitingFinal ? settings.dataTimeout : settings.replyTimeout) else {
                    return session.connectionLost("connection closed by \(conn.peer)")
                }
                waitingFinal = false
                repliesThisTransaction += rs.count
                for r in rs { pending += session.received(r) }
            }
            return session.connectionLost("dialogue did not end")
        } catch {
            return session.connectionLost("\(error)")
        }
    }

    func shutdownTLS() {
        if let t = tlsSession { t.shutdown(); try? conn.write(t.takeOutput(), timeout: .seconds(1)) }
    }

    func send(_ bytes: [UInt8], timeout: Duration) throws(SocketError) {
        if let t = tlsSession {
            t.send(bytes)
            try conn.write(t.takeOutput(), timeout: timeout)
        } else {
            try conn.write(bytes, timeout: timeout)
        }
    }

    /// Reads until at least one reply is complete; nil when the connection ended.
    func replies(timeout: Duration) throws(SocketError) -> [ReplyParser.ServerReply]? {
        for _ in 0..<10_000 {
            let raw = try conn.read(timeout: timeout)
            if raw.isEmpty { return nil }
            var plain = raw
            if let t = tlsSession {
                plain = []
                for e in t.receive(raw[...]) {
                    switch e {
                    case .data(let d): plain += d
                    case .failed, .closed: return nil
                    case .established: break
                    }
                }
                let out = t.takeOutput()
                if !out.isEmpty { try conn.write(out, timeout: timeout) }
            }
            do {
                let r = try parser.feed(plain[...])
                if !r.isEmpty { return r }
            } catch {
                return nil
            }
        }
        return nil
    }

    /// The client handshake over the same socket; nil when it succeeded, else why not.
    func handshake() throws(SocketError) -> String? {
        let made: TLSSession?
        switch tls {
        case .dane:
            made = courier.daneContext.makeDANESession(serverName: host,
                                                       records: tlsa.map { ($0.usage, $0.selector, $0.matchingType, $0.data) })
        case .verify: made = courier.verifying.makeSession(serverName: host)
        default: made = courier.opportunistic.makeSession(serverName: host)
        }
        guard let t = made else { return "cannot create a TLS session (no usable TLSA record?)" }
        for e in t.connect() { if case .failed(let why) = e { return why } }
        try conn.write(t.takeOutput(), timeout: settings.replyTimeout)
        for _ in 0..<1000 {
            let raw = try conn.read(timeout: settings.replyTimeout)
            if raw.isEmpty { return "connection closed during the handshake" }
            var done = false
            for e in t.receive(raw[...]) {
                switch e {
                case .established(let info):
                    done = true
                    tlsInfo = "\(info.version) \(info.cipher)"
                case .failed(let why): return why
                case .closed: return "connection closed during the handshake"
                case .data: break
                }
            }
            let out = t.takeOutput()
            if !out.isEmpty { try conn.write(out, timeout: settings.replyTimeout) }
            if done {
                if tls == .verify, let bad = t.verificationError { return "certificate not verified: \(bad)" }
                if tls == .dane {
                    guard t.daneAuthenticated else { return "DANE: no TLSA record matches (\(t.verificationError ?? "unknown"))" }
                    tlsInfo = (tlsInfo ?? "") + " dane"
                }
                tlsSession = t
                return nil
            }
        }
        return "handshake did not finish"
    }
}

/// At most `limit` holders per key; `acquire` waits (bounded) for a free slot.
final class SlotLimiter: @unchecked Sendable {
    let condition = NSCondition()
    var active: [SocketAddress: Int] = [:]
    let limit: Int

    init(limit: Int) { self.limit = max(1, limit) }

    func acquire(_ key: SocketAddress, wait: Duration) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(Double(wait.components.seconds))
        while active[key, default: 0] >= limit {
            if !condition.wait(until: deadline) { return false }
        }
        active[key, default: 0] += 1
        return true
    }

    func release(_ key: SocketAddress) {
        condition.lock()
        active[key, default: 1] -= 1
        if active[key] == 0 { active[key] = nil }
        condition.broadcast()
        condition.unlock()
    }
}
