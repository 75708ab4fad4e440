import MailModel

/// Counts AUTH failures per client address and per user name over a sliding window; past a limit,
/// that address (or that user) is cooled off: further attempts get 421 4.7.0 until the period ends.
/// Pure: the caller passes the clock. Memory is bounded: at most `maxTracked` keys of each kind, the
/// oldest dropped first.
public struct FailureThrottle: Sendable {
    public struct Settings: Sendable, Hashable {
        public var clientLimit = 5
        public var userLimit = 10
        public var window: Duration = .seconds(15 * 60)
        public var coolOff: Duration = .seconds(15 * 60)
        public init() {}
    }

    struct Record: Sendable {
        var failures: [UInt64] = []
        var blockedUntil: UInt64 = 0
    }

    public let settings: Settings
    var clients: [IPAddress: Record] = [:]
    var users: [String: Record] = [:]
    static let maxTracked = 100_000

    public init(settings: Settings) { self.settings = settings }

    public func isBlocked(client: IPAddress, user: String?, now: UInt64) -> Bool {
        if let r = clients[client], r.blockedUntil > now { return true }
        if let u = user, let r = users[u.lowercased()], r.blockedUntil > now { return true }
        return false
    }

    /// Records a failure; true when it crossed a limit (the attempt is answered 421 and closed).
    public mutating func recordFailure(client: IPAddress, user: String, now: UInt64) -> Bool {
        let a = Self.add(&clients, client, limit: settings.clientLimit, now: now, settings)
        let b = Self.add(&users, user.lowercased(), limit: settings.userLimit, now: now, settings)
        return a || b
    }

    /// A success from a client forgets that client's failures (a user who mistyped once is not punished).
    public mutating func recordSuccess(client: IPAddress) { clients[client] = nil }

    static func add<K: Hashable>(_ table: inout [K: Record], _ key: K, limit: Int, now: UInt64, _ s: Settings) -> Bool {
        if table[key] == nil && table.count >= maxTracked { prune(&table, now: now, s) }
        var r = table[key] ?? Record()
        r.failures.removeAll { $0 + s.window.ns <= now }
        r.failures.append(now)
        var crossed = false
        if r.failures.count >= limit {
            r.blockedUntil = now + s.coolOff.ns
            r.failures.removeAll()
            crossed = true
        }
        table[key] = r
        return crossed
    }

    /// Drops expired records; if still full, the half with the oldest last failure.
    static func prune<K: Hashable>(_ table: inout [K: Record], now: UInt64, _ s: Settings) {
        table = table.filter { $0.value.blockedUntil > now || ($0.value.failures.last ?? 0) + s.window.ns > now }
        if table.count >= maxTracked {
            let keep = table.sorted { ($0.value.failures.last ?? $0.value.blockedUntil) > ($1.value.failures.last ?? $1.value.blockedUntil) }
                .prefix(maxTracked / 2)
            table = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }
}

extension Duration {
    var ns: UInt64 {
        let (s, atto) = components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
    }
}
