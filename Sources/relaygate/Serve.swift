import Config
import Foundation
import PolicyLanguage
import Delivery
import DNS
import Gateway
import Glibc
import MailModel
import Queue
import Transport

enum Serve {
    static func run(_ args: [String]) {
        let o = Options(args, command: "serve", valued: ["config", "listen", "spool", "log-format", "tls-cert", "tls-key"],
                        flags: ["debug"])
        if (o.last("tls-cert") == nil) != (o.last("tls-key") == nil) {
            RelaygateCommand.usageError("--tls-cert and --tls-key go together", command: "serve")
        }
        let (loaded, diagnostics) = configuration(o)
        if diagnostics.contains(where: { $0.severity == .error }) {
            for d in diagnostics { Console.err("\(d)\n") }
            RelaygateCommand.fail("configuration has errors; nothing started")
        }
        let config = loaded
        let warnings = diagnostics
        let formatName = o.last("log-format") ?? "text"
        guard let format = MailLog.Format(rawValue: formatName) else {
            RelaygateCommand.usageError("--log-format is text or json, not '\(formatName)'", command: "serve")
        }
        guard !config.listeners.isEmpty else { RelaygateCommand.fail("no listener configured") }
        // Certificates, keys and CA files first, as `check` reads them: nothing is touched before they load.
        let tlsProblems = Check.tlsProblems(config)
        if !tlsProblems.isEmpty {
            for d in tlsProblems { Console.err("\(d)\n") }
            RelaygateCommand.fail("TLS: configuration has errors; nothing started")
        }

        // Before any thread exists: SIGPIPE ignored (a write to a gone client is an error, not death),
        // and the stop/reload signals blocked everywhere so that only sigwait below sees them.
        signal(SIGPIPE, SIG_IGN)
        var mask = sigset_t()
        sigemptyset(&mask)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&mask, s) }
        pthread_sigmask(SIG_BLOCK, &mask, nil)

        let log = MailLog(format: format, debug: o.flags.contains("debug"))
        for w in warnings { log.warning("config", [("location", w.location.description), ("message", w.message)]) }
        let spool: SpoolDirectory
        do {
            try FileManager.default.createDirectory(atPath: config.spool, withIntermediateDirectories: true)
            spool = try SpoolDirectory(root: config.spool)
        } catch {
            RelaygateCommand.fail("spool \(config.spool): \(error)")
        }
        let report = spool.recover()
        log.event("recovered", [("spool", config.spool), ("queued", "\(report.queued)"),
                                ("removed_tmp", "\(report.removedTemporary)"), ("quarantined", "\(report.quarantined.count)")])
        for q in report.quarantined { log.warning("quarantined", [("file", q)]) }

        let hostname = config.hostname ?? systemHostname()
        let writers = BlockingPool(threads: config.queue.writers, name: "relaygate-writer")
        // The throttle's settings are read at start; a reload keeps the counts (and the settings).
        let auth = AuthRuntime(throttle: config.auth.throttle)
        let interfaces = InterfaceAddresses.all()
        guard let engine = config.relayEngine(hostname: hostname, localAddresses: interfaces) else {
            RelaygateCommand.fail("no relay rules")
        }
        let runner = config.delivery.enabled ? makeRunner(config, hostname: hostname, spool: spool, interfaces: interfaces, log: log)
            : nil
        let queued: @Sendable (QueueID) -> Void = { id in runner?.enqueued(id.text) }
        var loopCheck: (@Sendable (String) -> Bool)?
        if let r = runner {
            loopCheck = { domain in r.wouldLoop(domain) }
        }
        let context: ServerContext
        do {
            context = try ServerContext(hostname: hostname, configuration: config, engine: engine,
                                        spool: spool, writers: writers, auth: auth, log: log, queued: queued,
                                        loopCheck: loopCheck)
        } catch {
            RelaygateCommand.fail("TLS: \(error)")
        }
        let server = GatewayServer(context: context, loopCount: ProcessInfo.processInfo.activeProcessorCount)
        do {
            try server.start()
        } catch {
            RelaygateCommand.fail("\(error)")
        }
        runner?.start()
        log.event("started", [("version", RelaygateCommand.version), ("hostname", hostname), ("pid", "\(getpid())"),
                              ("delivery", runner == nil ? "off" : "on")])

        while true {
            var sig: Int32 = 0
            guard sigwait(&mask, &sig) == 0 else { continue }
            switch sig {
            case SIGHUP:
                reload(o, running: config, server: server, spool: spool, writers: writers, auth: auth, log: log,
                       interfaces: interfaces, queued: queued, loopCheck: loopCheck)
            default:
                server.shutdown(grace: config.limits.shutdownTimeout)
                runner?.stop(waitingUpTo: config.limits.shutdownTimeout)
                // _exit, not exit: the loop and pool threads may still be finishing (a last TLS session
                // freed, a close_notify read), and exit's atexit handlers (OpenSSL's cleanup among them)
                // would free global state under them. Everything durable is already on disk, and the
                // log is written unbuffered.
                _exit(0)
            }
        }
    }

    /// The queue runner and its parts, from the configuration's delivery settings.
    static func makeRunner(_ config: Configuration, hostname: String, spool: SpoolDirectory, interfaces: Set<IPAddress>,
                           log: MailLog) -> QueueRunner {
        let d = config.delivery
        let resolver: UnboundResolver
        do {
            resolver = try UnboundResolver(settings: d.dns)
        } catch {
            RelaygateCommand.fail("DNS: \(error)")
        }
        let planner = config.routePlanner(hostname: hostname, localAddresses: interfaces)
        var cs = d.courier
        if cs.heloName.isEmpty { cs.heloName = hostname }
        let courier: Courier
        do {
            courier = try Courier(settings: cs, resolver: resolver)
        } catch {
            RelaygateCommand.fail("TLS: \(error)")
        }
        var rs = d.runner
        rs.hostname = hostname
        return QueueRunner(settings: rs, spool: spool, resolver: resolver, planner: planner, courier: courier, log: log)
    }

    /// The configuration file (or the embedded default) with the command line's overrides applied.
    static func configuration(_ o: Options) -> (Configuration, [Diagnostic]) {
        var (config, diagnostics) = o.last("config").map { ConfigLoader.load(path: $0) }
            ?? ConfigLoader.load(text: DefaultConfiguration.text, file: DefaultConfiguration.fileName)
        if let listens = o.values["listen"] { config.listeners = ListenOverride.apply(listens, to: config.listeners) }
        if let spool = o.last("spool") { config.spool = spool }
        // A certificate from the command line serves where the configuration names none.
        if let cert = o.last("tls-cert"), let key = o.last("tls-key"), config.tls.certificates.isEmpty {
            config.tls.certificates = [.init(chain: cert, key: key)]
        }
        return (config, diagnostics)
    }

    /// SIGHUP: a valid configuration replaces the old one for new sessions (sessions in flight keep
    /// theirs); an invalid one is refused with its errors logged, and the old one stays. Listeners and
    /// the spool stay as started: changing them needs a restart, and the log says so.
    static func reload(_ o: Options, running: Configuration, server: GatewayServer, spool: SpoolDirectory,
                       writers: BlockingPool, auth: AuthRuntime, log: MailLog, interfaces: Set<IPAddress>,
                       queued: @escaping @Sendable (QueueID) -> Void, loopCheck: (@Sendable (String) -> Bool)?) {
        var (config, diagnostics) = configuration(o)
        let errors = diagnostics.filter { $0.severity == .error }
        guard errors.isEmpty else {
            for d in errors { log.error("config", [("location", d.location.description), ("message", d.message)]) }
            log.warning("reload", [("status", "refused"), ("errors", "\(errors.count)"), ("kept", "previous configuration")])
            return
        }
        for w in diagnostics { log.warning("config", [("location", w.location.description), ("message", w.message)]) }
        if config.listeners != running.listeners {
            log.warning("reload", [("note", "listener changes need a restart; listeners kept as started")])
            config.listeners = running.listeners
        }
        if config.spool != running.spool {
            log.warning("reload", [("note", "spool changes need a restart; spool kept as started")])
            config.spool = running.spool
        }
        let hostname = config.hostname ?? systemHostname()
        guard let engine = config.relayEngine(hostname: hostname, localAddresses: interfaces) else { return }
        do {
            server.replaceContext(try ServerContext(hostname: hostname, configuration: config, engine: engine,
                                                    spool: spool, writers: writers, auth: auth, log: log,
                                                    queued: queued, loopCheck: loopCheck))
        } catch {
            log.error("config", [("message", "TLS: \(error)")])
            log.warning("reload", [("status", "refused"), ("errors", "1"), ("kept", "previous configuration")])
            return
        }
        log.event("reload", [("status", "ok"), ("rules", "\(engine.rules.count)"),
                             ("certificates", "\(config.tls.certificates.count)")])
    }

    static func systemHostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        let name = String(cString: buf)
        return DomainName(name) != nil ? name : "localhost"
    }
}

