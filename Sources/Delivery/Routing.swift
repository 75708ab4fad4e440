import DNS
import MailModel

/// A configured route: a domain (or everything) to a fixed next hop, with its TLS and credentials.
public struct StaticRoute: Sendable, Hashable {
    public enum Target: Sendable, Hashable {
        /// `[host]:port`: that host's addresses, no MX lookup.
        case direct(host: String, port: Int)
        /// `host`: the MX records of `host`, as for any domain.
        case mx(String)
    }
    public var target: Target
    public var tls: Courier.TLSLevel
    public var user: String?
    public var password: String?
    public init(target: Target, tls: Courier.TLSLevel = .may, user: String? = nil, password: String? = nil) {
        self.target = target; self.tls = tls; self.user = user; self.password = password
    }
    public var credentials: (user: String, password: String)? { user.flatMap { u in password.map { (u, $0) } } }
}

/// Routes and rewriting, as configured. Pure.
public struct RoutingTable: Sendable, Hashable {
    public var byDomain: [String: StaticRoute] = [:]
    /// `route default`: everything else (an upstream smart host).
    public var fallback: StaticRoute?
    /// `old@domain` → `new@domain`, and `@domain` → `@other` (the local part kept).
    public var rewrites: [String: String] = [:]
    /// TLS for MX delivery without a route.
    public var defaultTLS: Courier.TLSLevel = .may
    public init() {}

    public func route(for domain: String) -> StaticRoute? {
        byDomain[domain.lowercased()] ?? fallback
    }

    /// The address to deliver to: a whole-address entry first, then the domain's.
    public func rewrite(_ address: String) -> String {
        if let to = rewrites[address.lowercased()] { return to }
        guard let at = address.lastIndex(of: "@") else { return address }
        let domain = address[address.index(after: at)...].lowercased()
        if let to = rewrites["@" + domain], to.hasPrefix("@") {
            return String(address[..<at]) + to
        }
        return address
    }
}

extension RoutePlanner {
    /// Where mail for `domain` goes, routes first: a static route's host (with or without MX), an
    /// address literal, or the domain's MX.
    public func plan(domain: String, routes: RoutingTable, resolver: any Resolver,
                     shuffle: ([MXHost]) -> [MXHost] = { $0.shuffled() }) -> (RoutePlan, RouteTrace, StaticRoute?) {
        if domain.hasPrefix("[") && domain.hasSuffix("]") {
            let inner = domain.dropFirst().dropLast()
            let text = inner.lowercased().hasPrefix("ipv6:") ? String(inner.dropFirst(5)) : String(inner)
            guard let ip = IPAddress(text) else {
                return (.bounce(.init(5, 1, 2), "address literal \(domain) is not routable"), RouteTrace(), nil)
            }
            return (plan(literal: ip), RouteTrace(), nil)
        }
        guard let r = routes.route(for: domain) else {
            let (p, t) = plan(domain, resolver: resolver, shuffle: shuffle)
            return (p, t, nil)
        }
        switch r.target {
        case .mx(let host):
            let (p, t) = plan(host, resolver: resolver, shuffle: shuffle)
            return (p, t, r)
        case .direct(let host, let port):
            var trace = RouteTrace()
            trace.notes.append("static route to [\(host)]:\(port), no MX lookup")
            if let ip = IPAddress(host) {
                return (.hosts([MXHost(name: host, preference: 0, addresses: [ip], port: port)]), trace, r)
            }
            switch resolver.addresses(host) {
            case .records(let a, _): return (.hosts([MXHost(name: host, preference: 0, addresses: a, port: port)]), trace, r)
            case .failure(let why): return (.deferred(.init(4, 4, 3), "route host \(host): \(why)"), trace, r)
            case .nxdomain, .noRecords: return (.deferred(.init(4, 4, 4), "route host \(host) has no address"), trace, r)
            }
        }
    }
}
