import Delivery
import DNS
import MailModel
import Queue

/// Delivery settings: `queue { }` timing and concurrency, `dns { }`, `outbound { }`, `route`s and
/// `rewrite`. The courier's and the runner's settings are kept as theirs, so each default lives in
/// one place; the names that depend on the hostname are filled in when the server starts.
public struct DeliveryOptions: Sendable {
    /// Timeouts, backoff, per-destination limit, connection reuse, CA file; `heloName` empty: the hostname.
    public var courier = Courier.Settings(heloName: "")
    /// Retry schedule, threads, recipients per transaction, scan interval, routes, delay warning.
    public var runner = QueueRunner.Settings(hostname: "")
    public var dns = UnboundResolver.Settings()
    /// The port MX hosts are reached on (25; tests use others).
    public var port = 25
    /// Names this host is known by in MX records, besides `hostname` and `local-names`.
    public var mxNames: [String] = []
    /// `false`: the server accepts and queues, and nothing is delivered (a hold-only gateway).
    public var enabled = true
    public init() {}
}

extension Configuration {
    /// The route planner `serve` and `relaygate route` share: this host known by its hostname, its
    /// `local-names`, its `mx-names` and its interface addresses (the backup-MX rule).
    public func routePlanner(hostname: String, localAddresses: Set<IPAddress>) -> RoutePlanner {
        let names = Set([hostname.lowercased()] + delivery.mxNames + (relay?.localNames.exactNames ?? []))
        return RoutePlanner(localNames: names, localAddresses: localAddresses, port: delivery.port)
    }
}
