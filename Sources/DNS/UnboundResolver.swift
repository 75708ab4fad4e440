import CUnbound
import Glibc
import MailModel

/// The resolver on libunbound: the system's resolvers (resolv.conf) or a configured upstream such as
/// `127.0.0.1@5353`, a bounded timeout, and DNSSEC validation when a trust anchor file is given.
/// One `ub_ctx` is shared: libunbound is safe across threads for synchronous `ub_resolve`.
public final class UnboundResolver: Resolver, @unchecked Sendable {
    public struct Settings: Sendable, Hashable {
        /// `ADDR@PORT` (or `ADDR`) to forward every query to; nil: /etc/resolv.conf.
        public var upstream: String?
        /// DNSSEC trust anchors (a file of DS or DNSKEY records); nil: no validation.
        public var trustAnchorFile: String?
        public var preferIPv6 = false
        public init(upstream: String? = nil) { self.upstream = upstream }
    }

    let ctx: OpaquePointer
    public let settings: Settings

    public init(settings: Settings) throws(DNSError) {
        guard let c = ub_ctx_create() else { throw DNSError("ub_ctx_create failed") }
        ctx = c
        self.settings = settings
        // From a file, as some options take effect only there: an upstream on loopback allowed, and
        // names under test. and invalid. resolved upstream rather than refused locally (RFC 6761).
        var conf = "server:\n"
        conf += "    do-not-query-localhost: no\n"
        conf += "    local-zone: \"test.\" nodefault\n"
        conf += "    local-zone: \"invalid.\" nodefault\n"
        // One retry per query: a domain whose servers never answer fails in about a second instead
        // of 17, and does not get the forwarder marked down for every other domain.
        conf += "    outbound-msg-retry: 1\n"
        conf += "    infra-host-ttl: 1\n"
        if let anchors = settings.trustAnchorFile { conf += "    trust-anchor-file: \"\(anchors)\"\n" }
        var template = Array("/tmp/relaygate-unbound-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { ub_ctx_delete(c); throw DNSError("mkstemp: \(String(cString: strerror(errno)))") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        _ = conf.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let rc = ub_ctx_config(c, path)
        unlink(path)
        guard rc == 0 else { ub_ctx_delete(c); throw DNSError("unbound configuration: \(String(cString: ub_strerror(rc)))") }
        if let up = settings.upstream {
            let r = ub_ctx_set_fwd(c, up)
            guard r == 0 else { ub_ctx_delete(c); throw DNSError("upstream \(up): \(String(cString: ub_strerror(r)))") }
        } else {
            let r = ub_ctx_resolvconf(c, nil)
            guard r == 0 else { ub_ctx_delete(c); throw DNSError("resolv.conf: \(String(cString: ub_strerror(r)))") }
        }
    }

    deinit { ub_ctx_delete(ctx) }

    enum RRType: Int32 { case a = 1, mx = 15, aaaa = 28, tlsa = 52 }

    /// One query: the rdata of each record, or why there is none.
    func query(_ name: String, _ type: RRType) -> DNSResult<[UInt8]> {
        var result: UnsafeMutablePointer<ub_result>?
        let rc = ub_resolve(ctx, name, type.rawValue, 1, &result)
        guard rc == 0, let r = result else { return .failure("\(name)/\(type): \(String(cString: ub_strerror(rc)))") }
        defer { ub_resolve_free(r) }
        let res = r.pointee
        if res.bogus != 0 {
            return .failure("\(name)/\(type): DNSSEC bogus\(res.why_bogus.map { ": " + String(cString: $0) } ?? "")")
        }
        if res.nxdomain != 0 { return .nxdomain }
        // rcode 2 SERVFAIL, 5 REFUSED, ...: temporary.
        if res.rcode != 0 { return .failure("\(name)/\(type): rcode \(res.rcode)") }
        guard res.havedata != 0 else { return .noRecords(secure: res.secure != 0) }
        var out: [[UInt8]] = []
        var i: Int32 = 0
        while let d = res.data[Int(i)] {
            let n = Int(rg_ub_len(r, i))
            out.append(Array(UnsafeRawBufferPointer(start: d, count: n)))
            i += 1
        }
        return .records(out, secure: res.secure != 0)
    }

    public func mx(_ domain: String) -> DNSResult<MXRecord> {
        query(domain, .mx).compactMap { rdata in
            guard rdata.count >= 3 else { return nil }
            let pref = Int(rdata[0]) << 8 | Int(rdata[1])
            guard let name = Self.name(rdata, from: 2) else { return nil }
            return MXRecord(preference: pref, exchange: name)
        }
    }

    public func addresses(_ host: String) -> DNSResult<IPAddress> {
        let a = query(host, .a).compactMap { IPAddress(bytes: $0) }
        let aaaa = query(host, .aaaa).compactMap { IPAddress(bytes: $0) }
        return DNSResult.merge(settings.preferIPv6 ? [aaaa, a] : [a, aaaa])
    }

    public func tlsa(_ name: String) -> DNSResult<TLSARecord> {
        query(name, .tlsa).compactMap { d in
            d.count >= 4 ? TLSARecord(usage: d[0], selector: d[1], matchingType: d[2], data: Array(d[3...])) : nil
        }
    }

    /// An uncompressed wire-format name at `offset` (libunbound returns rdata names uncompressed).
    static func name(_ d: [UInt8], from offset: Int) -> String? {
        var labels: [String] = []
        var i = offset
        while i < d.count {
            let n = Int(d[i])
            if n == 0 { return labels.joined(separator: ".").lowercased() }
            guard n < 64, i + 1 + n <= d.count else { return nil }
            labels.append(String(decoding: d[(i + 1)...(i + n)], as: UTF8.self))
            i += 1 + n
        }
        return nil
    }
}

public struct DNSError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

extension DNSResult {
    func compactMap<U>(_ f: (T) -> U?) -> DNSResult<U> {
        switch self {
        case .records(let rs, let secure):
            let mapped = rs.compactMap(f)
            return mapped.isEmpty ? .failure("malformed records") : .records(mapped, secure: secure)
        case .noRecords(let s): return .noRecords(secure: s)
        case .nxdomain: return .nxdomain
        case .failure(let f): return .failure(f)
        }
    }

    /// A and AAAA together: records if either has some; NXDOMAIN only if both say so; a failure of
    /// one with records from the other still delivers.
    static func merge(_ parts: [DNSResult<T>]) -> DNSResult<T> {
        var all: [T] = []
        var secure = true
        var failure: String?
        var nx = 0
        for p in parts {
            switch p {
            case .records(let rs, let s): all += rs; secure = secure && s
            case .noRecords(let s): secure = secure && s
            case .nxdomain: nx += 1
            case .failure(let f): failure = f
            }
        }
        if !all.isEmpty { return .records(all, secure: secure) }
        if let failure { return .failure(failure) }
        if nx == parts.count { return .nxdomain }
        return .noRecords(secure: secure)
    }
}
