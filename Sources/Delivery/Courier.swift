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
        public var perDestination = 10
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
    }

    public let settings: Settings
    let opportunistic: TLSClientContext
    let verifying: TLSClientContext
    let daneContext: TLSClientContext
    /// For TLSA lookups (DANE); nil: no DANE.
    let resolver: (any Resolver)?
    let deadUntil = Mutex<[SocketAddress: UInt64]>([:])
    let slots: SlotLimiter

    public init(settings: Settings, resolver: (any Resolver)? = nil) throws(TLSError) {
        self.settings = settings
        self.resolver = resolver
        opportunistic = try TLSClientContext(verify: false)
        verifying = try TLSClientContext(verify: true)
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
                    let (outcome, info) = attempt(message, body: body, host: host.name, peer: peer, tls: level,
                                                  credentials: credentials, tlsa: tlsa)
                    switch outcome {
                    case .results(let results):
                        let relay = HostAttempt(host: host.name, address: peer.description, tls: info)
                        return Attempt(results: results, relay: relay, tried: tried + [relay])
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

    /// One connection to one address: the whole SMTP dialogue.
    func attempt(_ message: ClientSession.Message, body: ArraySlice<UInt8>, host: String, peer: SocketAddress,
                 tls: TLSLevel, credentials: (user: String, password: String)?,
                 tlsa: [TLSARecord] = []) -> (ClientSession.Outcome, String?) {
        guard slots.acquire(peer, wait: settings.replyTimeout) else {
            return (.hostFailed("too many connections to this destination", plaintextRetry: false), nil)
        }
        defer { slots.release(peer) }
        let conn: BlockingConnection
        do {
            conn = try BlockingConnection(to: peer, from: peer.ip.isV4 ? settings.sourceV4 : settings.sourceV6,
                                          timeout: settings.connectTimeout)
        } catch {
            deadUntil.withLock { $0[peer] = MonotonicClock.now() + settings.backoff.nanoseconds }
            return (.hostFailed("\(error)", plaintextRetry: false), nil)
        }
        let requirement: ClientSession.TLSRequirement = tls == .none ? .none : (tls == .may ? .may : .encrypt)
        var session = ClientSession(settings: .init(heloName: settings.heloName, tls: requirement, credentials: credentials),
                                    message: message)
        var parser = ReplyParser()
        var tlsSession: TLSSession?
        var tlsInfo: String?

        func send(_ bytes: [UInt8], timeout: Duration) throws(SocketError) {
            if let t = tlsSession {
                t.send(bytes)
                try conn.write(t.takeOutput(), timeout: timeout)
            } else {
                try conn.write(bytes, timeout: timeout)
            }
        }

        /// Reads until at least one reply is complete.
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

        /// The client handshake over the same socket.
        func handshake() throws(SocketError) -> String? {
            let made: TLSSession?
            switch tls {
            case .dane: made = daneContext.makeDANESession(serverName: host, records: tlsa.map { ($0.usage, $0.selector, $0.matchingType, $0.data) })
            case .verify: made = verifying.makeSession(serverName: host)
            default: made = opportunistic.makeSession(serverName: host)
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

        var pending: [ClientSession.Action] = []
        var waitingFinal = false
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
                        if let t = tlsSession { t.shutdown(); try? conn.write(t.takeOutput(), timeout: .seconds(1)) }
                        return (o, tlsInfo)
                    }
                }
                guard let rs = try replies(timeout: waitingFinal ? settings.dataTimeout : settings.replyTimeout) else {
                    return (session.connectionLost("connection closed by \(peer)"), tlsInfo)
                }
                waitingFinal = false
                for r in rs { pending += session.received(r) }
            }
            return (session.connectionLost("dialogue did not end"), tlsInfo)
        } catch {
            return (session.connectionLost("\(error)"), tlsInfo)
        }
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
