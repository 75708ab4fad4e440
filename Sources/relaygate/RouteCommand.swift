import Config
import Delivery
import DNS
import Foundation
import Glibc
import MailModel
import Transport

/// `relaygate route ADDRESS...`: where mail for each address would go, as `exim -bt` tells: the
/// rewriting, the route, the MX records with their addresses, what the backup-MX rule dropped and why.
enum RouteCommand {
    static func run(_ args: [String]) {
        let o = Options(args, command: "route", valued: ["config"], flags: ["json"], positional: 1000)
        guard !o.positional.isEmpty else { RelaygateCommand.usageError("route needs one or more addresses", command: "route") }
        let config = LoadConfiguration.load(path: o.last("config"))
        let hostname = config.hostname ?? Serve.systemHostname()
        let d = config.delivery
        let resolver: UnboundResolver
        do { resolver = try UnboundResolver(settings: d.dns) } catch { RelaygateCommand.fail("DNS: \(error)") }
        let planner = config.routePlanner(hostname: hostname, localAddresses: InterfaceAddresses.all())
        var all: [[String: Any]] = []
        var text = ""
        for address in o.positional {
            let rewritten = d.runner.routes.rewrite(address)
            let domain = QueueRunner.domain(of: rewritten)
            let (plan, trace, route) = planner.plan(domain: domain, routes: d.runner.routes, resolver: resolver, shuffle: { $0 })
            var obj: [String: Any] = ["address": address, "domain": domain]
            text += "<\(address)>\n"
            if rewritten != address {
                obj["rewritten"] = rewritten
                text += "  rewritten to <\(rewritten)>\n"
            }
            if let r = route {
                let target: String
                switch r.target {
                case .direct(let h, let p): target = "[\(h)]:\(p)"
                case .mx(let h): target = h
                }
                obj["route"] = ["to": target, "tls": r.tls.rawValue, "auth": r.user != nil]
                text += "  route: to \(target) tls \(r.tls.rawValue)\(r.user != nil ? " with AUTH" : "")\n"
            } else if domain.hasPrefix("[") {
                text += "  address literal: no DNS\n"
            } else {
                text += trace.implicit ? "  no MX records: implicit MX \(domain) (RFC 5321 5.1)\n" : "  MX records of \(domain):\n"
                obj["tls"] = d.runner.routes.defaultTLS.rawValue
            }
            for r in trace.mx.sorted(by: { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }) {
                text += "    \(r.preference) \(r.exchange.isEmpty ? "." : r.exchange)\n"
            }
            obj["mx"] = trace.mx.map { ["preference": $0.preference, "exchange": $0.exchange] }
            obj["dropped"] = trace.dropped.map { ["preference": $0.record.preference, "exchange": $0.record.exchange, "reason": $0.reason] }
            for x in trace.dropped { text += "  dropped \(x.record.preference) \(x.record.exchange): \(x.reason)\n" }
            for n in trace.notes { text += "  \(n)\n" }
            switch plan {
            case .hosts(let hosts):
                obj["result"] = "deliver"
                obj["hosts"] = hosts.map { ["name": $0.name, "preference": $0.preference, "port": $0.port,
                                            "addresses": $0.addresses.map(\.description)] }
                text += "  deliver to, in order:\n"
                for h in hosts {
                    text += "    \(h.preference) \(h.name) port \(h.port): \(h.addresses.map(\.description).joined(separator: " "))\n"
                }
            case .bounce(let st, let why):
                obj["result"] = "bounce"; obj["status"] = "\(st)"; obj["reason"] = why
                text += "  bounce \(st): \(why)\n"
            case .deferred(let st, let why):
                obj["result"] = "defer"; obj["status"] = "\(st)"; obj["reason"] = why
                text += "  defer \(st): \(why)\n"
            }
            all.append(obj)
        }
        if o.flags.contains("json") {
            let data = (try? JSONSerialization.data(withJSONObject: ["routes": all], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(text, terminator: "")
        }
        exit(0)
    }
}
