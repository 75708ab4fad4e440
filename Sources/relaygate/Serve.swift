import Config
import Foundation
import Gateway
import Glibc
import MailModel
import Queue
import Transport

enum Serve {
    static func run(_ args: [String]) {
        let o = Options(args, command: "serve", valued: ["config", "listen", "spool", "log-format"], flags: ["debug"])
        var (config, warnings) = LoadConfiguration.loadWithWarnings(path: o.last("config"))
        if let listens = o.values["listen"] {
            var addresses: [ListenAddress] = []
            for l in listens {
                guard let a = ListenAddress(l) else {
                    RelaygateCommand.usageError("'\(l)' is not ADDR:PORT (e.g. 127.0.0.1:2525 or [::1]:2525)", command: "serve")
                }
                addresses.append(a)
            }
            config.listeners = [Listener(name: "default", addresses: addresses)]
        }
        if let spool = o.last("spool") { config.spool = spool }
        let formatName = o.last("log-format") ?? "text"
        guard let format = MailLog.Format(rawValue: formatName) else {
            RelaygateCommand.usageError("--log-format is text or json, not '\(formatName)'", command: "serve")
        }
        guard !config.listeners.isEmpty else { RelaygateCommand.fail("no listener configured") }

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
        guard let engine = config.relayEngine(hostname: hostname, localAddresses: InterfaceAddresses.all()) else {
            RelaygateCommand.fail("no relay rules")
        }
        let context = ServerContext(hostname: hostname, configuration: config, engine: engine,
                                    spool: spool, writers: writers, log: log)
        let server = GatewayServer(context: context, loopCount: ProcessInfo.processInfo.activeProcessorCount)
        do {
            try server.start()
        } catch {
            RelaygateCommand.fail("\(error)")
        }
        log.event("started", [("version", RelaygateCommand.version), ("hostname", hostname), ("pid", "\(getpid())")])

        while true {
            var sig: Int32 = 0
            guard sigwait(&mask, &sig) == 0 else { continue }
            switch sig {
            case SIGHUP:
                log.event("reload", [("status", "ignored"), ("reason", "configuration reload arrives with the relay-policy language")])
            default:
                server.shutdown(grace: config.limits.shutdownTimeout)
                exit(0)
            }
        }
    }

    static func systemHostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        let name = String(cString: buf)
        return DomainName(name) != nil ? name : "localhost"
    }
}
