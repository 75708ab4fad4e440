import MailModel
import PolicyLanguage

/// Config: the meaning of the configuration language (PolicyLanguage gives its syntax). Pure: it turns
/// directives into a typed `Configuration` and diagnostics; the one I/O adapter, `FileSourceReader`,
/// only reads the files the parser asks for.
///
/// This is the first part of the language: the server's listeners, limits, protocol switches and
/// spool. Relay rules, TLS, authentication and routes join it as further top-level directives.
public struct Configuration: Sendable {
    public var hostname: String?
    public var spool: String
    public var listeners: [Listener]
    public var limits: Limits
    public var smtp: SMTPOptions
    public var queue: QueueOptions
    public var lists = NamedLists()
    public var tls = TLSOptions()
    public var auth = AuthOptions()
    public var delivery = DeliveryOptions()
    /// The relay rules; a file without a `rules` block gets the embedded default's.
    public var relay: RelayRules?

    public init(hostname: String? = nil, spool: String = Configuration.defaultSpool, listeners: [Listener] = [],
                limits: Limits = Limits(), smtp: SMTPOptions = SMTPOptions(), queue: QueueOptions = QueueOptions()) {
        self.hostname = hostname; self.spool = spool; self.listeners = listeners
        self.limits = limits; self.smtp = smtp; self.queue = queue
    }

    public static let defaultSpool = "/var/spool/relaygate"

    /// The backends a listener's AUTH asks, in order (its own, or the global default); empty: no AUTH.
    public func authBackends(of listener: Listener) -> [String] {
        listener.authBackends ?? auth.defaultBackends
    }

    /// The TLS mode a listener runs with.
    public func tlsMode(of listener: Listener) -> TLSMode {
        listener.tls ?? (tls.certificates.isEmpty ? .none : .may)
    }
}

public struct Listener: Sendable, Hashable {
    public var name: String
    public var addresses: [ListenAddress]
    /// nil: `may` when the configuration has a certificate, `none` otherwise.
    public var tls: TLSMode?
    /// Named CAs (`ca NAME file ...`) a client certificate is checked against; non-empty asks for one.
    public var clientCertificateAuthorities: [String] = []
    /// Authentication backends tried in order; nil: those of `auth { backends ... }`; empty
    /// (`auth none`): no AUTH on this listener.
    public var authBackends: [String]?
    /// Offer AUTH before TLS too (never by default).
    public var authWithoutTLS = false
    public init(name: String, addresses: [ListenAddress], tls: TLSMode? = nil) {
        self.name = name; self.addresses = addresses; self.tls = tls
    }
}

/// A listener's TLS (RFC 3207, RFC 8314).
public enum TLSMode: String, Sendable, Hashable, CaseIterable {
    /// No STARTTLS offered.
    case none
    /// STARTTLS offered; plaintext allowed.
    case may
    /// STARTTLS offered; MAIL before it gets 530 5.7.0.
    case required
    /// TLS from the first byte (port 465).
    case implicit
}

/// The server's certificates: the first is the default, the others are chosen by SNI.
public struct TLSOptions: Sendable, Hashable {
    public struct Certificate: Sendable, Hashable {
        public var chain: String
        public var key: String
        /// Where the configuration names it (nil: from the command line).
        public var location: SourceLocation?
        public init(chain: String, key: String, location: SourceLocation? = nil) {
            self.chain = chain; self.key = key; self.location = location
        }
    }
    public var certificates: [Certificate] = []
    public init() {}
}

/// `127.0.0.1:2525`, `[::1]:2525`, `0.0.0.0:25`, `[::]:25`. Port 0 asks the system for a free port.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: IPAddress
    public var port: UInt16
    public init(host: IPAddress, port: UInt16) { self.host = host; self.port = port }

    public init?(_ text: String) {
        let hostPart: Substring, portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
            guard let h = IPAddress(hostPart), !h.isV4 else { return nil }
            host = h
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            guard let h = IPAddress(hostPart), h.isV4 else { return nil }
            host = h
        }
        guard !portPart.isEmpty, portPart.allSatisfy(\.isNumber), let p = UInt16(portPart) else { return nil }
        port = p
    }

    public var description: String { host.isV4 ? "\(host):\(port)" : "[\(host)]:\(port)" }
}

public struct Limits: Sendable, Hashable {
    public var messageSize = 25 * 1024 * 1024
    public var recipients = 100
    public var errors = 10
    public var commandLine = 512
    public var textLine = 1000
    public var sessions = 1000
    public var sessionsPerClient = 50
    public var commandTimeout: Duration = .seconds(300)
    public var dataTimeout: Duration = .seconds(600)
    public var receivedHeaders = 30
    public var shutdownTimeout: Duration = .seconds(30)
    public init() {}
}

public struct SMTPOptions: Sendable, Hashable {
    /// Wait this long before the greeting; a client that talks first gets 554 (RFC 5321 3.1 / 4.3.1).
    public var greetingDelay: Duration = .zero
    /// Clients whose bare LF is turned into CRLF instead of refused.
    public var normalizeBareLF: [IPNetwork] = []
    public init() {}
}

public struct QueueOptions: Sendable, Hashable {
    /// Threads that write and fsync queue files, so that many sessions' fsyncs overlap.
    public var writers = 8
    public init() {}
}
