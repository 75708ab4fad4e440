import Glibc

/// An IPv4 or IPv6 address. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is kept as written but compares and
/// matches as IPv4 through `unmapped`.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt64, UInt64)  // high, low

    /// Parses dotted IPv4 or any RFC 4291 text form of IPv6 (no brackets, no zone).
    public init?(_ text: Substring) { self.init(String(text)) }

    public init?(_ text: String) {
        if text.isEmpty || text.utf8.count > 45 { return nil }
        var a4 = in_addr()
        if text.utf8.allSatisfy({ $0 == UInt8(ascii: ".") || ($0 >= 48 && $0 <= 57) }) {
            // inet_pton accepts only the strict dotted-quad form, which is what RFC 5321 wants.
            guard inet_pton(AF_INET, text, &a4) == 1 else { return nil }
            self = .v4(UInt32(bigEndian: a4.s_addr))
            return
        }
        var a6 = in6_addr()
        guard inet_pton(AF_INET6, text, &a6) == 1 else { return nil }
        self = IPAddress(in6: a6)
    }

    public init(in6 a: in6_addr) {
        var hi: UInt64 = 0, lo: UInt64 = 0
        withUnsafeBytes(of: a) { raw in
            for i in 0..<8 { hi = hi << 8 | UInt64(raw[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(raw[i]) }
        }
        self = .v6(hi, lo)
    }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6 (as in DNS A and AAAA records).
    public init?(bytes b: [UInt8]) {
        switch b.count {
        case 4: self = .v4(b.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            self = .v6(b[0..<8].reduce(0) { $0 << 8 | UInt64($1) }, b[8..<16].reduce(0) { $0 << 8 | UInt64($1) })
        default: return nil
        }
    }

    /// IPv4-mapped IPv6 as IPv4; everything else unchanged.
    public var unmapped: IPAddress {
        if case .v6(let hi, let lo) = self, hi == 0, lo >> 32 == 0xffff {
            return .v4(UInt32(truncatingIfNeeded: lo))
        }
        return self
    }

    public var isV4: Bool { if case .v4 = self { return true } else { return false } }

    public var description: String {
        switch self {
        case .v4(let v):
            return "\(v >> 24).\(v >> 16 & 0xff).\(v >> 8 & 0xff).\(v & 0xff)"
        case .v6(let hi, let lo):
            var a = in6_addr()
            withUnsafeMutableBytes(of: &a) { raw in
                for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i))) }
                for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i))) }
            }
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count)) != nil else { return "::" }
            return String(cString: buf)
        }
    }
}

/// A CIDR network. Matching compares IPv4-mapped IPv6 addresses as IPv4, on both sides.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefix: Int

    public init?(address: IPAddress, prefix: Int) {
        let a = address.unmapped
        let mappedShift = (address.isV4 || !a.isV4) ? 0 : 96
        let p = prefix - mappedShift
        switch a {
        case .v4: guard (0...32).contains(p) else { return nil }
        case .v6: guard (0...128).contains(p) else { return nil }
        }
        self.address = IPNetwork.masked(a, p)
        self.prefix = p
    }

    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a host route).
    public init?(_ text: String) {
        if let slash = text.firstIndex(of: "/") {
            guard let addr = IPAddress(text[..<slash]),
                  let p = Int(text[text.index(after: slash)...]),
                  text[text.index(after: slash)...].allSatisfy(\.isNumber) else { return nil }
            self.init(address: addr, prefix: p)
        } else {
            guard let addr = IPAddress(text) else { return nil }
            self.init(address: addr, prefix: addr.unmapped.isV4 ? 32 + (addr.isV4 ? 0 : 96) : 128)
        }
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        let c = candidate.unmapped
        switch (address, c) {
        case (.v4, .v4), (.v6, .v6): return IPNetwork.masked(c, prefix) == address
        default: return false
        }
    }

    static func masked(_ a: IPAddress, _ p: Int) -> IPAddress {
        switch a {
        case .v4(let v):
            return .v4(p == 0 ? 0 : v & (UInt32.max << UInt32(32 - p)))
        case .v6(let hi, let lo):
            if p == 0 { return .v6(0, 0) }
            if p <= 64 { return .v6(hi & (UInt64.max << UInt64(64 - p)), 0) }
            return .v6(hi, p == 128 ? lo : lo & (UInt64.max << UInt64(128 - p)))
        }
    }

    public var description: String { "\(address)/\(prefix)" }
}
