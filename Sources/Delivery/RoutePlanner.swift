import DNS
import MailModel
import SMTPProtocol

/// One host to try, with its addresses in the order to try them.
public struct MXHost: Sendable, Hashable {
    public var name: String
    public var preference: Int
    public var addresses: [IPAddress]
    public var port: Int
    /// The MX answer and the address answers were DNSSEC-secure: DANE applies (RFC 7672 2.2).
    public var secure: Bool
    public init(name: String, preference: Int, addresses: [IPAddress], port: Int = 25, secure: Bool = false) {
        self.name = name; self.preference = preference; self.addresses = addresses; self.port = port; self.secure = secure
    }
}

/// Where a domain's mail goes, or why it goes nowhere now.
public enum RoutePlan: Sendable, Hashable {
    case hosts([MXHost])
    /// Permanent: bounce with this status and text.
    case bounce(EnhancedStatus, String)
    /// Temporary: try again later.
    case deferred(EnhancedStatus, String)
}

/// What the planner did, for `relaygate route` and the log.
public struct RouteTrace: Sendable, Hashable {
    public var mx: [MXRecord] = []
    public var implicit = false
    /// Records dropped, each with why.
    public var dropped: [(record: MXRecord, reason: String)] = []
    public var notes: [String] = []
    public static func == (a: RouteTrace, b: RouteTrace) -> Bool {
        a.mx == b.mx && a.implicit == b.implicit && a.notes == b.notes
            && a.dropped.map(\.record) == b.dropped.map(\.record) && a.dropped.map(\.reason) == b.dropped.map(\.reason)
    }
    public func hash(into h: inout Hasher) { h.combine(mx); h.combine(notes) }
}

/// RFC 5321 5.1 and RFC 7505, with the backup-MX rule. Pure: DNS comes in as a `Resolver`.
public struct RoutePlanner: Sendable {
    /// The names this host answers to (its hostname, `local-names`, configured MX names).
    public var localNames: Set<String>
    /// Its own interface addresses.
    public var localAddresses: Set<IPAddress>
    public var port: Int

    public init(localNames: Set<String>, localAddresses: Set<IPAddress>, port: Int = 25) {
        self.localNames = Set(localNames.map { $0.lowercased() })
        self.localAddresses = Set(localAddresses.map(\.unmapped))
        self.port = port
    }

    /// The plan for mail to `domain`.
    ///
    /// - MX records sorted by preference, equal preferences shuffled (`shuffle`, injectable for tests).
    /// - No MX at all: the domain's own A/AAAA as an implicit MX of preference 0.
    /// - A Null MX (one record, preference 0, exchange "."): bounce 5.1.10.
    /// - NXDOMAIN: bounce 5.1.2. SERVFAIL, timeouts: defer 4.4.3.
    /// - Backup MX: if this host is among the records (by name or by address), it and every record of
    ///   equal or worse preference are dropped. Nothing left: if it was the best, a loop (bounce
    ///   5.4.6); if better records existed but none is usable, the backup lost its primary (defer 4.4.4).
    public func plan(_ domain: String, resolver: any Resolver,
                     shuffle: ([MXHost]) -> [MXHost] = { $0.shuffled() }) -> (RoutePlan, RouteTrace) {
        var trace = RouteTrace()
        let d = domain.lowercased()
        var records: [MXRecord]
        var mxSecure = false
        switch resolver.mx(d) {
        case .nxdomain:
            return (.bounce(EnhancedStatus(5, 1, 2), "domain \(d) does not exist (NXDOMAIN)"), trace)
        case .failure(let why):
            return (.deferred(EnhancedStatus(4, 4, 3), "MX lookup for \(d) failed: \(why)"), trace)
        case .noRecords(let secure):
            mxSecure = secure
            trace.implicit = true
            records = [MXRecord(preference: 0, exchange: d)]
        case .records(let rs, let secure):
            mxSecure = secure
            records = rs
            trace.mx = rs
            if rs.contains(where: { $0.exchange.isEmpty || $0.exchange == "." }) {
                // RFC 7505 3: a Null MX means the domain accepts no mail.
                return (.bounce(EnhancedStatus(5, 1, 10), "domain \(d) accepts no mail (Null MX)"), trace)
            }
        }
        records.sort { $0.preference < $1.preference }

        // Resolve every host once: the backup-MX rule needs the addresses too.
        var hosts: [MXHost] = []
        var failures: [String] = []
        var ownPreference: Int?
        for r in records {
            let result = resolver.addresses(r.exchange)
            var addrs: [IPAddress] = []
            var addrSecure = false
            switch result {
            case .records(let a, let s): addrs = a; addrSecure = s
            case .noRecords: trace.dropped.append((r, "no A or AAAA records")); continue
            case .nxdomain: trace.dropped.append((r, "host does not exist")); continue
            case .failure(let why): failures.append(why); trace.dropped.append((r, "address lookup failed: \(why)")); continue
            }
            let isSelf = localNames.contains(r.exchange) || addrs.contains { localAddresses.contains($0.unmapped) }
            if isSelf {
                ownPreference = min(ownPreference ?? r.preference, r.preference)
            }
            hosts.append(MXHost(name: r.exchange, preference: r.preference, addresses: addrs, port: port,
                                secure: mxSecure && addrSecure))
        }
        if let own = ownPreference {
            for h in hosts where h.preference >= own {
                let rec = MXRecord(preference: h.preference, exchange: h.name)
                trace.dropped.append((rec, "preference \(h.preference) is not better than this host's own (\(own))"))
            }
            hosts.removeAll { $0.preference >= own }
            if hosts.isEmpty {
                let better = records.contains { $0.preference < own }
                if !better {
                    return (.bounce(EnhancedStatus(5, 4, 6), "mail for \(d) loops back to this host (it is the best MX)"), trace)
                }
                return (.deferred(EnhancedStatus(4, 4, 4), "backup MX for \(d): no usable primary (\(failures.first ?? "its addresses do not resolve"))"), trace)
            }
        }
        if hosts.isEmpty {
            if trace.implicit {
                return (failures.isEmpty
                        ? .bounce(EnhancedStatus(5, 1, 2), "domain \(d) has no MX and no address records")
                        : .deferred(EnhancedStatus(4, 4, 3), "address lookup for \(d) failed: \(failures[0])"), trace)
            }
            if !failures.isEmpty { return (.deferred(EnhancedStatus(4, 4, 3), "no MX host of \(d) resolves: \(failures[0])"), trace) }
            return (.bounce(EnhancedStatus(5, 4, 4), "no MX host of \(d) has an address"), trace)
        }
        // Equal preferences in random order (RFC 5321 5.1), groups in preference order.
        var ordered: [MXHost] = []
        var i = 0
        while i < hosts.count {
            var j = i
            while j < hosts.count && hosts[j].preference == hosts[i].preference { j += 1 }
            ordered += shuffle(Array(hosts[i..<j]))
            i = j
        }
        return (.hosts(ordered), trace)
    }

    /// `user@[192.0.2.25]`: straight to that address (the policy decided whether it relays at all).
    public func plan(literal address: IPAddress) -> RoutePlan {
        if localAddresses.contains(address.unmapped) {
            return .bounce(EnhancedStatus(5, 4, 6), "mail for [\(address)] loops back to this host")
        }
        return .hosts([MXHost(name: "[\(address)]", preference: 0, addresses: [address], port: port)])
    }
}