/// `--listen ADDR:PORT` replaces every listener with one named `default`; `--listen NAME=ADDR:PORT`
/// replaces the addresses of listener NAME (or adds it), so that rules naming listeners still apply.
enum ListenOverride {
    static func apply(_ values: [String], to listeners: [Listener]) -> [Listener] {
        var named: [(String, ListenAddress)] = []
        var bare: [ListenAddress] = []
        for v in values {
            var name: String? = nil
            var text = v
            if let eq = v.firstIndex(of: "=") {
                name = String(v[..<eq])
                text = String(v[v.index(after: eq)...])
            }
            guard let a = ListenAddress(text), name.map({ !$0.isEmpty }) ?? true else {
                RelaygateCommand.usageError("--listen '\(v)' is not [NAME=]ADDR:PORT (e.g. 127.0.0.1:2525 or submission=[::1]:587)",
                                            command: "serve")
            }
            if let name { named.append((name, a)) } else { bare.append(a) }
        }
        var result = bare.isEmpty ? listeners : [Listener(name: "default", addresses: bare)]
        var replaced = Set<String>()
        for (name, a) in named {
            if let i = result.firstIndex(where: { $0.name == name }) {
                if replaced.insert(name).inserted { result[i].addresses = [] }
                result[i].addresses.append(a)
            } else {
                result.append(Listener(name: name, addresses: [a]))
                replaced.insert(name)
            }
        }
        // Listeners the override did not name keep their addresses only when no bare --listen was given.
        return result.filter { !$0.addresses.isEmpty }
    }
}
