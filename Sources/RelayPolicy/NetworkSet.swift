import MailModel

/// A set of IP networks as sorted, merged ranges: membership is a binary search (microseconds for
/// 10,000 networks). IPv4 and IPv4-mapped IPv6 are looked up as IPv4.
public struct NetworkSet: Sendable, Hashable {
    var v4: [ClosedRange<UInt32>] = []
    var v6: [ClosedRange<UInt128>] = []
    public private(set) var count = 0

    public init(_ networks: [IPNetwork] = []) {
        var r4: [ClosedRange<UInt32>] = [], r6: [ClosedRange<UInt128>] = []
        for n in networks {
            switch n.address {
            case .v4(let a):
                let size: UInt32 = n.prefix == 0 ? UInt32.max : (UInt32(1) << UInt32(32 - n.prefix)) - 1
                r4.append(a...(a | size))
            case .v6(let hi, let lo):
                let a = UInt128(hi) << 64 | UInt128(lo)
                let size: UInt128 = n.prefix == 0 ? UInt128.max : (UInt128(1) << UInt128(128 - n.prefix)) - 1
                r6.append(a...(a | size))
            }
        }
        v4 = Self.merge(r4)
        v6 = Self.merge(r6)
        count = networks.count
    }

    static func merge<T: FixedWidthInteger>(_ ranges: [ClosedRange<T>]) -> [ClosedRange<T>] {
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var out: [ClosedRange<T>] = []
        for r in sorted {
            if let last = out.last, last.upperBound == T.max || r.lowerBound <= last.upperBound + 1 {
                out[out.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    public func contains(_ address: IPAddress) -> Bool {
        switch address.unmapped {
        case .v4(let a): return Self.search(v4, a)
        case .v6(let hi, let lo): return Self.search(v6, UInt128(hi) << 64 | UInt128(lo))
        }
    }

    static func search<T: Comparable>(_ ranges: [ClosedRange<T>], _ x: T) -> Bool {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < x { lo = mid + 1 } else { hi = mid }
        }
        return lo < ranges.count && ranges[lo].contains(x)
    }

    /// True when the set holds every IPv4 or every IPv6 address (an open relay if granted).
    public var coversEverything: Bool {
        v4.first == 0...UInt32.max || v6.first == 0...UInt128.max
    }
}
