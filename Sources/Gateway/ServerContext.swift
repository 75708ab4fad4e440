import Auth
import Config
import MailModel
import Queue
import RelayPolicy
import SMTPProtocol
import TLS
import Transport

/// Everything a session needs from the server, fixed for the session's lifetime (a reload makes a new
/// context for new sessions; sessions in flight keep theirs).
public final class ServerContext: Sendable {
    public let hostname: String
    public let configuration: Configuration
    /// The relay rules' engine: pure and fast, so it runs on the loop.
    public let engine: RelayEngine
    public let spool: SpoolDirectory
    public let writers: BlockingPool
    public let log: MailLog
    /// Per listener with TLS: its certificates and client-certificate CAs.
    public let tls: [String: TLSServerContext]
    /// Per listener with AUTH: its backends, in order.
    let authChains: [String: AuthChain]
    let auth: AuthRuntime
    /// Told about every message once it is on stable storage (the queue runner tries it at once).
    let queued: @Sendable (QueueID) -> Void
    /// True when mail for a domain would come back here (this host is its best MX). Blocking (DNS):
    /// called on the lookup pool. nil: no check (delivery off).
    let loopCheck: (@Sendable (String) -> Bool)?

    /// - Throws: `TLSError` when a certificate, key or CA file cannot be used (start-up fails, a reload
    ///   is refused).
    public init(hostname: String, configuration: Configuration, engine: RelayEngine, spool: SpoolDirectory,
                writers: BlockingPool, auth: AuthRuntime, log: MailLog,
                queued: @escaping @Sendable (QueueID) -> Void = { _ in },
                loopCheck: (@Sendable (String) -> Bool)? = nil) throws(TLSError) {
        self.loopCheck = loopCheck
        self.hostname = hostname; self.configuration = configuration; self.engine = engine
        self.spool = spool; self.writers = writers; self.log = log; self.auth = auth; self.queued = queued
        var authenticators: [String: any Authenticator] = [:]
        for (name, backend) in configuration.auth.backends {
            switch backend {
            case .pam(let s): authenticators[name] = PAMAuthenticator(name: name, settings: s)
            case .ldap(let s): authenticators[name] = LDAPAuthenticator(name: name, settings: s)
            }
        }
        var chains: [String: AuthChain] = [:]
        for l in configuration.listeners where !configuration.authBackends(of: l).isEmpty {
            chains[l.name] = AuthChain(configuration.authBackends(of: l).compactMap { authenticators[$0] })
        }
        self.authChains = chains
        var tls: [String: TLSServerContext] = [:]
        let files = configuration.tls.certificates.map { TLSServerContext.CertificateFiles(chain: $0.chain, key: $0.key) }
        for l in configuration.listeners where configuration.tlsMode(of: l) != .none {
            let authorities = l.clientCertificateAuthorities.compactMap { name in
                configuration.lists.authorities[name].map { (name: name, file: $0) }
            }
            tls[l.name] = try TLSServerContext(certificates: files, authorities: authorities,
                                               requestClientCertificate: !authorities.isEmpty)
        }
        self.tls = tls
    }

    func sessionSettings(for client: IPAddress, listener: String) -> SessionSettings {
        let l = configuration.limits
        var s = SessionSettings(
            hostname: hostname, maxMessageSize: l.messageSize, maxRecipients: l.recipients, maxErrors: l.errors,
            commandLineLimit: l.commandLine, textLineLimit: l.textLine, maxReceivedHeaders: l.receivedHeaders,
            normalizeBareLF: configuration.smtp.normalizeBareLF.contains { $0.contains(client) })
        let mode = configuration.listeners.first { $0.name == listener }.map { configuration.tlsMode(of: $0) } ?? .none
        s.offerSTARTTLS = (mode == .may || mode == .required) && tls[listener] != nil
        s.requireTLS = mode == .required || mode == .implicit
        s.implicitTLS = mode == .implicit
        if let l = configuration.listeners.first(where: { $0.name == listener }), authChains[listener] != nil {
            s.authMechanisms = configuration.auth.mechanisms
            s.authWithoutTLS = l.authWithoutTLS
        }
        s.senderBinding = configuration.auth.senderBinding
        return s
    }
}
