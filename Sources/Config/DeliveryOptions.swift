import Delivery
import DNS
import Queue

/// Delivery settings: `queue { }` timing and concurrency, `dns { }`, `outbound { }`, `route`s and
/// `rewrite`.
public struct DeliveryOptions: Sendable {
    public var retry = RetrySchedule()
    public var threads = 20
    public var perDestination = 20
    public var recipientsPerTransaction = 50
    public var connectTimeout: Duration = .seconds(30)
    public var replyTimeout: Duration = .seconds(300)
    public var dataTimeout: Duration = .seconds(600)
    public var backoff: Duration = .seconds(60)
    public var scanInterval: Duration = .seconds(60)
    public var reuse = 20
    public var delayWarning: Duration?
    public var reuseIdle: Duration = .seconds(5)
    public var routes = RoutingTable()
    public var dns = UnboundResolver.Settings()
    /// The port MX hosts are reached on (25; tests use others).
    public var port = 25
    /// Names this host is known by in MX records, besides `hostname` and `local-names`.
    public var mxNames: [String] = []
    /// EHLO name for delivery; default the hostname.
    public var helo: String?
    /// CAs for `tls verify` instead of the system store.
    public var caFile: String?
    /// `false`: the server accepts and queues, and nothing is delivered (a hold-only gateway).
    public var enabled = true
    public init() {}
}
