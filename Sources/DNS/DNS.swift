import MailModel

/// DNS: the one resolver protocol delivery asks (MX, A/AAAA, TLSA), and its real implementation on
/// libunbound (cache, CNAMEs, DNSSEC state per answer). Lookups block; they run on delivery threads,
/// never on an event loop or the cooperative pool.
public enum DNS {}

/// An answer, with the DNSSEC state that DANE needs.
public enum DNSResult<T: Sendable & Hashable>: Sendable, Hashable {
    /// Records (CNAMEs already followed).
    case records([T], secure: Bool)
    /// The name exists but has no records of this type (NODATA).
    case noRecords(secure: Bool)
    /// The name does not exist: permanent.
    case nxdomain
    /// SERVFAIL, timeout, a bogus signature: temporary.
    case failure(String)
}

public struct MXRecord: Sendable, Hashable {
    public var preference: Int
    /// Lowercased, without the trailing dot; "" for the Null MX's "." (RFC 7505).
    public var exchange: String
    public init(preference: Int, exchange: String) { self.preference = preference; self.exchange = exchange }
}

public struct TLSARecord: Sendable, Hashable {
    public var usage: UInt8, selector: UInt8, matchingType: UInt8
    public var data: [UInt8]
    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage; self.selector = selector; self.matchingType = matchingType; self.data = data
    }
}

public protocol Resolver: Sendable {
    func mx(_ domain: String) -> DNSResult<MXRecord>
    /// A and AAAA, in the configured order.
    func addresses(_ host: String) -> DNSResult<IPAddress>
    func tlsa(_ name: String) -> DNSResult<TLSARecord>
}
